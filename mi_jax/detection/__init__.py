"""Hallucination detection built on trajectory statistics."""

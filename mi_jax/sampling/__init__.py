"""Reverse samplers (DDPM ancestral, DDIM) with streaming trajectory statistics."""

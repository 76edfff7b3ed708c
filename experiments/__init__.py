"""Thin absl entry points, one per paper figure group; the logic lives in mi_jax."""

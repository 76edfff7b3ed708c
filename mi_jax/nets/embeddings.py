"""Timestep embeddings."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def sinusoidal_embedding(t: jax.Array, dim: int) -> jax.Array:
    """ddpm-torch's embedding of raw integer timesteps: [sin(t f_k), cos(t f_k)], f_k = 10000^(-k/(dim/2-1)).

    t of shape (...) -> (..., dim).
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / (half - 1))
    t = jnp.asarray(t, jnp.float32)
    args = t[..., None] * freqs.reshape((1,) * t.ndim + (half,))
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, [(0, 0)] * (emb.ndim - 1) + [(0, 1)])
    return emb

"""A small time-conditioned UNet for images (channel-last, NHWC), as a Flax NNX module.

The layout of ddpm-torch's UNet (which the official repository vendors), scaled down: an input
conv; per resolution level `num_res_blocks` residual blocks (GroupNorm, SiLU, conv, + a projection
of the time embedding, GroupNorm, SiLU, conv) and a stride-2 conv down; a middle of two residual
blocks with optional self-attention between them (the "bottleneck" whose feature map
`bottleneck` returns); the mirror path up with skip connections and nearest-neighbour upsampling;
GroupNorm, SiLU and a zero-initialised output conv (the net starts by predicting eps = 0).
The time embedding is ddpm-torch's sinusoidal one followed by a 2-layer MLP (width 4 x channels);
a scalar t embeds once for the whole batch.

Mixed precision: `dtype=jnp.bfloat16` runs the convs and dense layers (the matmuls) in bf16 while
params, GroupNorm, the attention logits and softmax and the output conv stay float32, so a float32
checkpoint loads into either variant (the params pytree is the same).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mi_jax.nets.embeddings import sinusoidal_embedding


def _groups(channels: int, max_groups: int) -> int:
    g = min(max_groups, channels)
    while channels % g:
        g -= 1
    return g


def _norm(channels: int, groups: int, rngs: nnx.Rngs) -> nnx.GroupNorm:
    # float32 statistics whatever the matmul dtype: bf16 means/variances drift.
    return nnx.GroupNorm(channels, _groups(channels, groups), epsilon=1e-5, dtype=jnp.float32,
                         rngs=rngs)


class ResBlock(nnx.Module):
    def __init__(self, c_in: int, c_out: int, t_dim: int, groups: int, rngs: nnx.Rngs,
                 dtype=jnp.float32):
        self.norm1 = _norm(c_in, groups, rngs)
        self.conv1 = nnx.Conv(c_in, c_out, (3, 3), dtype=dtype, rngs=rngs)
        self.t_proj = nnx.Linear(t_dim, c_out, dtype=dtype, rngs=rngs)
        self.norm2 = _norm(c_out, groups, rngs)
        self.conv2 = nnx.Conv(c_out, c_out, (3, 3), kernel_init=nnx.initializers.zeros,
                              dtype=dtype, rngs=rngs)
        self.skip = nnx.Conv(c_in, c_out, (1, 1), dtype=dtype, rngs=rngs) if c_in != c_out else None

    def __call__(self, x, temb):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        t = self.t_proj(temb)
        # (C,) or (B, C) -> broadcast on (B, H, W, C)
        t = t.reshape(t.shape[:-1] + (1, 1, t.shape[-1]))
        h = h + t.reshape((1,) * (h.ndim - t.ndim) + t.shape)
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))


class SelfAttention(nnx.Module):
    def __init__(self, channels: int, groups: int, rngs: nnx.Rngs, dtype=jnp.float32):
        self.norm = _norm(channels, groups, rngs)
        self.qkv = nnx.Linear(channels, 3 * channels, dtype=dtype, rngs=rngs)
        self.out = nnx.Linear(channels, channels, kernel_init=nnx.initializers.zeros, dtype=dtype,
                              rngs=rngs)

    def __call__(self, x):
        b, h, w, c = x.shape
        q, k, v = jnp.split(self.qkv(self.norm(x)).reshape(b, h * w, 3 * c), 3, axis=-1)
        logits = jnp.einsum("bqc,bkc->bqk", q, k, preferred_element_type=jnp.float32) / jnp.sqrt(c)
        attn = jax.nn.softmax(logits, -1).astype(v.dtype)
        return x + self.out(jnp.einsum("bqk,bkc->bqc", attn, v)).reshape(b, h, w, c)


class UNet(nnx.Module):
    def __init__(self, channels: int = 1, base: int = 32, mults=(1, 2, 2), num_res_blocks: int = 1,
                 attention: bool = False, groups: int = 8, dtype=jnp.float32, *, rngs: nnx.Rngs):
        self.base = base
        t_dim = 4 * base
        self.t_fc1 = nnx.Linear(base, t_dim, dtype=dtype, rngs=rngs)
        self.t_fc2 = nnx.Linear(t_dim, t_dim, dtype=dtype, rngs=rngs)
        self.conv_in = nnx.Conv(channels, base, (3, 3), dtype=dtype, rngs=rngs)
        down, skips_c, c = [], [base], base
        for i, m in enumerate(mults):
            for _ in range(num_res_blocks):
                down.append(ResBlock(c, base * m, t_dim, groups, rngs, dtype))
                c = base * m
                skips_c.append(c)
            if i < len(mults) - 1:
                down.append(nnx.Conv(c, c, (3, 3), strides=2, dtype=dtype, rngs=rngs))
                skips_c.append(c)
        self.down = nnx.List(down)
        self.mid1 = ResBlock(c, c, t_dim, groups, rngs, dtype)
        self.mid_attn = SelfAttention(c, groups, rngs, dtype) if attention else None
        self.mid2 = ResBlock(c, c, t_dim, groups, rngs, dtype)
        up = []
        for i, m in reversed(list(enumerate(mults))):
            for _ in range(num_res_blocks + 1):
                up.append(ResBlock(c + skips_c.pop(), base * m, t_dim, groups, rngs, dtype))
                c = base * m
            if i > 0:
                up.append(nnx.Conv(c, c, (3, 3), dtype=dtype, rngs=rngs))  # after a nearest x2
        self.up = nnx.List(up)
        self.norm_out = _norm(c, groups, rngs)
        # float32 even in mixed precision: eps_hat is the network's whole output (and cheap here).
        self.conv_out = nnx.Conv(c, channels, (3, 3), kernel_init=nnx.initializers.zeros,
                                 dtype=jnp.float32, rngs=rngs)

    def _temb(self, t):
        return self.t_fc2(jax.nn.silu(self.t_fc1(sinusoidal_embedding(t, self.base))))

    def _down_mid(self, x, temb):
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        h = self.mid1(h, temb)
        if self.mid_attn is not None:
            h = self.mid_attn(h)
        return self.mid2(h, temb), skips

    def __call__(self, x, t):
        """x (B, H, W, C); t (B,) or () -> eps_hat (B, H, W, C)."""
        temb = self._temb(t)
        h, skips = self._down_mid(x, temb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(jnp.concatenate([h, skips.pop()], axis=-1), temb)
            else:
                b, hh, ww, c = h.shape
                h = layer(jax.image.resize(h, (b, 2 * hh, 2 * ww, c), "nearest"))
        return self.conv_out(jax.nn.silu(self.norm_out(h))).astype(x.dtype)

    def bottleneck(self, x, t):
        """The middle block's feature map (B, H / 2^(levels-1), W / 2^(levels-1), C)."""
        h, _ = self._down_mid(x, self._temb(t))
        return h.astype(x.dtype)

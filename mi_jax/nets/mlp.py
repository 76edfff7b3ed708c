"""The paper's toy score network (the official `Decoder`), as a Flax NNX module.

in_fc (no bias) -> 3 time-conditioned residual blocks -> LayerNorm -> out_fc. Each block:
h + fc2(act(LN(fc1(act(LN(h))) + enc(temb)))). The official code builds the blocks as
`Sequential(*([TemporalLayer(...)] * 3))`, which repeats ONE module, so the three blocks share
their weights; `tied=True` (default) reproduces that, `tied=False` gives three independent blocks.
"""

from __future__ import annotations

from functools import partial

import jax
from flax import nnx

from mi_jax.nets.embeddings import sinusoidal_embedding

_XAVIER = jax.nn.initializers.xavier_uniform()
_LN_EPS = 1e-5  # PyTorch's LayerNorm default
_act = partial(jax.nn.leaky_relu, negative_slope=0.02)


def _linear(n_in, n_out, rngs, bias=True):
    return nnx.Linear(n_in, n_out, use_bias=bias, kernel_init=_XAVIER, rngs=rngs)


class TemporalBlock(nnx.Module):
    def __init__(self, width: int, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(width, epsilon=_LN_EPS, rngs=rngs)
        self.fc1 = _linear(width, width, rngs, bias=False)
        self.enc = _linear(width, width, rngs)
        self.norm2 = nnx.LayerNorm(width, epsilon=_LN_EPS, rngs=rngs)
        self.fc2 = _linear(width, width, rngs, bias=False)

    def __call__(self, h, t_features):
        """t_features = self.enc(temb), passed in so that tied blocks compute it once."""
        out = self.fc1(_act(self.norm1(h))) + t_features
        return h + self.fc2(_act(self.norm2(out)))


class ToyMLP(nnx.Module):
    def __init__(self, dim: int, width: int = 128, num_blocks: int = 3, tied: bool = True, *,
                 rngs: nnx.Rngs):
        self.width = width
        self.num_blocks = num_blocks
        self.in_fc = _linear(dim, width, rngs, bias=False)
        self.t_proj = _linear(width, width, rngs)
        if tied:
            self.blocks = nnx.List([TemporalBlock(width, rngs)])
        else:
            self.blocks = nnx.List([TemporalBlock(width, rngs) for _ in range(num_blocks)])
        self.out_norm = nnx.LayerNorm(width, epsilon=_LN_EPS, rngs=rngs)
        self.out_fc = _linear(width, dim, rngs)

    def __call__(self, x, t):
        """x (batch, dim); t (batch,) or () -- a scalar t embeds once and broadcasts."""
        temb = _act(self.t_proj(sinusoidal_embedding(t, self.width)))
        # Tied blocks see the same enc(temb): computing it once saves 2 of 10 matmuls per sample.
        t_features = [block.enc(temb) for block in self.blocks]
        h = self.in_fc(x)
        for i in range(self.num_blocks):
            j = i % len(self.blocks)
            h = self.blocks[j](h, t_features[j])
        return self.out_fc(self.out_norm(h))

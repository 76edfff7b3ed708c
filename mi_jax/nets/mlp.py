"""The paper's toy score network (the official `Decoder`), as a Flax NNX module.

in_fc (no bias) -> 3 time-conditioned residual blocks -> LayerNorm -> out_fc. Each block:
h + fc2(act(LN(fc1(act(LN(h))) + enc(temb)))). The official code builds the blocks as
`Sequential(*([TemporalLayer(...)] * 3))`, which repeats ONE module, so the three blocks share
their weights; `tied=True` (default) reproduces that, `tied=False` gives three independent blocks.

Every LayerNorm here sees a zero-mean row by construction: each layer that writes into the
residual stream or into a LayerNorm's input uses its kernel (and bias) with the mean over
outputs removed, `_centred`, so its output rows sum to zero and LayerNorm's mean subtraction is
the identity. The norms then compute only the mean of squares (`_norm_of_centred`): the same
function of the same params and the same gradients in real arithmetic (float rounding aside),
one row reduction fewer per norm forward and backward (CPU, side-by-side A/B: +10-14 % training,
+8 % sampling; within the spread of same-run pairs against the official code: BUILD_NOTES.md,
issue 18). `make_mlp(..., fold_means=False)` builds the plain form (benchmarks, tests): an
option of the network's spec, so the two forms never share a compiled program.

Mixed precision (`compute_dtype=bfloat16`, opt-in): the blocks' width x width matmuls take bf16
operands with float32 accumulation; params, norms, the residual stream and the input/output
layers stay float32. Same params pytree. Faster sampling only where the CPU has bf16 matrix
units (AMX); its effect on samples and detection is measured by `benchmarks.bench_precision`.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from mi_jax.nets.embeddings import sinusoidal_embedding

_XAVIER = jax.nn.initializers.xavier_uniform()
_LN_EPS = 1e-5  # PyTorch's LayerNorm default
_act = partial(jax.nn.leaky_relu, negative_slope=0.02)


def _row_mean(x):
    return jnp.mean(x, -1, keepdims=True)


def _row_mean_dot(x):
    width = x.shape[-1]
    return jnp.dot(x, jnp.full((width, 1), 1.0 / width, x.dtype), precision="highest")


def _row_mean_for_training(x):
    """`_row_mean` as the differentiated path (training) computes it. On CPU a matrix-vector
    product: XLA:CPU's dot kernel streams a (10 000, 128) batch faster than its row reduction
    (+5-9 % training steps/s of the toy MLP; in the sampler's 2 048-row tiles the reduction is
    the faster one, so plain evaluation keeps it: BUILD_NOTES.md, issue 18; observers that
    differentiate the network, curvature and FLIPD, take this path too). Elsewhere the
    reduction (GPUs fuse it). The two agree up to float rounding (summation order)."""
    return jax.lax.platform_dependent(x, cpu=_row_mean_dot, default=_row_mean)


def _ln_stats(x, row_mean=_row_mean):
    mean = row_mean(x)
    var = jnp.maximum(row_mean(x * x) - mean * mean, 0.0)
    rstd = jax.lax.rsqrt(var + _LN_EPS)
    return (x - mean) * rstd, rstd


def _affine(x, scale, bias):
    """x * scale + bias with the (D,) parameters broadcast over x's leading axes."""
    lead = (1,) * (x.ndim - 1)
    return x * scale.reshape(lead + scale.shape) + bias.reshape(lead + bias.shape)


@jax.custom_vjp
def layer_norm(x, scale, bias):
    """LayerNorm over the last axis whose VJP is the closed form (two row means), not autodiff's
    chain of reductions: ~5 % of a training step on CPU (BUILD_NOTES.md; a custom JVP rule,
    transposed by JAX, was no faster). Under differentiation the row means run as
    `_row_mean_for_training`, so a value under `jax.vjp` may differ from a plain call by float
    rounding. Reverse mode only (jax.custom_vjp): no jvp/jacfwd."""
    return _affine(_ln_stats(x)[0], scale, bias)


def _layer_norm_fwd(x, scale, bias):
    x_hat, rstd = _ln_stats(x, _row_mean_for_training)
    return _affine(x_hat, scale, bias), (x_hat, rstd, scale)


def _layer_norm_bwd(res, g):
    x_hat, rstd, scale = res
    g_hat = g * scale.reshape((1,) * (g.ndim - 1) + scale.shape)
    dx = rstd * (g_hat - _row_mean_for_training(g_hat)
                 - x_hat * _row_mean_for_training(g_hat * x_hat))
    batch_axes = tuple(range(g.ndim - 1))
    return dx, jnp.sum(g * x_hat, batch_axes), jnp.sum(g, batch_axes)


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)

@jax.custom_vjp
def _norm_of_centred(x, scale, bias):
    """`layer_norm` for rows whose mean is zero already: x * rsqrt(mean(x^2) + eps), affine."""
    rstd = jax.lax.rsqrt(_row_mean(x * x) + _LN_EPS)
    return _affine(x * rstd, scale, bias)


def _norm_of_centred_fwd(x, scale, bias):
    rstd = jax.lax.rsqrt(_row_mean_for_training(x * x) + _LN_EPS)
    x_hat = x * rstd
    return _affine(x_hat, scale, bias), (x_hat, rstd, scale)


def _norm_of_centred_bwd(res, g):
    # The VJP of x -> x * rsqrt(mean(x^2) + eps): layer_norm's without the mean(g_hat) term.
    x_hat, rstd, scale = res
    g_hat = g * scale.reshape((1,) * (g.ndim - 1) + scale.shape)
    dx = rstd * (g_hat - x_hat * _row_mean_for_training(g_hat * x_hat))
    batch_axes = tuple(range(g.ndim - 1))
    return dx, jnp.sum(g * x_hat, batch_axes), jnp.sum(g, batch_axes)


_norm_of_centred.defvjp(_norm_of_centred_fwd, _norm_of_centred_bwd)


def _centred(v):
    """v minus its mean over the last (output) axis: x @ _centred(W) has zero-mean rows."""
    return v - jnp.mean(v, -1, keepdims=True)


def _dense(layer: nnx.Linear, x, centred: bool, compute_dtype=jnp.float32):
    """layer(x), with the kernel and bias `_centred` when `centred` (the folded form; see the
    module doc).

    compute_dtype bfloat16: the matmul's operands are rounded to bf16 (after centring) and
    accumulated in float32; the bias, the output and everything around stay float32."""
    kernel = layer.kernel[...]
    kernel = _centred(kernel) if centred else kernel
    if jnp.dtype(compute_dtype) == jnp.float32:
        y = x @ kernel
    else:
        y = jnp.dot(x.astype(compute_dtype), kernel.astype(compute_dtype),
                    preferred_element_type=jnp.float32)
    if layer.bias is not None:
        bias = _centred(layer.bias[...]) if centred else layer.bias[...]
        y = y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)
    return y


class LayerNorm(nnx.Module):
    """nnx.LayerNorm's params ('scale', 'bias') and function, with `layer_norm`'s derivative."""

    def __init__(self, width: int):
        self.scale = nnx.Param(jnp.ones((width,)))
        self.bias = nnx.Param(jnp.zeros((width,)))

    def __call__(self, x, zero_mean_rows: bool = False):
        """zero_mean_rows: x's rows are known to have mean zero (`_centred` writers)."""
        norm = _norm_of_centred if zero_mean_rows else layer_norm
        return norm(x, self.scale[...], self.bias[...])


def _linear(n_in, n_out, rngs, bias=True):
    return nnx.Linear(n_in, n_out, use_bias=bias, kernel_init=_XAVIER, rngs=rngs)


class TemporalBlock(nnx.Module):
    def __init__(self, width: int, rngs: nnx.Rngs, compute_dtype=jnp.float32,
                 fold_means: bool = True):
        self.compute_dtype = jnp.dtype(compute_dtype)  # of fc1 and fc2 (static, not a param)
        self.fold = fold_means  # static: the folded (centred-kernel) form or the plain one
        self.norm1 = LayerNorm(width)
        self.fc1 = _linear(width, width, rngs, bias=False)
        self.enc = _linear(width, width, rngs)
        self.norm2 = LayerNorm(width)
        self.fc2 = _linear(width, width, rngs, bias=False)

    def __call__(self, h, t_features):
        """t_features = self.enc(temb), centred (`ToyMLP._time_features`), passed in so that
        tied blocks compute it once; h has zero-mean rows."""
        f = self.fold
        h1 = _dense(self.fc1, _act(self.norm1(h, zero_mean_rows=f)), f, self.compute_dtype)
        out = h1 + t_features.reshape((1,) * (h1.ndim - t_features.ndim) + t_features.shape)
        return h + _dense(self.fc2, _act(self.norm2(out, zero_mean_rows=f)), f,
                          self.compute_dtype)


class ToyMLP(nnx.Module):
    def __init__(self, dim: int, width: int = 128, num_blocks: int = 3, tied: bool = True,
                 num_timesteps: int = 0, input_bias: bool = False, compute_dtype=jnp.float32,
                 fold_means: bool = True, *, rngs: nnx.Rngs):
        """compute_dtype: of the residual blocks' width x width matmuls (fc1, fc2), which are
        nearly all of a sampling step's FLOPs; the input, time and output layers, the norms and
        the residual stream stay float32, so x itself is never rounded to bf16."""
        self.width = width
        self.num_blocks = num_blocks
        self.num_timesteps = num_timesteps  # 0: unknown (no timestep table)
        self.fold = fold_means
        self.in_fc = _linear(dim, width, rngs, bias=input_bias)  # official: no bias
        self.t_proj = _linear(width, width, rngs)
        if tied:
            self.blocks = nnx.List([TemporalBlock(width, rngs, compute_dtype, fold_means)])
        else:
            self.blocks = nnx.List([TemporalBlock(width, rngs, compute_dtype, fold_means)
                                    for _ in range(num_blocks)])
        self.out_norm = LayerNorm(width)
        self.out_fc = _linear(width, dim, rngs)

    def _time_features(self, t):
        temb = _act(self.t_proj(sinusoidal_embedding(t, self.width)))
        # Tied blocks see the same enc(temb): computing it once saves 2 of 10 matmuls per sample.
        return [_dense(block.enc, temb, centred=self.fold) for block in self.blocks]

    def __call__(self, x, t):
        """x (batch, dim); t (batch,) or () -- a scalar t embeds once and broadcasts.

        With `num_timesteps` set and an integer t vector longer than it (training batches), the
        time path runs once per timestep 0..num_timesteps-1 and is gathered by t: the same
        function with 2 of 8 matmuls per sample moved onto the table. A t outside the table
        gives NaN, not a clipped row.
        """
        t = jnp.asarray(t)
        if (self.num_timesteps and t.ndim == 1 and t.shape[0] > self.num_timesteps
                and jnp.issubdtype(t.dtype, jnp.integer)):
            table = self._time_features(jnp.arange(self.num_timesteps, dtype=t.dtype))
            t_features = [f.at[t].get(mode="fill", fill_value=jnp.nan) for f in table]
        else:
            t_features = self._time_features(t)
        h = _dense(self.in_fc, x, centred=self.fold)  # the residual stream stays zero-mean
        for i in range(self.num_blocks):
            j = i % len(self.blocks)
            h = self.blocks[j](h, t_features[j])
        return self.out_fc(self.out_norm(h, zero_mean_rows=self.fold))

"""Networks behind one functional interface: `init(key) -> params`, `apply(params, x, t) -> eps`.

The NN library (Flax NNX) stays inside this package: modules are split into a static graph and a
plain nested dict of arrays, so the rest of mi_jax sees only params pytrees and pure functions
(vmap `init` for ensembles, vmap `apply` over stacked params for sweeps).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from mi_jax.nets.mlp import ToyMLP
from mi_jax.nets.unet import UNet
from mi_jax.validation import check, check_int

Params = Any


@dataclasses.dataclass(frozen=True, eq=False)
class Network:
    """A network as two pure functions. Hashable, so it can be a static argument of jit.

    spec: a hashable description that fixes the functions (e.g. the constructor's arguments);
    networks with equal specs compare and hash equal, so jit reuses a compiled program across
    separately built but identical networks. Without a spec, identity of the functions decides.
    """

    name: str
    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array, jax.Array], jax.Array]
    features: Callable[[Params, jax.Array, jax.Array], jax.Array] | None = None  # inner features
    spec: tuple | None = None

    def _key(self):
        return ("spec", self.spec) if self.spec is not None else (
            "functions", self.name, self.init, self.apply, self.features)

    def __eq__(self, other):
        return isinstance(other, Network) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def eps_fn(self, params: Params):
        """The `eps_fn(x_t, t)` of these params, for the sampler (t may be (batch,) or scalar)."""

        def eps_fn(x_t, t):
            return self.apply(params, x_t, t)

        eps_fn.accepts_scalar_t = True
        return eps_fn

    def num_params(self, params: Params) -> int:
        return int(sum(x.size for x in jax.tree.leaves(params)))


def _pure_functions(build: Callable[[nnx.Rngs], nnx.Module]):
    """`init(key) -> params` (a pure dict) and `module(params) -> nnx.Module` for a constructor."""
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))), nnx.Param)

    def init(key):
        return nnx.to_pure_dict(nnx.split(build(nnx.Rngs(params=key)), nnx.Param)[1])

    def module(params):
        state = jax.tree.map(lambda a: a, abstract)  # fresh copy to fill with these leaves
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(graphdef, state)

    return init, module


def from_nnx(name: str, build: Callable[[nnx.Rngs], nnx.Module],
             features_method: str | None = None, spec: tuple | None = None) -> Network:
    """Wrap an NNX module constructor (`build(rngs)`) as a `Network` over pure-dict params;
    `features_method` names a module method (x, t) -> features, exposed as `Network.features`;
    `spec`: see `Network` (give one only if it fully determines `build`)."""
    init, module = _pure_functions(build)

    def apply(params, x, t):
        return module(params)(x, t)

    features = None
    if features_method is not None:
        def features(params, x, t):
            return getattr(module(params), features_method)(x, t)

    return Network(name, init, apply, features, spec)


_MLP_CACHE: dict = {}


COMPUTE_DTYPES = ("float32", "bfloat16")  # the networks' matmul precisions


def _check_compute_dtype(compute_dtype) -> None:
    check(compute_dtype in COMPUTE_DTYPES, "compute_dtype", compute_dtype,
          f"must be one of {', '.join(COMPUTE_DTYPES)}")


def make_mlp(dim: int, width: int = 128, num_blocks: int = 3, tied: bool = True,
             num_timesteps: int = 0, input_bias: bool = False,
             compute_dtype: str = "float32", fold_means: bool = True) -> Network:
    """The paper's toy MLP (width 128, 3 residual blocks, weight-tied by default).

    num_timesteps: the T of the schedule it is trained on, if known; batches of integer t longer
    than T then run the time path once per timestep instead of once per sample (training at
    batch 10 000, T = 1 000). Same params, same function: only for speed.
    input_bias: give the input layer a bias. The official one has none, so the first LayerNorm
    sees W x and the network cannot tell |x| near x = 0 (LayerNorm is scale-invariant): the
    mode on the input origin is under-sampled (BUILD_NOTES.md, mode_mass).
    compute_dtype="bfloat16": the residual blocks' matmuls take bf16 operands (float32
    accumulation, params, norms, input and output layers); same params pytree, opt-in only
    (`mi_jax.nets.mlp`; measured in BUILD_NOTES.md, issue 18).
    fold_means=False: the plain LayerNorms instead of the centred-kernel fold (same function and
    gradients in real arithmetic; for A/B benchmarks and tests)."""
    check_int(dim, "dim", low=1)
    check_int(width, "width", low=2)
    check_int(num_blocks, "num_blocks", low=1)
    check(isinstance(tied, bool), "tied", tied, "must be a bool")
    check_int(num_timesteps, "num_timesteps", low=0)
    check(isinstance(input_bias, bool), "input_bias", input_bias, "must be a bool")
    _check_compute_dtype(compute_dtype)
    check(isinstance(fold_means, bool), "fold_means", fold_means, "must be a bool")
    spec = ("mlp", dim, width, num_blocks, tied, num_timesteps, input_bias, compute_dtype)
    spec += () if fold_means else ("plain_norms",)  # the default's spec is unchanged
    if spec not in _MLP_CACHE:  # building one costs an abstract init; equal specs hash equal
        name = (f"mlp(dim={dim},width={width},blocks={num_blocks},{'tied' if tied else 'untied'}"
                + (f",T={num_timesteps}" if num_timesteps else "")
                + (",input_bias" if input_bias else "")
                + ("" if compute_dtype == "float32" else f",{compute_dtype}")
                + ("" if fold_means else ",plain_norms") + ")")
        dtype = jnp.dtype(compute_dtype)
        _MLP_CACHE[spec] = from_nnx(
            name, lambda rngs: ToyMLP(dim, width, num_blocks, tied, num_timesteps, input_bias,
                                      dtype, fold_means, rngs=rngs),
            spec=spec)
    return _MLP_CACHE[spec]


_UNET_CACHE: dict = {}


def make_unet(channels: int = 1, base: int = 32, mults=(1, 2, 2), num_res_blocks: int = 1,
              attention: bool = False, compute_dtype: str = "float32") -> Network:
    """A small image UNet (see `mi_jax.nets.unet`); `features` gives its bottleneck feature map.

    compute_dtype="bfloat16": mixed precision (bf16 convs and dense layers; float32 params, norms,
    attention softmax and output conv); its params pytree equals the float32 network's, so
    checkpoints are shared."""
    check_int(channels, "channels", low=1)
    check_int(base, "base", low=4)
    mults = tuple(mults)
    check(len(mults) >= 1 and all(isinstance(m, int) and m >= 1 for m in mults), "mults", mults,
          "must be a non-empty tuple of positive ints")
    check_int(num_res_blocks, "num_res_blocks", low=1)
    check(isinstance(attention, bool), "attention", attention, "must be a bool")
    _check_compute_dtype(compute_dtype)
    spec = ("unet", channels, base, mults, num_res_blocks, attention, compute_dtype)
    if spec not in _UNET_CACHE:
        name = (f"unet(channels={channels},base={base},mults={mults},res={num_res_blocks},"
                f"attn={attention}" + ("" if compute_dtype == "float32" else f",{compute_dtype}")
                + ")")
        dtype = jnp.dtype(compute_dtype)
        _UNET_CACHE[spec] = from_nnx(
            name, lambda rngs: UNet(channels, base, mults, num_res_blocks, attention, dtype=dtype,
                                    rngs=rngs),
            features_method="bottleneck", spec=spec)
    return _UNET_CACHE[spec]


def take_model(stacked_params: Params, i: int) -> Params:
    """Model i of a stack of params (leading model axis), e.g. one seed of a vmapped sweep."""
    leaves = jax.tree.leaves(stacked_params)
    check(bool(leaves) and all(jnp.ndim(a) >= 1 for a in leaves), "stacked_params",
          type(stacked_params).__name__, "must be a stack of params (a leading model axis)")
    check_int(i, "i", low=0, high=int(jnp.shape(leaves[0])[0]) - 1)
    return jax.tree.map(lambda a: a[i], stacked_params)


@dataclasses.dataclass(frozen=True)
class Classifier:
    """A classifier as pure functions: logits(params, x) and features(params, x) (penultimate)."""

    name: str
    init: Callable[[jax.Array], Params]
    logits: Callable[[Params, jax.Array], jax.Array]
    features: Callable[[Params, jax.Array], jax.Array]


_CLASSIFIER_CACHE: dict = {}


def make_classifier(dim: int, num_classes: int = 10, width: int = 256,
                    feature_width: int = 64) -> Classifier:
    """A small MLP classifier on flattened inputs (e.g. the feature space of a Frechet distance)."""
    from mi_jax.nets.classifier import MLPClassifier

    for value, name in ((dim, "dim"), (num_classes, "num_classes"), (width, "width"),
                        (feature_width, "feature_width")):
        check_int(value, name, low=2 if name == "num_classes" else 1)
    spec = (dim, num_classes, width, feature_width)
    if spec not in _CLASSIFIER_CACHE:
        init, module = _pure_functions(
            lambda rngs: MLPClassifier(dim, num_classes, width, feature_width, rngs=rngs))
        _CLASSIFIER_CACHE[spec] = Classifier(
            f"mlp_classifier(dim={dim},classes={num_classes},width={width},features={feature_width})",
            init, lambda p, x: module(p)(x), lambda p, x: module(p).features(x))
    return _CLASSIFIER_CACHE[spec]

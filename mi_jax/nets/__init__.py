"""Networks behind one functional interface: `init(key) -> params`, `apply(params, x, t) -> eps`.

The NN library (Flax NNX) stays inside this package: modules are split into a static graph and a
plain nested dict of arrays, so the rest of mi_jax sees only params pytrees and pure functions
(vmap `init` for ensembles, vmap `apply` over stacked params for sweeps).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
from flax import nnx

from mi_jax.nets.mlp import ToyMLP
from mi_jax.validation import check, check_int

Params = Any


@dataclasses.dataclass(frozen=True)
class Network:
    """A network as two pure functions. Hashable, so it can be a static argument of jit."""

    name: str
    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array, jax.Array], jax.Array]

    def eps_fn(self, params: Params):
        """The `eps_fn(x_t, t)` of these params, for the sampler (t may be (batch,) or scalar)."""

        def eps_fn(x_t, t):
            return self.apply(params, x_t, t)

        eps_fn.accepts_scalar_t = True
        return eps_fn

    def num_params(self, params: Params) -> int:
        return int(sum(x.size for x in jax.tree.leaves(params)))


def from_nnx(name: str, build: Callable[[nnx.Rngs], nnx.Module]) -> Network:
    """Wrap an NNX module constructor (`build(rngs)`) as a `Network` over pure-dict params."""
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))), nnx.Param)

    def init(key):
        return nnx.to_pure_dict(nnx.split(build(nnx.Rngs(params=key)), nnx.Param)[1])

    def apply(params, x, t):
        state = jax.tree.map(lambda a: a, abstract)  # fresh copy to fill with these leaves
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(graphdef, state)(x, t)

    return Network(name, init, apply)


_MLP_CACHE: dict = {}


def make_mlp(dim: int, width: int = 128, num_blocks: int = 3, tied: bool = True) -> Network:
    """The paper's toy MLP (width 128, 3 residual blocks, weight-tied by default)."""
    check_int(dim, "dim", low=1)
    check_int(width, "width", low=2)
    check_int(num_blocks, "num_blocks", low=1)
    check(isinstance(tied, bool), "tied", tied, "must be a bool")
    spec = (dim, width, num_blocks, tied)
    if spec not in _MLP_CACHE:  # one Network object per spec keeps jit caches warm
        name = f"mlp(dim={dim},width={width},blocks={num_blocks},{'tied' if tied else 'untied'})"
        _MLP_CACHE[spec] = from_nnx(name, lambda rngs: ToyMLP(dim, width, num_blocks, tied, rngs=rngs))
    return _MLP_CACHE[spec]

"""Property-based checks of the public API with random valid and invalid inputs (hypothesis)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import mi_jax as mj
from mi_jax.data import mixtures as mx
from mi_jax.validation import InputError

finite = st.floats(-5, 5, allow_nan=False)
positive = st.floats(0.05, 2.0, allow_nan=False)


@st.composite
def mixtures(draw):
    dim = draw(st.integers(1, 3))
    k = draw(st.integers(1, 5))
    means = draw(st.lists(st.lists(finite, min_size=dim, max_size=dim), min_size=k, max_size=k))
    stds = draw(st.lists(positive, min_size=k, max_size=k))
    weights = draw(st.one_of(st.none(), st.lists(st.floats(0.05, 1.0), min_size=k, max_size=k)))
    return mj.GaussianMixture(means, stds, weights)


SLOTS = 8  # every drawn mixture is padded to this many slots: one compile per dimension


def _log_prob_f64(x, means, stds, weights):
    """NumPy float64 reference log density of an isotropic mixture."""
    x, means, stds = (np.asarray(a, np.float64) for a in (x, means, stds))
    d = x.shape[-1]
    sq = ((x[:, None, :] - means[None]) ** 2).sum(-1)
    comp = -0.5 * sq / stds**2 - d * np.log(stds) - 0.5 * d * np.log(2 * np.pi)
    comp = comp + np.log(np.asarray(weights, np.float64))
    top = comp.max(-1, keepdims=True)
    return (top + np.log(np.exp(comp - top).sum(-1, keepdims=True)))[:, 0]


@settings(max_examples=25, deadline=None)
@given(mixtures(), st.integers(0, 2**31 - 1))
def test_valid_mixtures_behave(m, seed):
    k = m.num_slots
    p = m.pad(SLOTS)
    x = p.sample(jax.random.key(seed), 16)
    assert x.shape == (16, m.dim) and bool(jnp.all(jnp.isfinite(x)))
    ref = _log_prob_f64(x, np.asarray(m.means), np.asarray(m.stds), np.asarray(m.weights))
    np.testing.assert_allclose(p.log_prob(x), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(p.weights)[:k], np.asarray(m.weights), rtol=1e-6)
    assert not np.any(np.asarray(p.weights)[k:])
    a, b = jnp.float32(0.6), jnp.float32(0.8)
    score = mx.noised_score(p, x, a, b)
    grad = jax.vmap(jax.grad(lambda xi: mx.noised_log_prob(p, xi, a, b)))(x)
    np.testing.assert_allclose(score, grad, rtol=2e-3, atol=2e-3)
    assert bool(jnp.all(mj.in_support(x, p, 1e6)))


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["std0", "stdneg", "nan", "inf", "wneg", "wshape", "mask", "ragged"]),
       st.integers(1, 4))
def test_invalid_mixtures_raise_input_error(kind, k):
    means = [[float(i)] for i in range(k)]
    stds, weights = [0.1] * k, None
    if kind == "std0":
        stds[0] = 0.0
    elif kind == "stdneg":
        stds[-1] = -0.2
    elif kind == "nan":
        means[0][0] = float("nan")
    elif kind == "inf":
        stds[0] = float("inf")
    elif kind == "wneg":
        weights = [1.0] * k
        weights[0] = -1.0
    elif kind == "wshape":
        weights = [1.0] * (k + 1)
    elif kind == "mask":
        with pytest.raises(InputError):
            mj.GaussianMixture(means, stds, mask=[False] * k)
        return
    elif kind == "ragged":
        means = [[0.0]] + [[0.0, 1.0]] * k
    with pytest.raises(InputError):
        mj.GaussianMixture(means, stds, weights)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 60), st.integers(-5, 70), st.integers(-5, 70))
def test_windows_accepted_iff_inside_schedule(T, lo, hi):
    schedule = mj.linear_schedule(T, 0.001, 0.2)
    eps_fn = mj.oracle_eps(mj.mixture_1d([0.0, 1.0]), schedule)
    valid = 0 <= lo < hi <= T
    if valid:
        r = mj.sample(eps_fn, schedule, jax.random.key(0), 4, (1,),
                      observers=mj.paper_observers((lo, hi)))
        assert r.hal.shape == (4,) and np.all(np.isfinite(r.hal)) and np.all(r.hal >= 0)
    else:  # refused when built (lo < 0, lo >= hi) or when checked against the chain (hi > T)
        with pytest.raises(InputError, match="^(windows|hal)="):
            mj.sample(eps_fn, schedule, jax.random.key(0), 4, (1,),
                      observers=mj.paper_observers((lo, hi)))


@settings(max_examples=20, deadline=None)
@given(st.integers(-3, 200), st.floats(-0.5, 1.5), st.floats(-0.5, 1.5))
@example(2, 1.6789909e-141, 0.25)  # 1 - beta == 1 in float64: found by hypothesis in CI
def test_schedules_accept_iff_valid(T, b0, b1):
    # (Within these ranges every valid schedule's constants fit float32: 200 * -log(1 - 0.999)
    # would not, and is refused separately by from_betas.)
    valid = T >= 2 and 0 < b0 < 0.5 and 0 < b1 < 0.5
    if T >= 2 and 0 < b0 < 1 and 0 < b1 < 1 and not valid:
        return
    if valid:
        s = mj.linear_schedule(T, b0, b1)
        assert s.num_steps == T
        assert all(np.all(np.isfinite(np.asarray(v))) for v in s)
    else:
        with pytest.raises(InputError):
            mj.linear_schedule(T, b0, b1)

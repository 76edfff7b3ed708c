"""Repair during sampling: the mode-guidance shift in closed form, restart and guidance on a
known answer (the tempered 1D denoiser, which bridges between modes)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mi_jax as mj
from mi_jax.data import mixtures as mx
from mi_jax.data.support import nearest_mode
from mi_jax.sampling import repair
from mi_jax.validation import InputError
from tests.test_detection import _tempered_oracle

MODES = [1.0, 2.0, 3.0]


def test_mode_eps_is_the_exact_eps_of_the_most_probable_mode_alone():
    mix = mx.grid_2d("square", size=3)
    x = jax.random.normal(jax.random.key(0), (64, 2)) * 3.0
    a, b = 0.8, 0.6
    nearest = np.asarray(nearest_mode(x / a, mix))  # equal stds and weights: nearest = argmax
    got = np.asarray(mx.mode_eps(mix, x, a, b))
    for i in range(len(x)):
        alone = mx.GaussianMixture(mix.means[nearest[i]][None], mix.stds[:1], jnp.ones(1),
                                   jnp.ones(1, bool))
        np.testing.assert_allclose(got[i], mx.exact_eps(alone, x[i:i + 1], a, b)[0], rtol=1e-5,
                                   atol=1e-6)


def _bridges(x):
    return int(np.sum(mj.classify(x, mj.mixture_1d(MODES), 4.0) == 1))


@pytest.fixture(scope="module")
def smoothed():
    schedule = mj.linear_schedule()
    eps = _tempered_oracle(MODES, 0.05, schedule, 150.0)
    res = mj.sample(eps, schedule, jax.random.key(0), 4000, (1,),
                    observers={"hal": mj.window_variance((0, 10))})
    return schedule, eps, res


def test_restarting_flagged_samples_repairs_most_bridges(smoothed):
    """The 4 % highest-variance samples re-noised to t' = 100 and resampled (twice at most):
    bridges fall to under half (measured 2 of 59); none is discarded. Restarting from t' = 1
    barely moves a sample (a control that the repair is the re-noising, not the re-scoring)."""
    schedule, eps, res = smoothed
    score = np.asarray(res.observed["hal"].var[0])
    before = _bridges(res.x)
    assert before >= 20
    thr = float(np.quantile(score, 0.96))
    out = repair.repair_flagged(eps, schedule, jax.random.key(1), res.x, score, thr, 100, 2,
                                "hal", {"hal": mj.window_variance((0, 10))})
    assert out["x"].shape == res.x.shape and out["restarted"][0] == int(np.sum(score > thr))
    assert _bridges(out["x"]) < before / 2
    assert out["network_calls"] == sum(out["restarted"]) * 101
    tiny = repair.restart(eps, schedule, jax.random.key(2), res.x[:50], 1)
    assert float(np.max(np.abs(np.asarray(tiny.x) - res.x[:50]))) < 0.2


def test_mode_guidance_removes_bridges_and_covers_the_modes(smoothed):
    """Smoothed this hard the denoiser sends every sample to the middle mode (measured mass
    0 / 1 / 0) and bridges 53 of 4 000; committing each sample to its most probable mode below
    t = 100 (w = 1) leaves no bridge and puts >= 20 % on every mode (measured 37 / 25 / 38 %)."""
    schedule, eps, res = smoothed
    guided = repair.mode_guided(eps, mj.mixture_1d(MODES), schedule, 1.0, 100)
    g = mj.sample(guided, schedule, jax.random.key(0), 4000, (1,))
    assert _bridges(g.x) < _bridges(res.x) / 2
    counts = np.bincount(np.asarray(nearest_mode(jnp.asarray(g.x), mj.mixture_1d(MODES))),
                         minlength=3) / 4000
    assert counts.min() > 0.2
    same = repair.mode_guided(eps, mj.mixture_1d(MODES), schedule, 0.0, 100)
    x = jnp.linspace(0.0, 4.0, 16)[:, None]
    t = jnp.full((16,), 20, jnp.int32)
    np.testing.assert_array_equal(same(x, t), eps(x, t))


def test_restart_keeps_observer_outputs_per_sample_and_checks_arguments(smoothed):
    schedule, eps, res = smoothed
    out = repair.restart(eps, schedule, jax.random.key(3), res.x[:3], 20,
                         observers={"hal": mj.window_variance((0, 10))})
    assert out.x.shape == (3, 1) and out.observed["hal"].var.shape == (1, 3)
    with pytest.raises(InputError, match="^t_restart=1000"):
        repair.restart(eps, schedule, jax.random.key(3), res.x[:3], 1000)
    for bad in (-1.0, 1.5):
        with pytest.raises(InputError, match=f"^guidance_weight={bad}"):
            repair.mode_guided(eps, mj.mixture_1d(MODES), schedule, bad, 100)


def test_guidance_with_a_scalar_t_equals_the_per_sample_form():
    # Networks take one scalar t per step (the lax.cond path); a (n,) t takes the where path.
    schedule = mj.linear_schedule()
    mix = mx.grid_2d("square", size=3)
    base = mj.oracle_eps(mx.grid_2d("square", size=3, std=0.2), schedule)  # a "wrong" model
    guided = repair.mode_guided(base, mix, schedule, 0.5, 100)
    x = jax.random.normal(jax.random.key(4), (32, 2)) * 2.0
    for t in (5, 99, 100, 400):
        np.testing.assert_allclose(guided(x, jnp.int32(t)), guided(x, jnp.full((32,), t)),
                                   rtol=1e-6, atol=1e-6)
    assert np.allclose(guided(x, jnp.int32(400)), base(x, jnp.int32(400)))
    assert not np.allclose(guided(x, jnp.int32(5)), base(x, jnp.int32(5)))

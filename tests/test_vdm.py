"""Variational diffusion models (App. Fig. 11): the loss against closed forms and a float64 NumPy
reference, the schedule's monotonicity and endpoints, the ancestral step against DDPM's
posterior constants, and exact-score sampling staying in support."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mi_jax as mj
from mi_jax.data import mixtures as mx
from mi_jax.diffusion import vdm

S2 = 0.3 ** 2  # data ~ N(0, S2 I), D = 2


def _optimal_eps(z, g):
    """E[eps | z_t] for x ~ N(0, S2 I): sigma z / (alpha^2 S2 + sigma^2)."""
    a, s = vdm.alpha_sigma(g)
    return (s / (a**2 * S2 + s**2))[:, None] * z


def _linear_gamma(t, lo=-13.3, hi=5.0):
    return lo + (hi - lo) * t


def test_gamma_is_monotone_with_fixed_endpoints():
    params = vdm.init_gamma(jax.random.key(0))
    params = jax.tree.map(lambda a: a + 0.7 * jax.random.normal(jax.random.key(1), a.shape), params)
    t = jnp.linspace(0.0, 1.0, 1001)
    g = vdm.gamma(params, t)
    assert float(g[0]) == pytest.approx(vdm.GAMMA_MIN, abs=1e-4)
    assert float(g[-1]) == pytest.approx(vdm.GAMMA_MAX, abs=1e-4)
    assert bool(jnp.all(jnp.diff(g) > 0))


def test_continuous_loss_matches_its_closed_form_on_a_gaussian():
    # With the optimal eps_hat, E|eps - eps_hat|^2 = D S2 / (S2 + e^g) per t, so the loss
    # (1/2) int gamma' D S2/(S2 + e^g) dt = (D/2) [g - log(S2 + e^g)] between the endpoints,
    # whatever the schedule's shape (here the learned network's, perturbed).
    params = vdm.init_gamma(jax.random.key(2))
    params = jax.tree.map(lambda a: a + 0.5, params)
    gamma_fn = functools.partial(vdm.gamma, params)
    x = jnp.sqrt(S2) * jax.random.normal(jax.random.key(3), (200_000, 2))
    loss = float(vdm.diffusion_loss(_optimal_eps, gamma_fn, x, jax.random.key(4), T=0))
    f = lambda g: g - math.log(S2 + math.exp(g))
    want = (2 / 2) * (f(vdm.GAMMA_MAX) - f(vdm.GAMMA_MIN))
    assert loss == pytest.approx(want, rel=0.03)


def test_discrete_loss_equals_a_float64_reference_and_approaches_the_continuous_one():
    x = jnp.sqrt(S2) * jax.random.normal(jax.random.key(5), (4096, 2))
    key = jax.random.key(6)
    T = 10
    got = float(vdm.diffusion_loss(_optimal_eps, _linear_gamma, x, key, T))
    # The same draws, then the formula in float64 NumPy.
    k_t, k_eps = jax.random.split(key)
    eps = np.asarray(jax.random.normal(k_eps, x.shape), np.float64)
    i = np.asarray(jax.random.randint(k_t, (x.shape[0],), 1, T + 1))
    g_t, g_s = _linear_gamma(i / T), _linear_gamma((i - 1) / T)
    sig = lambda v: 1 / (1 + np.exp(-v))
    a, s = np.sqrt(sig(-g_t)), np.sqrt(sig(g_t))
    xn = np.asarray(x, np.float64)
    z = a[:, None] * xn + s[:, None] * eps
    eps_hat = (s / (a**2 * S2 + s**2))[:, None] * z
    want = np.mean(0.5 * T * np.expm1(g_t - g_s) * np.sum((eps - eps_hat) ** 2, axis=1))
    assert got == pytest.approx(want, rel=2e-4)
    # The discrete loss is larger than the continuous one and falls toward it as T grows.
    big = jnp.sqrt(S2) * jax.random.normal(jax.random.key(7), (100_000, 2))
    cont = float(vdm.diffusion_loss(_optimal_eps, _linear_gamma, big, key, 0))
    d10, d1000 = (float(vdm.diffusion_loss(_optimal_eps, _linear_gamma, big, key, n))
                  for n in (10, 1000))
    assert d10 > d1000 > cont * 0.97 and d1000 == pytest.approx(cont, rel=0.05)


def test_the_ancestral_step_is_ddpms_posterior_step():
    # gamma from -30 (alpha_0 = 1 to 1e-13) to 5 over T' = 8 steps: DDPM's schedule with
    # alpha_bar[k] = sigmoid(-gamma((k + 1) / T')) and its "small" (posterior) variance.
    steps = 8
    g = lambda t: _linear_gamma(t, -30.0, 5.0)
    ab = np.array([1 / (1 + np.exp(g((k + 1) / steps))) for k in range(steps)], np.float64)
    prev = np.concatenate([[1 / (1 + np.exp(g(0.0)))], ab[:-1]])
    schedule = mj.diffusion.schedule.from_betas(1 - ab / prev)
    z = jax.random.normal(jax.random.key(8), (16, 2))
    eps = jax.random.normal(jax.random.key(9), (16, 2))
    for k in range(1, steps):
        key = jax.random.key(10 + k)
        want = mj.DDPM("small").step(schedule, z, eps, jnp.asarray(k), key)
        noise = jax.random.normal(key, z.shape, z.dtype)
        got = vdm.sample_step(jnp.asarray(g(k / steps)), jnp.asarray(g((k + 1) / steps)), z, eps,
                              noise)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-4, atol=2e-5)


def _exact_eps(mixture, z, g):
    a, s = vdm.alpha_sigma(g)
    return jax.vmap(lambda zi, ai, si: mx.exact_eps(mixture, zi[None], ai, si)[0])(z, a, s)


MIX = mx.grid_2d("square", 0.05, size=3)


def test_exact_score_vdm_sampling_stays_in_support():
    eps_fn = functools.partial(_exact_eps, MIX)
    x, hal, _, _ = vdm.sample(eps_fn, _linear_gamma, jax.random.key(12), 2000, 2, steps=200)
    assert x.shape == (2000, 2) and hal.shape == (2000,)
    assert float(np.mean(np.asarray(mj.in_support(x, MIX, 4.0)))) > 0.99
    assert bool(jnp.all(hal >= 0))


def test_noise_level_windows_count_their_steps_and_match_the_step_window():
    """On a linear schedule (log-SNR 13.3 - 18.3 t at t = i / steps), a log-SNR window that holds
    exactly the last 10 steps gives the step window's variance; each window's step count is the
    closed-form count; a window no step reaches holds none and scores 0."""
    eps_fn = functools.partial(_exact_eps, MIX)
    steps = 200
    windows = ((12.3, 13.25), (0.0, 5.0), (-20.0, -19.0))
    out = vdm.sample(eps_fn, _linear_gamma, jax.random.key(21), 500, 2, steps=steps, window=10,
                     logsnr_windows=windows)
    logsnr = 13.3 - 18.3 * np.arange(1, steps + 1) / steps  # the steps where x0_hat is formed
    expect = [int(np.sum((logsnr >= lo) & (logsnr <= hi))) for lo, hi in windows]
    assert np.asarray(out.steps_in).tolist() == expect and expect[0] == 10 and expect[2] == 0
    np.testing.assert_allclose(np.asarray(out.by_logsnr[0]), np.asarray(out.hal), rtol=1e-6,
                               atol=1e-12)
    assert np.all(np.asarray(out.by_logsnr[2]) == 0.0) and out.by_logsnr.shape == (3, 500)
    plain = vdm.sample(eps_fn, _linear_gamma, jax.random.key(21), 500, 2, steps=steps)
    np.testing.assert_array_equal(np.asarray(plain.x), np.asarray(out.x))  # windows only observe
    with pytest.raises(mj.InputError, match="^logsnr_windows="):
        vdm.sample(eps_fn, _linear_gamma, jax.random.key(21), 5, 2, steps=20,
                   logsnr_windows=((1.0, 0.0),))


def test_the_official_band_is_the_ddpm_window_s_noise_range():
    from mi_jax.studies import vdm as study

    lo, hi = study.official_band()
    s = mj.linear_schedule(1000, 1e-3, 0.2)
    abar = np.asarray(s.sqrt_alphas_bar, np.float64)[:10] ** 2
    snr = np.log(abar / (1 - abar))
    np.testing.assert_allclose([lo, hi], [snr.min(), snr.max()], rtol=1e-4)
    assert 3.5 < lo < hi < 7.5


def test_training_lowers_the_loss_and_learns_a_monotone_schedule():
    net = mj.make_mlp(2, width=32)
    data = MIX.sample(jax.random.key(13), 2000)
    params, opt = vdm.init_state(net, jax.random.key(14), 3e-3)
    key = jax.random.key(15)
    losses = []
    for start in (0, 150):
        params, opt, chunk = vdm.train_chunk(net, params, opt, data, key, start, T=100,
                                             batch=256, steps=150, learning_rate=3e-3)
        losses.append(np.asarray(chunk))
    assert np.mean(losses[1][-50:]) < 0.8 * np.mean(losses[0][:50])
    g = vdm.gamma(params["gamma"], jnp.linspace(0, 1, 101))
    assert bool(jnp.all(jnp.diff(g) > 0))
    eps_fn = vdm.network_eps(net, params["net"])
    x, hal, _, _ = vdm.sample(eps_fn, functools.partial(vdm.gamma, params["gamma"]),
                        jax.random.key(16), 256, 2, steps=50)
    assert np.all(np.isfinite(np.asarray(x))) and np.all(np.asarray(hal) >= 0)


def test_the_vdm_study_runs_its_grid_and_scores_each_cell(tmp_path):
    from mi_jax import config
    from mi_jax.studies import vdm as study

    cfg = config.preset(study.Config, study.PRESETS, "quick", seeds=[0], train_T=[10, 0],
                        sample_T=[10, 12], steps=20, train_chunk=10, num_samples=200, width=16)
    metrics = study.run(cfg, tmp_path, log=lambda *_: None)
    assert sorted(metrics["cells"]) == ["T=10, T'=10", "T=10, T'=12", "T=cont, T'=10",
                                        "T=cont, T'=12"]
    for cell in metrics["cells"].values():
        (row,) = cell["per_seed"]
        assert 0 <= row["bridge"] <= 1 and row["exact_bridge"] <= 0.02  # the exact score's floor
    assert (tmp_path / "fig11_vdm.png").stat().st_size > 0
    assert (tmp_path / "vdm_windows.png").stat().st_size > 0
    for cell in metrics["cells"].values():
        assert set(cell["auroc_by_logsnr"]) == set(metrics["logsnr_windows"])
        assert cell["per_seed"][0]["steps_by_logsnr"]["log-SNR >= -2"] > 0
    with pytest.raises(mj.InputError, match="^window=10: must be <= the smallest sample_T"):
        study.validate(cfg.replace(sample_T=[5, 10]))


def _vdm_results(bridges, exact, num_samples=1000):
    """Hand-made vdm metrics: bridges / exact {cell: [per-seed rate]}, seeds 0.. ."""
    cells = {}
    for name, rates in bridges.items():
        cells[name] = {"T": 10, "T_prime": 10, "bridge": {"mean": float(np.mean(rates))},
                       "exact_bridge": {"mean": float(np.mean(exact[name]))},
                       "bridges_auroc": {"mean": 0.5},
                       "per_seed": [{"seed": s, "bridge": b, "exact_bridge": e}
                                    for s, (b, e) in enumerate(zip(rates, exact[name]))]}
    return {"vdm": {"metrics": {"k": 4.0, "cells": cells, "headline": {}},
                    "config": {"preset": "quick", "num_samples": num_samples}}}


def test_the_vdm_ledger_row_is_the_per_seed_excess_over_the_exact_score():
    from mi_jax import ledger

    bridges = {"a": [0.050, 0.060, 0.040], "b": [0.010, 0.020, 0.030]}
    exact = {"a": [0.0, 0.001, 0.0], "b": [0.0, 0.0, 0.001]}
    row = {r["key"]: r for r in ledger.ledger(_vdm_results(bridges, exact))}["vdm_interpolates"]
    # seed s: mean over cells of its bridge rate minus mean over cells of its exact rate
    expected = [(0.050 + 0.010) / 2, (0.060 + 0.020 - 0.001) / 2, (0.040 + 0.030 - 0.001) / 2]
    np.testing.assert_allclose(row["per_seed"], expected, atol=1e-12)
    assert row["verdict"] == ledger.REPRODUCED
    same = {"a": [0.001, 0.0, 0.002], "b": [0.0, 0.001, 0.0]}
    row = {r["key"]: r for r in ledger.ledger(_vdm_results(same, same))}["vdm_interpolates"]
    assert row["per_seed"] == [0.0, 0.0, 0.0] and row["verdict"] == ledger.NOT_REPRODUCED
    empty = {r["key"]: r for r in ledger.ledger({})}["vdm_interpolates"]
    assert empty["verdict"] == ledger.NOT_MEASURED and "experiments.vdm" in empty["note"]

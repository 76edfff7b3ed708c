"""The second-order (Jacobian) denoising term: its target against the exact mixture posterior, the
plain objective unchanged without it, and the sharpness measures of the smoothness study."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mi_jax as mj
from mi_jax.data import mixtures as mx
from mi_jax.data.support import neighbour_pairs
from mi_jax.diffusion.forward import (between_loss, eps_loss, focused_timesteps, minibatch_x0,
                                      q_sample,
                                      second_order_target)
from mi_jax.diffusion.oracle import oracle_eps, oracle_x0
from mi_jax.studies import smoothness
from mi_jax.training.train import TrainConfig
from mi_jax.validation import InputError


def _posterior(mixture, x_t, a, b):
    """Exact p(x0 | x_t) of an isotropic mixture at one point: component weights, means, var."""
    mu = np.asarray(mixture.means, np.float64)
    s2 = float(np.asarray(mixture.stds)[0]) ** 2
    var = a * a * s2 + b * b
    logw = -np.sum((x_t - a * mu) ** 2, axis=1) / (2 * var)
    w = np.exp(logw - logw.max())
    return w / w.sum(), mu + (a * s2 / var) * (x_t - a * mu), s2 - (a * s2) ** 2 / var


@pytest.mark.parametrize("t", [3, 30, 120])
def test_target_expectation_is_the_exact_eps_jacobian(t):
    # Second-order Tweedie: E[(I - r r^T) v | x_t] = b (d eps*/dx_t) v, r = eps - eps*(x_t). The
    # posterior of a 4-mode square is exact; (x0, eps) pairs drawn from it at a fixed x_t are fed
    # through `second_order_target` (Monte Carlo, 200 000 draws; tolerance 5 standard errors).
    schedule = mj.linear_schedule()
    mix = mx.grid_2d("square", size=2)
    a, b = float(schedule.sqrt_alphas_bar[t]), float(schedule.sqrt_one_minus_alphas_bar[t])
    mu = np.asarray(mix.means, np.float64)
    rng = np.random.default_rng(t)
    for point in (mu[0], (mu[0] + mu[1]) / 2, mu.mean(0) + 0.1):
        x_t = a * point
        w, pm, pv = _posterior(mix, x_t, a, b)
        n = 200_000
        c = rng.choice(len(w), n, p=w)
        x0 = pm[c] + np.sqrt(pv) * rng.standard_normal((n, 2))
        noise = (x_t - a * x0) / b
        eps = oracle_eps(mix, schedule)
        tt = jnp.full((1,), t, jnp.int32)
        e = np.asarray(eps(jnp.asarray(x_t[None], jnp.float32), tt), np.float64)[0]
        jac = np.asarray(jax.jacobian(lambda x: eps(x[None], tt)[0])(
            jnp.asarray(x_t, jnp.float32)), np.float64)
        for v in (np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([1.0, -1.0])):
            target = np.asarray(second_order_target(jnp.asarray(noise - e),
                                                    jnp.broadcast_to(jnp.asarray(v), (n, 2))))
            se = target.std(0) / np.sqrt(n)
            np.testing.assert_array_less(np.abs(target.mean(0) - b * jac @ v), 5 * se + 1e-3)


def test_without_the_weight_the_loss_is_the_plain_epsilon_mse_with_the_same_draws():
    schedule = mj.linear_schedule(100)
    mix = mx.grid_2d("square", size=3)
    x0 = mix.sample(jax.random.key(1), 256)
    eps = oracle_eps(mx.grid_2d("square", std=0.2, size=3), schedule)
    key = jax.random.key(7)
    k_t, k_noise = jax.random.split(key)
    t = jax.random.randint(k_t, (256,), 0, 100)
    noise = jax.random.normal(k_noise, x0.shape)
    by_hand = jnp.mean((eps(q_sample(schedule, x0, t, noise), t) - noise) ** 2)
    np.testing.assert_allclose(eps_loss(eps, schedule, x0, key), by_hand, rtol=1e-6)
    np.testing.assert_allclose(eps_loss(eps, schedule, x0, key, jacobian_weight=0.0), by_hand,
                               rtol=1e-6)


def test_the_jacobian_term_is_stationary_at_the_exact_denoiser_and_pushes_a_smooth_one_sharper():
    # A one-parameter family: the exact eps of the data's modes with their std scaled by s (s > 1
    # switches between modes too slowly, s < 1 too fast). With r held fixed (stop-gradient) the
    # term's gradient in s is E[(b J v - target) . d(b J v)/ds], zero where b J = E[target | x_t],
    # i.e. at s = 1; it must point toward s = 1 from both sides. t < 100, where modes are decided.
    schedule = mj.linear_schedule()
    mix = mx.grid_2d("square", size=3)
    x0 = mix.sample(jax.random.key(2), 50_000)
    key = jax.random.key(3)
    proposal = focused_timesteps(1000, 100, 1.0)
    leaves, treedef = jax.tree_util.tree_flatten(mix)

    def term(scale):
        m = jax.tree_util.tree_unflatten(treedef, [leaves[0], leaves[1] * scale] + leaves[2:])
        eps = oracle_eps(m, schedule)
        return (eps_loss(eps, schedule, x0, key, proposal, jacobian_weight=1.0)
                - eps_loss(eps, schedule, x0, key, proposal))

    grad = jax.jit(jax.grad(term))
    g = {s: float(grad(s)) for s in (0.5, 1.0, 2.0, 4.0)}
    assert g[0.5] < 0 < g[2.0] < g[4.0], g
    assert abs(g[1.0]) < 0.1 * min(-g[0.5], g[2.0]), g


def test_train_config_checks_the_weight():
    with pytest.raises(InputError, match="jacobian_weight"):
        TrainConfig(jacobian_weight=-1.0)


def test_sharpness_measures_on_exact_and_smoothed_denoisers():
    # The exact x0_hat switches modes abruptly at small t and maps (almost) no x_t between the
    # modes; a smoothed one has a smaller midpoint slope (2x here) and maps more mass between them.
    schedule = mj.linear_schedule()
    mix = mx.grid_2d("square", size=3)
    wide = mx.grid_2d("square", std=0.2, size=3)
    cfg = smoothness.Config(**{**smoothness.PRESETS["quick"], "timesteps": [5, 100],
                               "heldout_samples": 20_000, "preset": "quick"})
    key = jax.random.key(0)
    exact = smoothness.sharpness(oracle_x0(mix, schedule), schedule, mix, key, cfg)
    smooth = smoothness.sharpness(oracle_x0(wide, schedule), schedule, mix, key, cfg)
    assert exact["5"]["between_mass"] < 0.002 < smooth["5"]["between_mass"]
    assert exact["5"]["midpoint_slope"] > 1.5 * smooth["5"]["midpoint_slope"]
    # The slope is the derivative along the pair: equal to a finite difference of x0_hat.
    slopes = smoothness.midpoint_slopes(oracle_x0(wide, schedule), schedule, mix, 100)
    means = np.asarray(mix.means)
    a = float(schedule.sqrt_alphas_bar[100])
    pair = neighbour_pairs(mix)[0]
    u = (means[pair[1]] - means[pair[0]]) / np.linalg.norm(means[pair[1]] - means[pair[0]])
    mid = a * (means[pair[0]] + means[pair[1]]) / 2
    h = 1e-3
    f = oracle_x0(wide, schedule)
    tt = jnp.full((2,), 100, jnp.int32)
    ends = np.asarray(f(jnp.asarray(np.stack([mid - h * u, mid + h * u]), jnp.float32), tt))
    np.testing.assert_allclose(slopes[0], (ends[1] - ends[0]) @ u / (2 * h), rtol=2e-2)


def test_heldout_loss_of_the_exact_denoiser_is_the_floor():
    schedule = mj.linear_schedule()
    mix = mx.grid_2d("square", size=3)
    key = jax.random.key(4)
    exact = smoothness.heldout_loss(oracle_eps(mix, schedule), schedule, mix, key, 40_000)
    smooth = smoothness.heldout_loss(oracle_eps(mx.grid_2d("square", std=0.2, size=3), schedule),
                                     schedule, mix, key, 40_000)
    assert exact < smooth


def test_minibatch_denoiser_against_a_float64_reference_and_the_exact_posterior():
    schedule = mj.linear_schedule()
    mix = mx.grid_2d("square", size=3)
    data = mix.sample(jax.random.key(5), 2000)
    x_t = jax.random.normal(jax.random.key(6), (64, 2))
    t = jax.random.randint(jax.random.key(7), (64,), 0, 300)
    got = np.asarray(minibatch_x0(schedule, x_t, t, data), np.float64)
    d, x = np.asarray(data, np.float64), np.asarray(x_t, np.float64)
    a = np.asarray(schedule.sqrt_alphas_bar, np.float64)[np.asarray(t)][:, None]
    b2 = 1.0 - a**2
    logits = -np.sum((x[:, None, :] - a[:, :, None] * d[None]) ** 2, -1) / (2 * b2)
    w = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(got, (w / w.sum(1, keepdims=True)) @ d, atol=2e-4)
    # With many data points it estimates the exact E[x0 | x_t] where p_t has mass (t = 200).
    big = mix.sample(jax.random.key(8), 20_000)
    tt = jnp.full((256,), 200, jnp.int32)
    xs = q_sample(schedule, mix.sample(jax.random.key(9), 256), tt,
                  jax.random.normal(jax.random.key(10), (256, 2)))
    err = np.abs(np.asarray(minibatch_x0(schedule, xs, tt, big))
                 - np.asarray(oracle_x0(mix, schedule)(xs, tt)))
    assert np.median(err) < 0.02


def test_between_loss_charges_a_smoothed_denoiser_more_than_the_exact_one():
    schedule = mj.linear_schedule()
    mix = mx.grid_2d("square", size=3)
    x0 = mix.sample(jax.random.key(0), 1000)
    key = jax.random.key(1)
    exact = float(between_loss(oracle_eps(mix, schedule), schedule, x0, key, 50))
    smooth = float(between_loss(oracle_eps(mx.grid_2d("square", std=0.2, size=3), schedule),
                                schedule, x0, key, 50))
    assert exact < 0.3 * smooth, (exact, smooth)


def test_jacobian_t_max_confines_the_term_to_small_timesteps():
    # Every t drawn from [100, 200): with t_max = 100 the term vanishes (the plain loss, same
    # draws); with t_max = 200 it is there.
    schedule = mj.linear_schedule()
    mix = mx.grid_2d("square", size=3)
    x0 = mix.sample(jax.random.key(1), 512)
    eps = oracle_eps(mx.grid_2d("square", std=0.2, size=3), schedule)
    proposal = jnp.where((jnp.arange(1000) >= 100) & (jnp.arange(1000) < 200), 0.01, 0.0)
    key = jax.random.key(2)
    plain = float(eps_loss(eps, schedule, x0, key, proposal))
    cut = float(eps_loss(eps, schedule, x0, key, proposal, 1.0, jacobian_t_max=100))
    kept = float(eps_loss(eps, schedule, x0, key, proposal, 1.0, jacobian_t_max=200))
    assert cut == pytest.approx(plain, rel=1e-6)
    assert kept > plain * 1.05

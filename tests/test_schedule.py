import jax.numpy as jnp
import numpy as np
import pytest

from mi_jax.diffusion import schedule as sch
from mi_jax.diffusion.forward import predict_x0, q_sample
from mi_jax.validation import InputError


def test_official_schedule_values():
    s = sch.linear_schedule()
    assert s.num_steps == 1000
    assert float(s.betas[0]) == pytest.approx(0.001) and float(s.betas[-1]) == pytest.approx(0.2)
    ab = np.cumprod(1 - np.linspace(0.001, 0.2, 1000))
    # The digest's table of alpha_bar for this schedule (computed there with NumPy).
    for t, value in [(0, 0.999), (9, 0.981), (20, 0.939), (35, 0.851), (50, 0.736), (100, 0.328),
                     (200, 0.014)]:
        assert ab[t] == pytest.approx(value, abs=1e-3)
        assert float(s.sqrt_alphas_bar[t]) ** 2 == pytest.approx(ab[t], rel=1e-5)
    assert ab[-1] < 1e-40  # underflows float32 ...
    for name, value in s._asdict().items():  # ... yet every constant the code uses is finite
        assert np.all(np.isfinite(np.asarray(value))), name
    assert float(s.sqrt_recip_alphas_bar[-1]) == pytest.approx(ab[-1] ** -0.5, rel=1e-4)


def test_coefficients_are_consistent_float64():
    s = sch.linear_schedule()
    betas = np.linspace(0.001, 0.2, 1000)
    ab = np.cumprod(1 - betas)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    t = np.arange(1, 300)
    # Posterior mean from x0_hat equals the epsilon form used by the sampler.
    x, eps = 0.7, -0.3
    x0 = (x - np.sqrt(1 - ab[t]) * eps) / np.sqrt(ab[t])
    mean_x0 = (np.sqrt(ab_prev[t]) * betas[t] / (1 - ab[t]) * x0
               + np.sqrt(1 - betas[t]) * (1 - ab_prev[t]) / (1 - ab[t]) * x)
    mean_eps = np.asarray(s.sqrt_recip_alphas)[t] * (x - np.asarray(s.eps_coef)[t] * eps)
    np.testing.assert_allclose(mean_eps, mean_x0, rtol=1e-5)
    ddim = np.sqrt(ab_prev[t]) * x0 + np.sqrt(1 - ab_prev[t]) * eps
    ddim_ours = np.asarray(s.sqrt_recip_alphas)[t] * x + np.asarray(s.ddim_eps_coef)[t] * eps
    np.testing.assert_allclose(ddim_ours, ddim, rtol=1e-5, atol=1e-6)
    post_var = betas[t] * (1 - ab_prev[t]) / (1 - ab[t])
    np.testing.assert_allclose(np.asarray(s.sigma_small)[t] ** 2, post_var, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(s.sigma_large)[t] ** 2, betas[t], rtol=1e-5)


def test_forward_and_x0_inverse():
    s = sch.linear_schedule()
    x0 = jnp.array([[0.5], [-1.2], [2.0]])
    noise = jnp.array([[0.1], [0.3], [-0.8]])
    t = jnp.array([0, 9, 50])
    xt = q_sample(s, x0, t, noise)
    np.testing.assert_allclose(predict_x0(s, xt, t, noise), x0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [sch.quadratic_schedule, sch.cosine_schedule])
def test_other_schedules_monotone(make):
    s = make(T=200)
    a = np.asarray(s.sqrt_alphas_bar)
    assert np.all(np.diff(a) < 0) and 0 < a[-1] < a[0] <= 1


def test_respaced_schedule_keeps_alpha_bar():
    full = sch.linear_schedule()
    ts = sch.strided_timesteps(1000, 100)
    sub, kept = sch.respace(np.asarray(full.betas, np.float64), ts)
    assert sub.num_steps == len(kept) == 100 and kept[0] == 0 and kept[-1] == 999
    np.testing.assert_allclose(np.asarray(sub.sqrt_alphas_bar)[:60],
                               np.asarray(full.sqrt_alphas_bar)[kept][:60], rtol=1e-5)


@pytest.mark.parametrize("args, name", [
    (dict(T=1), "T"), (dict(T=10.5), "T"), (dict(beta_start=0.0), "beta_start"),
    (dict(beta_end=1.5), "beta_end"), (dict(beta_start=float("nan")), "beta_start"),
])
def test_bad_schedules(args, name):
    with pytest.raises(InputError, match=f"^{name}"):
        sch.linear_schedule(**args)
    with pytest.raises(InputError, match="^schedule"):
        sch.make_schedule("sigmoid")


def test_sampling_plan_is_the_full_strided_or_dense_tail_respacing():
    import mi_jax as mj

    s = mj.linear_schedule(100)
    full, ts = mj.sampling_plan(s)
    assert full is s and ts.tolist() == list(range(100))
    assert mj.sampling_plan(s, 100)[0] is s
    for steps, dense, want in ((20, 0, mj.strided_timesteps(100, 20)),
                               (15, 10, mj.dense_tail_timesteps(100, 15, 10))):
        sub, kept = mj.sampling_plan(s, steps, dense)
        ref, ref_ts = mj.respace(np.asarray(s.betas, np.float64), want)
        assert kept.tolist() == ref_ts.tolist()
        np.testing.assert_array_equal(np.asarray(sub.betas), np.asarray(ref.betas))
    with pytest.raises(mj.InputError, match="^sampling_steps=200: must be <= 100"):
        mj.sampling_plan(s, 200)

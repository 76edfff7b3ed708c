"""The sampler as solver + observers: composition, clocks on respaced schedules, the dense-tail
sampler, input checks before the scan, and no retracing on the public entry points."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mi_jax as mj
from mi_jax.diffusion import schedule as sch
from mi_jax.nets import _MLP_CACHE
from mi_jax.sampling import chain
from mi_jax.validation import InputError

MIX = mj.mixture_1d([1.0, 2.0, 3.0])


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MaxAbsX:
    """A user-defined observer: the largest |x_t| each sample reaches over the chain."""

    sample_axis = 0

    def init(self, n, shape, dtype, num_steps):
        return jnp.zeros((n,), dtype)

    def update(self, state, view):
        return jnp.maximum(state, jnp.max(jnp.abs(view.x_t.reshape(state.shape[0], -1)), axis=1))

    def finalize(self, state):
        return state


def _strided(T, steps):
    full = mj.linear_schedule(T)
    rs, ts = mj.respace(np.asarray(full.betas), mj.strided_timesteps(T, steps))
    return full, rs, ts


def test_train_clock_windows_select_training_timesteps_on_a_respaced_schedule():
    full, rs, ts = _strided(1000, 100)
    oracle = mj.oracle_eps(MIX, full)
    n = 64
    observers = {"train": mj.window_variance([(0, 100), (0, 10), (500, 1000)], clock="train"),
                 "index": mj.window_variance([(0, 10)], clock="index"), "rec": mj.record(n)}
    out = mj.sample(oracle, rs, jax.random.key(0), n, (1,), net_timesteps=ts,
                    observers=observers).observed
    traj = np.asarray(out["rec"]["x0"], np.float64)[:, :, 0]  # (100, n): slot = schedule index
    for w, (lo, hi) in enumerate([(0, 100), (0, 10), (500, 1000)]):
        steps = np.flatnonzero((ts >= lo) & (ts < hi))  # the indices whose training t is inside
        ref = np.var(traj[steps], axis=0) if len(steps) > 1 else np.zeros(n)
        np.testing.assert_allclose(out["train"].var[w], ref, rtol=2e-3, atol=1e-9)
    # Training-time [0, 100) on a stride-10 schedule is exactly the last 10 sampling steps.
    assert np.array_equal(np.flatnonzero(ts < 100), np.arange(10))
    np.testing.assert_array_equal(out["train"].var[0], out["index"].var[0])
    # Training-time [0, 10) holds one sampled step (t = 0): no spread, not the index window.
    assert np.all(out["train"].var[1] == 0) and np.all(out["index"].var[0] > 0)


def test_one_clock_default_everywhere():
    """Every windowed observer, the paper's set and the detector benchmark count windows on the
    training clock unless told otherwise (a window then means the same timesteps whatever the
    sampling plan)."""
    import inspect

    from mi_jax.detection.benchmark import standard_detectors

    makers = (mj.window_variance, mj.region_mean_variance, mj.preemptive_flag,
              mj.jacobian_trace, mj.paper_observers, standard_detectors)
    assert {inspect.signature(f).parameters["clock"].default for f in makers} == {"train"}
    paper = mj.paper_observers(flag_threshold=0.1)
    assert {o.clock for o in paper.values() if hasattr(o, "clock")} == {"train"}
    assert {o.clock for o in mj.paper_observers(clock="index").values()
            if hasattr(o, "clock")} == {"index"}


def test_dense_tail_sampler_equals_the_full_sampler_on_its_dense_part():
    T, dense = 1000, 50
    ts = mj.dense_tail_timesteps(T, 50, dense)
    assert len(ts) == 100 and ts[0] == 0 and ts[-1] == T - 1
    assert np.array_equal(ts[:dense], np.arange(dense)) and np.all(np.diff(ts) > 0)
    full = mj.linear_schedule(T)
    tail, kept = mj.respace(np.asarray(full.betas), ts)
    # The dense part's constants are the full schedule's (to float32 rounding: respace derives
    # its betas from alpha_bar ratios in float64).
    for name, value in tail._asdict().items():
        np.testing.assert_allclose(np.asarray(value)[:dense], np.asarray(getattr(full, name))[:dense],
                                   rtol=1e-6, atol=0, err_msg=name)
    # Same noise and same x at t = dense - 1: the chains agree (to float rounding) from there on.
    eps_fn = mj.oracle_eps(MIX, full)
    x_mid = jax.random.normal(jax.random.key(1), (200, 1))
    kw = dict(observers={"hal": mj.window_variance([(0, 10)])}, x_start=x_mid)
    a = chain.reverse(eps_fn, sch.truncate(full, dense), jax.random.key(2), 200, (1,), **kw)
    b = chain.reverse(eps_fn, sch.truncate(tail, dense), jax.random.key(2), 200, (1,),
                      net_timesteps=jnp.asarray(kept[:dense]), **kw)
    np.testing.assert_allclose(np.asarray(a.x), np.asarray(b.x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(a.observed["hal"].var),
                               np.asarray(b.observed["hal"].var), rtol=1e-4, atol=1e-12)
    assert not np.allclose(np.asarray(a.x), np.asarray(x_mid), atol=1e-3)  # it did move
    # ... and the official window t in [0, 10) is available at 100 of the 1000 network calls.
    res = mj.sample(eps_fn, tail, jax.random.key(3), 100, (1,), net_timesteps=kept,
                    observers={"hal": mj.window_variance([(0, 10)])})
    assert res.hal.shape == (100,) and np.all(res.hal > 0)
    with pytest.raises(InputError, match="^dense"):
        mj.dense_tail_timesteps(T, 10, T)


def test_ddim_on_a_respaced_schedule_with_composed_observers():
    full, rs, ts = _strided(1000, 50)
    oracle = mj.oracle_eps(MIX, full)
    observers = {"hal": mj.window_variance([(0, 100)]), "max_abs": MaxAbsX(), "rec": mj.record(32)}
    res = mj.sample(oracle, rs, jax.random.key(4), 32, (1,), solver=mj.DDIM(), net_timesteps=ts,
                    observers=observers)
    xt = np.asarray(res.observed["rec"]["xt"])[:, :, 0]
    np.testing.assert_allclose(res.observed["max_abs"], np.abs(xt).max(axis=0), rtol=1e-6)
    # `hal` reads the 'hal' observer's first window; every other output is under its own name.
    assert res.hal.shape == (32,) and set(res.observed) == {"hal", "max_abs", "rec"}
    # DDIM uses no step noise: from the same x_T, other keys give the same samples.
    x_T = jax.random.normal(jax.random.key(5), (32, 1))
    runs = [chain.reverse(oracle, rs, jax.random.key(k), 32, (1,), solver=mj.DDIM(),
                          net_timesteps=jnp.asarray(ts), x_start=x_T).x for k in (6, 7)]
    np.testing.assert_array_equal(np.asarray(runs[0]), np.asarray(runs[1]))
    assert np.all(np.isfinite(res.x))
    # Every mode is reached (a 50-step sampler leaves the k-sigma balls often: BUILD_NOTES).
    assert set(np.argmin(np.abs(res.x - np.array([1.0, 2.0, 3.0])), axis=1)) == {0, 1, 2}


@pytest.mark.parametrize("kwargs, message", [
    (dict(observers={"hal": mj.window_variance([(4, 6)])}, net_timesteps=np.arange(0, 60, 3)),
     "^hal=.*none of the sampled timesteps"),
    (dict(observers=mj.paper_observers((0, 21), clock="index")),
     r"^hal=\[\[0, 21\]\]: windows must end at or before 20 \(the index clock"),
    (dict(observers=mj.paper_observers((0, 59)), net_timesteps=np.arange(0, 60, 3)),
     r"^hal=\[\[0, 59\]\]: windows must end at or before 58 \(the train clock"),
])
def test_empty_or_out_of_range_windows_fail_in_one_line(kwargs, message):
    schedule = mj.linear_schedule(20)
    with pytest.raises(InputError, match=message):
        mj.sample(mj.oracle_eps(MIX, schedule), schedule, jax.random.key(0), 8, (1,), **kwargs)


def test_eps_fn_of_the_wrong_shape_fails_before_the_scan():
    schedule = mj.linear_schedule(20)
    with pytest.raises(InputError, match=r"^eps_fn: returned ShapeDtypeStruct \(8,\) float32 "
                                         r"for x_t \(8, 1\) float32"):
        mj.sample(lambda x, t: x[:, 0], schedule, jax.random.key(0), 8, (1,))
    with pytest.raises(InputError, match="^eps_fn: calling it on x_t"):
        mj.sample(lambda x, t: x @ jnp.ones((3, 1)), schedule, jax.random.key(0), 8, (1,))


def _counting(network, traces):
    def apply(params, x, t):
        traces.append(1)
        return network.apply(params, x, t)

    return mj.Network("counting", network.init, apply)


def test_network_sampler_does_not_retrace_for_new_params_windows_or_thresholds():
    net = mj.make_mlp(1, width=16)
    traces = []
    counting = _counting(net, traces)
    schedule = mj.linear_schedule(20)
    keys = jax.random.split(jax.random.key(5), 3)
    p1 = jax.vmap(net.init)(keys)
    p2 = jax.vmap(net.init)(jax.random.split(jax.random.key(6), 3))
    first = mj.sample(counting, schedule, keys, 16, (1,), params=p1, models=mj.Stacked(),
                      observers=mj.paper_observers((0, 5), flag_threshold=[0.1, 0.2, 0.3]))
    count = len(traces)
    second = mj.sample(counting, schedule, keys, 16, (1,), params=p2, models=mj.Stacked(),
                       observers=mj.paper_observers((2, 9), flag_threshold=[0.3, 0.2, 0.1]))
    assert count >= 1 and len(traces) == count
    assert not np.array_equal(first.x, second.x)
    # Same for a sweep driver over 3 models (no flag: another program, traced once).
    mj.sample_models(counting, p1, schedule, keys, 16, (1,), observers=mj.paper_observers((1, 4)))
    count = len(traces)
    mj.sample_models(counting, p2, schedule, keys, 16, (1,), observers=mj.paper_observers((3, 7)))
    assert len(traces) == count


def test_networks_with_equal_specs_hash_equal():
    a = mj.make_mlp(2, width=8)
    _MLP_CACHE.clear()
    b = mj.make_mlp(2, width=8)
    assert a is not b and a == b and hash(a) == hash(b)
    assert mj.make_mlp(2, width=16) != a
    plain = mj.Network("x", a.init, a.apply)
    assert plain == mj.Network("x", a.init, a.apply) and plain != a


def test_train_config_takes_any_optax_optimiser():
    net, schedule = mj.make_mlp(1, width=8), mj.linear_schedule(50)
    data = MIX.sample(jax.random.key(7), 512)

    def run(tx):
        config = mj.TrainConfig(batch_size=64, tx=tx)
        state = mj.init_state(net, config, jax.random.key(8))
        before = jax.device_get(state.params)  # train donates the state's buffers
        return before, mj.train(net, schedule, config, state, data, 512, 5, chunk_steps=5)[0]

    frozen0, frozen = run(optax.sgd(0.0))
    jax.tree.map(np.testing.assert_array_equal, frozen0, frozen.params)  # lr 0: nothing moves
    _, sgd = run(optax.sgd(1e-2))
    _, adam = run(None)  # the default: Adam at learning_rate
    diff = jax.tree.leaves(jax.tree.map(lambda u, v: float(jnp.max(jnp.abs(u - v))),
                                        sgd.params, adam.params))
    assert max(diff) > 1e-4
    with pytest.raises(InputError, match="^tx"):
        mj.TrainConfig(tx="adam")


def test_take_model_selects_one_model_of_a_stack():
    net = mj.make_mlp(1, width=8)
    keys = jax.random.split(jax.random.key(9), 3)
    stack = jax.vmap(net.init)(keys)
    one = mj.take_model(stack, 2)
    jax.tree.map(np.testing.assert_array_equal, one, net.init(keys[2]))


def test_training_driver_does_not_retrace_for_a_new_state_or_data():
    net = mj.make_mlp(1, width=8)
    traces = []
    counting = _counting(net, traces)
    schedule = mj.linear_schedule(50)
    config = mj.TrainConfig(batch_size=32)
    data = jnp.stack([MIX.sample(jax.random.key(11), 256), MIX.sample(jax.random.key(12), 256)])
    n_valid = jnp.full((2,), 256, jnp.int32)

    def fresh(seed):
        return jax.vmap(lambda k: mj.init_state(counting, config, k))(
            jax.random.split(jax.random.key(seed), 2))

    mj.train_models(counting, schedule, config, fresh(0), data, n_valid, 10, chunk_steps=5)
    count = len(traces)
    # A new state, new data and an equal (not identical) config reuse the compiled chunk.
    mj.train_models(counting, schedule, mj.TrainConfig(batch_size=32), fresh(1), data + 0.5,
                    n_valid, 10, chunk_steps=5)
    assert count >= 1 and len(traces) == count


def test_jacobian_trace_is_exact_for_a_single_gaussian():
    """The exact eps of N(mu, s^2 I) noised to t is b (x - a mu) / v with v = a^2 s^2 + b^2, so
    its Jacobian is (b / v) I and tr = D b / v for every x: Hutchinson is exact with any probe.
    The observer's mean over the window must equal the float64 closed form."""
    import mi_jax as mj

    sched = mj.linear_schedule(100, 0.001, 0.2)
    mix = mj.GaussianMixture([[0.5, -1.0]], stds=0.3)
    for probes, window in ((1, (0, 10)), (3, (20, 35))):
        res = mj.sample(mj.oracle_eps(mix, sched), sched, jax.random.key(probes), 32, (2,),
                        observers={"tr": mj.jacobian_trace(window, probes=probes)})
        t = np.arange(*window)
        a = np.asarray(sched.sqrt_alphas_bar, np.float64)[t]
        b = np.asarray(sched.sqrt_one_minus_alphas_bar, np.float64)[t]
        expected = np.mean(2 * b / (a**2 * 0.3**2 + b**2))
        np.testing.assert_allclose(np.asarray(res.observed["tr"]), expected, rtol=1e-5)
    with pytest.raises(mj.InputError, match="probes"):
        mj.jacobian_trace((0, 10), probes=0)
    # A trained-style network (custom-VJP LayerNorm) goes through the reverse-mode estimate.
    net = mj.make_mlp(2, width=16)
    out = mj.sample(net, sched, jax.random.key(1), 8, (2,), params=net.init(jax.random.key(0)),
                    observers={"tr": mj.jacobian_trace((0, 5))})
    assert out.observed["tr"].shape == (8,) and np.isfinite(out.observed["tr"]).all()



def test_region_mean_variance_is_the_variance_of_each_regions_mean_over_the_window():
    grid = mj.grid_2d(size=3)
    full, rs, ts = _strided(1000, 100)
    n, windows = 64, [(0, 100), (200, 400)]
    regions = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 3.0]])  # x, y, a weighted mix
    observers = {"rmv": mj.region_mean_variance(windows, regions), "rec": mj.record(n),
                 "pix": mj.window_variance(windows, regions=regions)}
    out = mj.sample(mj.oracle_eps(grid, full), rs, jax.random.key(3), n, (2,), net_timesteps=ts,
                    observers=observers).observed
    traj = np.asarray(out["rec"]["x0"], np.float64)  # (steps, n, 2)
    means = traj @ (regions / regions.sum(1, keepdims=True)).T  # (steps, n, R)
    for w, (lo, hi) in enumerate(windows):
        steps = np.flatnonzero((ts >= lo) & (ts < hi))
        np.testing.assert_allclose(out["rmv"][w], np.var(means[steps], axis=0), rtol=2e-3,
                                   atol=1e-9)
    # One coordinate per region: the mean is the coordinate, so both observers agree there.
    np.testing.assert_allclose(out["rmv"][..., :2], out["pix"].var_regions[..., :2], rtol=1e-4)
    # Mixed regions differ: the variance of a mean is not the mean of variances.
    assert not np.allclose(out["rmv"][..., 2], out["pix"].var_regions[..., 2], rtol=1e-2)
    with pytest.raises(InputError, match="regions"):
        mj.region_mean_variance(windows, -regions)

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mi_jax as mj
from mi_jax.data import mixtures as mx
from mi_jax.data.support import true_outside_rate
from mi_jax.sampling import chain, sampler
from mi_jax.sampling import observers as obs
from mi_jax.validation import InputError


def exact_gaussian_chain(schedule, mu, s, variance="large"):
    """Mean and variance of the sampler's output for data N(mu, s^2) and the exact eps (float64).

    With Gaussian data the exact eps is affine in x_t, so every reverse step is an affine map plus
    Gaussian noise and the output law is Gaussian with moments given by this recursion.
    """
    betas = np.asarray(schedule.betas, np.float64)
    ab = np.cumprod(1 - betas)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    m, v = 0.0, 1.0
    for t in range(len(betas) - 1, -1, -1):
        a, b2 = np.sqrt(ab[t]), 1 - ab[t]
        vt = a * a * s * s + b2
        # eps(x) = sqrt(b2) (x - a mu) / vt ; mean = (x - beta/sqrt(b2) eps) / sqrt(alpha)
        gain = (1 - betas[t] / vt) / np.sqrt(1 - betas[t])
        shift = betas[t] * a * mu / vt / np.sqrt(1 - betas[t])
        sig2 = 0.0 if t == 0 else (betas[t] if variance == "large"
                                   else betas[t] * (1 - ab_prev[t]) / (1 - ab[t]))
        m, v = gain * m + shift, gain * gain * v + sig2
    return m, v


@pytest.mark.parametrize("s, variance", [(1.0, "large"), (0.05, "large"), (0.3, "small")])
def test_oracle_sampler_matches_exact_gaussian_law(s, variance):
    schedule = mj.linear_schedule()
    g = mj.GaussianMixture([[0.7]], s)
    n = 20_000
    r = mj.sample(mj.oracle_eps(g, schedule), schedule, jax.random.key(1), n, (1,),
                  solver=mj.DDPM(variance))
    m, v = exact_gaussian_chain(schedule, 0.7, float(g.stds[0]), variance)
    x = r.x[:, 0].astype(np.float64)
    assert abs(x.mean() - m) < 4 * np.sqrt(v / n)
    assert abs(x.var() - v) < 4 * v * np.sqrt(2 / n)
    if s == 1.0:  # for a wide Gaussian the discretised chain is essentially exact
        assert m == pytest.approx(0.7, abs=1e-3) and v == pytest.approx(1.0, rel=2e-3)


def test_oracle_mixture_weights_and_hallucination_floor():
    schedule = mj.linear_schedule()
    weights = np.array([0.5, 0.3, 0.2])
    m = mj.GaussianMixture([[-2.0], [0.0], [2.0]], 0.3, weights)
    n = 20_000
    r = mj.sample(mj.oracle_eps(m, schedule), schedule, jax.random.key(2), n, (1,))
    assert r.num_nonfinite == 0
    nearest = np.argmin(np.abs(r.x - np.array([-2.0, 0.0, 2.0])), axis=1)
    freq = np.bincount(nearest, minlength=3) / n
    assert np.all(np.abs(freq - weights) < 4 * np.sqrt(weights * (1 - weights) / n))
    for k in (2.0, 3.0):
        rate = float(mj.hallucination_rate(r.x, m, k))
        true = float(true_outside_rate(m, k))
        assert abs(rate - true) < 4 * np.sqrt(true * (1 - true) / n) + 1e-4, (k, rate, true)


def test_streaming_variance_equals_stored_trajectory_numpy(briefly_trained_grid_net):
    # A briefly trained net, not an untrained one: an untrained chain blows up (~1e24, see the
    # fixture) until its trajectory is NaN or its variance is below float32 resolution.
    schedule = mj.linear_schedule()
    m = mx.grid_2d("square")
    net, params = briefly_trained_grid_net
    n = 64
    windows = np.array([[0, 10], [20, 35], [0, 100], [5, 6]])
    observers = {"x0": obs.window_variance(windows, "x0"), "xt": obs.window_variance(windows, "xt"),
                 "rec": obs.record(n)}
    for eps_fn in (mj.oracle_eps(m, schedule), net.eps_fn(params)):
        out = jax.jit(lambda k, o: chain.reverse(eps_fn, schedule, k, n, (2,), observers=o))(
            jax.random.key(4), observers).observed
        traj = np.asarray(out["rec"]["x0"], np.float64)  # (T, n, 2), slot t = timestep t
        xt = np.asarray(out["rec"]["xt"], np.float64)
        assert np.all(np.isfinite(traj)) and np.all(np.isfinite(xt))  # NaN == NaN would pass
        for w, (lo, hi) in enumerate(windows):
            ref = np.mean(np.var(traj[lo:hi], axis=0), axis=-1)  # official: np.var, mean over dims
            np.testing.assert_allclose(out["x0"].var[w], ref, rtol=2e-3, atol=1e-9)
            np.testing.assert_allclose(out["xt"].var[w], np.mean(np.var(xt[lo:hi], axis=0), -1),
                                       rtol=2e-3, atol=1e-9)
        # The official filter: the last 10 sampling steps of the stored list (sampling order).
        sampling_order = traj[::-1]
        np.testing.assert_allclose(out["x0"].var[0], np.var(sampling_order[-10:], axis=0).mean(-1),
                                   rtol=2e-3, atol=1e-9)


@pytest.fixture(scope="module")
def briefly_trained_grid_net():
    """A 2D net after 300 small steps: enough to predict eps at large t, far from converged.

    (An untrained net cannot be used here: with this schedule the reverse mean multiplies x_t by
    1/sqrt(alpha_t) each step, so unless eps_hat tracks the noise, x_t grows by ~1e24 over the
    chain -- a property of the model, not of the sampler's arithmetic.)
    """
    from mi_jax.training import train as tr
    schedule, m, net = mj.linear_schedule(), mx.grid_2d("square"), mj.make_mlp(2)
    config = tr.TrainConfig(batch_size=256)
    state = tr.init_state(net, config, jax.random.key(5))
    data = m.sample(jax.random.key(6), 4096)
    state, _ = tr.train(net, schedule, config, state, data, 4096, 300, chunk_steps=300)
    return net, state.params


@pytest.mark.parametrize("solver", [mj.DDPM("large"), mj.DDPM("small"), mj.DDIM()])
def test_full_run_has_no_nonfinite_values(solver, briefly_trained_grid_net):
    schedule = mj.linear_schedule()
    net, params = briefly_trained_grid_net
    observers = mj.paper_observers([(0, 10), (20, 35), (900, 1000)], record=8,
                                   track=("x0", "xt", "eps"))
    runs = [mj.sample(mj.oracle_eps(mx.grid_2d("rotated"), schedule), schedule, jax.random.key(7),
                      256, (2,), solver=solver, observers=observers)]
    if solver != mj.DDIM():
        # Deterministic DDIM has no contraction at large t (x_{t-1} ~ 1.118 x_t - 0.118 eps_hat), so
        # an under-trained net's eps errors legitimately compound; it is checked with the oracle.
        runs.append(mj.sample(net, schedule, jax.random.key(6), 256, (2,), params=params,
                              solver=solver, observers=observers))
    for r in runs:
        assert r.num_nonfinite == 0 and np.all(np.isfinite(r.x))
        assert set(r.observed) == {"hal", "var_xt", "var_eps", "eps_norm_last", "trajectory"}
        for path, arr in jax.tree_util.tree_leaves_with_path(r.observed):
            assert np.all(np.isfinite(arr)), jax.tree_util.keystr(path)
        # x0_hat at t = T-1 divides by sqrt(alpha_bar) ~ 1e-24 yet stays finite in float32.
        assert np.all(np.isfinite(r.observed["trajectory"]["x0"][-1]))


def test_network_sampler_agrees_with_function_sampler_and_stacks():
    schedule = mj.linear_schedule(T=50)
    net = mj.make_mlp(1)
    keys = jax.random.split(jax.random.key(7), 3)
    params = jax.vmap(net.init)(keys)
    stacked = mj.sample(net, schedule, keys, 40, (1,), params=params, models=mj.Stacked(),
                        chunk_size=16)
    assert stacked.x.shape == (3, 40, 1) and stacked.hal.shape == (3, 40)
    for i in range(3):
        p = jax.tree.map(lambda a: a[i], params)
        one = mj.sample(net, schedule, keys[i], 40, (1,), params=p, chunk_size=16)
        fn = mj.sample(net.eps_fn(p), schedule, keys[i], 40, (1,), chunk_size=16)
        np.testing.assert_allclose(stacked.x[i], one.x, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(stacked.hal[i], one.hal, rtol=1e-4, atol=1e-8)
        np.testing.assert_allclose(fn.x, one.x, rtol=1e-5, atol=1e-5)


def test_chunking_is_deterministic_and_trims():
    schedule = mj.linear_schedule(T=20)
    eps_fn = mj.oracle_eps(mj.mixture_1d([0.0, 1.0]), schedule)
    a = mj.sample(eps_fn, schedule, jax.random.key(8), 25, (1,), chunk_size=10)
    b = mj.sample(eps_fn, schedule, jax.random.key(8), 25, (1,), chunk_size=10)
    assert a.x.shape == (25, 1) and a.hal.shape == (25,)
    np.testing.assert_array_equal(a.x, b.x)
    c = mj.sample(eps_fn, schedule, jax.random.key(9), 25, (1,), chunk_size=10)
    assert not np.allclose(a.x, c.x)


def test_nonfinite_samples_are_reported():
    schedule = mj.linear_schedule(T=10)
    bad = lambda x, t: jnp.where(x > 0, jnp.nan, 0.0)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        r = mj.sample(bad, schedule, jax.random.key(0), 100, (1,))
    assert 0 < r.num_nonfinite <= 100


@pytest.mark.parametrize("kwargs, name", [
    (dict(num=0), "num"), (dict(shape=2), "shape"), (dict(chunk_size=0), "chunk_size"),
    (dict(observers=mj.paper_observers((0, 1001))), "hal"),
    (dict(solver=mj.DDPM), "solver"), (dict(models=True), "models"),
    (dict(models=mj.Stacked()), "key"),
])
def test_bad_sampler_arguments(kwargs, name):
    schedule = mj.linear_schedule()
    args = dict(num=10, shape=(1,))
    args.update(kwargs)
    eps_fn = mj.oracle_eps(mj.mixture_1d(), schedule)
    with pytest.raises(InputError, match=f"^{name}"):
        mj.sample(eps_fn, schedule, jax.random.key(0), **args)


@pytest.mark.parametrize("make, name", [
    (lambda: mj.paper_observers((5, 5)), "windows"),
    (lambda: mj.paper_observers((-1, 4)), "windows"), (lambda: mj.paper_observers(3), "windows"),
    (lambda: mj.paper_observers(track=("x0", "bogus")), "track"),
    (lambda: mj.paper_observers(clock="sampling"), "clock"), (lambda: mj.DDPM("huge"), "variance"),
    (lambda: mj.Stacked("loop"), "loop"),
])
def test_bad_observer_solver_and_loop_arguments(make, name):
    with pytest.raises(InputError, match=f"^{name}"):
        make()


def test_default_observers_are_the_papers_and_hal_reads_their_first_window():
    schedule = mj.linear_schedule(T=40)
    eps_fn = mj.oracle_eps(mj.mixture_1d([0.0, 1.0]), schedule)
    default = mj.sample(eps_fn, schedule, jax.random.key(2), 30, (1,))
    explicit = mj.sample(eps_fn, schedule, jax.random.key(2), 30, (1,),
                         observers=mj.paper_observers((0, 10)))
    assert set(default.observed) == {"hal", "eps_norm_last"}
    for a, b in zip(jax.tree.leaves(default.observed), jax.tree.leaves(explicit.observed)):
        np.testing.assert_array_equal(a, b)
    two = mj.sample(eps_fn, schedule, jax.random.key(2), 30, (1,),
                    observers=mj.paper_observers([(5, 20), (0, 10)]))
    np.testing.assert_array_equal(two.hal, two.observed["hal"].var[0])
    np.testing.assert_array_equal(two.observed["hal"].var[1], default.hal)
    assert not np.allclose(two.hal, default.hal)
    bare = mj.sample(eps_fn, schedule, jax.random.key(2), 30, (1,), observers={})
    np.testing.assert_array_equal(bare.x, default.x)  # observers only watch
    with pytest.raises(KeyError, match="no 'hal'"):
        bare.hal


def test_preemptive_flag_matches_stored_trajectory():
    schedule = mj.linear_schedule()
    m = mj.mixture_1d([1.0, 2.0, 3.0])
    n, thr = 1000, 1e-4
    r = mj.sample(mj.oracle_eps(m, schedule), schedule, jax.random.key(3), n, (1,),
                  observers=mj.paper_observers(record=n, flag_threshold=thr))
    traj = r.observed["trajectory"]["x0"][:, :, 0]  # slot = timestep
    ref = np.full(n, -1)
    for i in range(n):
        for t in range(8, -1, -1):  # window [0, 10): running variance of steps 9..t
            if np.var(traj[t:10, i]) > thr:
                ref[i] = t
                break
    flag = r.observed["flag_t"]
    assert 0 < np.mean(flag >= 0) < 1
    # float32 running vs float64 stored variance may disagree only when a value sits at the threshold
    assert np.mean(flag == ref) > 0.995


def test_resume_dir_reuses_finished_chunks_and_refuses_other_calls(tmp_path):
    m = mj.mixture_1d([1.0, 2.0])
    schedule = mj.linear_schedule(30)
    eps_fn = mj.oracle_eps(m, schedule)
    key = jax.random.key(3)
    args = (eps_fn, schedule, key, 50, (1,))
    plain = sampler.sample(*args, chunk_size=16)
    store = tmp_path / "chunks"
    first = sampler.sample(*args, chunk_size=16, resume_dir=store)
    assert sorted(p.name for p in store.glob("chunk_*.npz")) == [f"chunk_{c:06d}.npz" for c in range(4)]
    # Pretend the run died after two chunks, and poison one kept chunk to prove it is reused.
    (store / "chunk_000002.npz").unlink()
    (store / "chunk_000003.npz").unlink()
    with np.load(store / "chunk_000001.npz") as f:
        kept = {k: f[k] for k in f.files}
    kept["x"] = kept["x"] + 100.0
    np.savez(store / "chunk_000001.npz", **kept)
    resumed = sampler.sample(*args, chunk_size=16, resume_dir=store)
    np.testing.assert_array_equal(first.x, plain.x)
    np.testing.assert_array_equal(first.hal, plain.hal)
    np.testing.assert_array_equal(resumed.x[:16], plain.x[:16])
    np.testing.assert_array_equal(resumed.x[16:32], plain.x[16:32] + 100.0)
    np.testing.assert_array_equal(resumed.x[32:], plain.x[32:])
    with pytest.raises(InputError, match="differs in observers"):
        sampler.sample(*args, chunk_size=16, observers=mj.paper_observers((0, 5)),
                       resume_dir=store)
    # Another chunk size is the same call drawn otherwise: the store is emptied and refilled.
    rechunked = sampler.sample(*args, chunk_size=20, resume_dir=store)
    np.testing.assert_array_equal(rechunked.x, sampler.sample(*args, chunk_size=20).x)
    assert len(list(store.glob("chunk_*.npz"))) == 3
    (store / "chunk_000000.npz").write_bytes(b"PK\x03\x04broken")
    with pytest.raises(InputError, match="chunk_000000.npz"):
        sampler.sample(*args, chunk_size=20, resume_dir=store)


def test_region_variances_are_weighted_means_of_the_per_dimension_variance():
    m = mj.GaussianMixture([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], 0.1)
    schedule = mj.linear_schedule(30)
    regions = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 3]], np.float32)
    args = (mj.oracle_eps(m, schedule), schedule, jax.random.key(0), 12, (4,))
    res = sampler.sample(*args, observers=mj.paper_observers([(0, 5), (2, 9)], regions=regions,
                                                             record=12))
    var = res.observed["hal"].var_regions
    assert var.shape == (2, 12, 4)
    traj = res.observed["trajectory"]["x0"]  # (T, n, 4), slot s = timestep s
    for w, (lo, hi) in enumerate([(0, 5), (2, 9)]):
        per_dim = np.var(np.asarray(traj[lo:hi], np.float64), axis=0)  # (n, 4)
        ref = per_dim @ (regions / regions.sum(1, keepdims=True)).T
        np.testing.assert_allclose(var[w], ref, rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose(var[w, :, 2], res.observed["hal"].var[w], rtol=1e-5)
    wrong_shape = r"^observers\['hal'\]\.regions=\(2, 3\): must have shape \(R, \*\(4,\)\)"
    with pytest.raises(InputError, match=wrong_shape):
        sampler.sample(*args, observers=mj.paper_observers(regions=np.ones((2, 3), np.float32)))
    with pytest.raises(InputError, match="^regions"):
        mj.paper_observers(regions=np.zeros((1, 4), np.float32))


def test_net_batch_tiles_the_network_only():
    # Tiling the network call (16 rows at a time, 50 = 3 x 16 + 2) must not change the samples
    # or their statistics beyond float rounding, with a scalar or a per-sample t.
    schedule = mj.linear_schedule(50, 1e-3, 0.2)
    m = mj.GaussianMixture([[-1.0], [1.0]], 0.1)
    oracle = mj.oracle_eps(m, schedule)
    seen = set()

    def eps_fn(x, t):
        seen.add(x.shape)
        return oracle(x, t)

    runs = {nb: mj.sample(eps_fn, schedule, jax.random.key(3), 50, (1,), chunk_size=50,
                          net_batch=nb, observers=mj.paper_observers([(0, 10), (5, 20)]))
            for nb in (0, 16)}
    assert seen == {(50, 1), (16, 1), (2, 1)}
    np.testing.assert_allclose(runs[16].x, runs[0].x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(runs[16].observed["hal"].var, runs[0].observed["hal"].var,
                               rtol=1e-4, atol=1e-9)

    net = mj.make_mlp(1, width=16)
    params = jax.vmap(net.init)(jax.random.split(jax.random.key(4), 2))
    keys = jax.random.split(jax.random.key(5), 2)
    out = {nb: mj.sample(net, schedule, keys, 40, (1,), params=params, models=mj.Stacked(),
                         chunk_size=40, net_batch=nb) for nb in (0, 16)}
    np.testing.assert_allclose(out[16].x, out[0].x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[16].hal, out[0].hal, rtol=1e-3, atol=1e-8)
    with pytest.raises(InputError, match="net_batch"):
        mj.sample(oracle, schedule, jax.random.key(3), 10, (1,), net_batch=-1)


def test_second_sample_call_does_not_retrace():
    """The public sampler compiles once per eps_fn and shapes: a second call with other windows
    and another key reuses the program (a trace counter inside eps_fn)."""
    schedule = mj.linear_schedule(T=20)
    oracle = mj.oracle_eps(mj.mixture_1d([0.0, 1.0]), schedule)
    traces = []

    def eps_fn(x, t):
        traces.append(1)
        return oracle(x, t)

    first = mj.sample(eps_fn, schedule, jax.random.key(0), 30, (1,),
                      observers=mj.paper_observers((0, 5)))
    count = len(traces)
    second = mj.sample(eps_fn, schedule, jax.random.key(1), 30, (1,),
                       observers=mj.paper_observers((2, 9)))
    assert count >= 1 and len(traces) == count
    assert not np.array_equal(first.x, second.x)


def test_stacked_models_one_at_a_time_equal_the_vmapped_stack():
    """Stacked('map') (lax.map over the models, CPU-faster) gives the vmapped result, with a
    per-model observer field (thresholds) sliced per model and shared windows kept whole."""
    schedule = mj.linear_schedule(T=30)
    net = mj.make_mlp(1, width=16)
    params = jax.vmap(net.init)(jax.random.split(jax.random.key(0), 3))
    keys = jax.random.split(jax.random.key(1), 3)
    observers = mj.paper_observers([(0, 5), (0, 10)],
                                   flag_threshold=np.asarray([1e-4, 1e-3, 1e-2]))
    a, b = (mj.sample(net, schedule, keys, 40, (1,), params=params, models=mj.Stacked(loop),
                      observers=observers, chunk_size=20) for loop in ("vmap", "map"))
    assert b.x.shape == (3, 40, 1) and np.isfinite(a.x).all()
    np.testing.assert_allclose(b.x, a.x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.observed["hal"].var, a.observed["hal"].var, rtol=1e-4, atol=1e-9)
    np.testing.assert_array_equal(b.observed["flag_t"], a.observed["flag_t"])
    assert not np.array_equal(a.observed["flag_t"][0], a.observed["flag_t"][2])  # per model


def test_the_default_model_loop_depends_on_backend_and_model_count(monkeypatch):
    """Stacked() runs `auto_loop`: lax.map on a CPU from MAP_MIN_MODELS models, vmap below, and
    vmap on other backends or for models spread over devices; the run is the explicit loop's."""
    n = sampler.MAP_MIN_MODELS
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert [sampler.auto_loop(m) for m in (1, n - 1, n, 4 * n)] == ["vmap", "vmap", "map", "map"]
    assert sampler.auto_loop(4 * n, on_one_device=False) == "vmap"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert sampler.auto_loop(4 * n) == "vmap"
    monkeypatch.undo()
    schedule = mj.linear_schedule(T=10)
    net = mj.make_mlp(1, width=8)
    keys = jax.random.split(jax.random.key(2), n)
    params = jax.vmap(net.init)(keys)
    run = lambda models: mj.sample(net, schedule, keys, 8, (1,), params=params, models=models)
    chosen = sampler.auto_loop(n)
    assert chosen == ("map" if jax.default_backend() == "cpu" else "vmap")
    np.testing.assert_array_equal(run(mj.Stacked()).x, run(mj.Stacked(chosen)).x)

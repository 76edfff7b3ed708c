import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mi_jax as mj
from mi_jax import sweeps
from mi_jax.data import mixtures as mx
from mi_jax.diffusion.forward import eps_loss
from mi_jax.training import train as tr
from mi_jax.validation import InputError


def test_oracle_loss_equals_closed_form():
    """For data N(0, s^2) the optimal eps leaves E|eps - eps*|^2 = mean_t a^2 s^2 / (a^2 s^2 + b^2)."""
    schedule = mj.linear_schedule()
    s = 0.5
    g = mj.GaussianMixture([[0.0]], s)
    x0 = g.sample(jax.random.key(0), 400_000)
    loss = float(eps_loss(mj.oracle_eps(g, schedule), schedule, x0, jax.random.key(1)))
    ab = np.cumprod(1 - np.linspace(0.001, 0.2, 1000))
    expected = np.mean(ab * s * s / (ab * s * s + 1 - ab))
    # MC error: the per-sample loss is <= ~chi^2_1-like with variance ~2 e^2 for e the mean residual.
    assert loss == pytest.approx(expected, rel=0.03), (loss, expected)
    zero = float(eps_loss(lambda x, t: jnp.zeros_like(x), schedule, x0, jax.random.key(1)))
    assert zero == pytest.approx(1.0, rel=0.01)


def test_training_reduces_loss_and_is_resumable():
    schedule = mj.linear_schedule(T=100)
    net = mj.make_mlp(1, width=32)
    config = tr.TrainConfig(batch_size=128)
    m = mj.mixture_1d([-1.0, 1.0], std=0.2)
    data = mx.sample_stratified(m, jax.random.key(0), 512)
    straight, losses = tr.train(net, schedule, config, tr.init_state(net, config, jax.random.key(1)),
                                data, 512, 300, chunk_steps=100)
    assert losses.shape == (300,)
    assert losses[-50:].mean() < 0.7 * losses[:20].mean()
    half, _ = tr.train(net, schedule, config, tr.init_state(net, config, jax.random.key(1)), data,
                       512, 150, chunk_steps=100)
    ends = []
    resumed, rest = tr.train(net, schedule, config, half, data, 512, 300, chunk_steps=100,
                             on_chunk=lambda state, step, _: ends.append(step))
    assert int(resumed.step) == 300 and rest.shape == (150,)
    assert ends == [200, 300]  # chunks end on multiples of chunk_steps, also after a resume
    np.testing.assert_array_equal(rest, losses[150:])
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(straight.params)):
        np.testing.assert_array_equal(a, b)


def test_resumable_training_keeps_its_clock_over_sittings(tmp_path):
    """The losses file sums the training seconds of every sitting; a file from before the clock
    was kept makes the total unknown (None), not a partial sum."""
    schedule = mj.linear_schedule(T=30)
    net = mj.make_mlp(1, width=8)
    config = tr.TrainConfig(batch_size=16)
    data = mx.sample_stratified(mj.mixture_1d([-1.0, 1.0], std=0.2), jax.random.key(0), 64)
    init = lambda: jax.tree.map(lambda a: a[None], tr.init_state(net, config, jax.random.key(1)))

    def run_to(steps):
        return lambda st, on_chunk: tr.train(net, schedule, config, st, data[None], np.array([64]),
                                             steps, chunk_steps=5, stacked=True,
                                             on_chunk=on_chunk)

    assert tr.recorded_seconds(tmp_path) is None
    tr.train_resumable(run_to(10), init(), tmp_path, log=lambda *_: None)
    first = tr.recorded_seconds(tmp_path)
    tr.train_resumable(run_to(20), init(), tmp_path, log=lambda *_: None)
    second = tr.recorded_seconds(tmp_path)
    assert first is not None and second is not None and second > first > 0
    with np.load(tmp_path / tr.TRAIN_LOSSES) as f:
        losses = f["losses"]
    np.savez(tmp_path / tr.TRAIN_LOSSES, losses=losses)  # as written before the clock was kept
    tr.train_resumable(run_to(25), init(), tmp_path, log=lambda *_: None)
    assert tr.recorded_seconds(tmp_path) is None


def test_unrolled_chunks_equal_the_rolled_loop():
    """Straight-line chunks (conv nets on CPU) run the same steps with the same keys as the scan."""
    schedule = mj.linear_schedule(T=100)
    net = mj.make_mlp(1, width=16)
    config = tr.TrainConfig(batch_size=32)
    data = mx.sample_stratified(mj.mixture_1d([-1.0, 1.0], std=0.2), jax.random.key(0), 64)
    (rolled, rolled_losses), (state, losses) = [
        tr.train(net, schedule, config, tr.init_state(net, config, jax.random.key(1)), data, 64, 7,
                 chunk_steps=chunk, unroll=unroll)
        for chunk, unroll in ((7, False), (3, True))]  # 3 + 3 + 1: two unrolled sizes
    assert int(state.step) == 7 and losses.shape == (7,)
    np.testing.assert_allclose(losses, rolled_losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(rolled.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # The point of unrolling: no loop around the steps (a one-step scan keeps a while loop; the
    # step itself may hold loops of its own, e.g. the tied MLP's blocks).
    init = tr.init_state(net, config, jax.random.key(1))
    loops = [tr._chunk_jit.lower(net, config, 1, "single", unroll, schedule, init, data, 64)
             .as_text().count("stablehlo.while") for unroll in (False, True)]
    assert loops[1] == loops[0] - 1, loops


@pytest.mark.parametrize("every_s, writes", [(0.0, 4), (1e9, 1)])
def test_checkpoint_interval_still_saves_the_last_step(tmp_path, monkeypatch, every_s, writes):
    from mi_jax import checkpoint
    schedule = mj.linear_schedule(T=20)
    net = mj.make_mlp(1, width=8)
    config = tr.TrainConfig(batch_size=16)
    data = jnp.linspace(-1.0, 1.0, 32)[:, None]
    n = jnp.full((1,), 32, jnp.int32)
    init = lambda: jax.vmap(lambda k: tr.init_state(net, config, k))(jax.random.key(0)[None])
    saved = []
    real_save = checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda path, st: (saved.append(int(st.step[0])),
                                                              real_save(path, st)))
    run = lambda st, on_chunk: tr.train(net, schedule, config, st, data[None], n, 8,
                                        chunk_steps=2, stacked=True, on_chunk=on_chunk)
    state, losses = tr.train_resumable(run, init(), tmp_path, every_s=every_s)
    assert len(saved) == writes and saved[-1] == 8 and losses.shape == (1, 8)
    again, losses2 = tr.train_resumable(run, init(), tmp_path, log=lambda m: None)  # all done
    np.testing.assert_array_equal(losses2, losses)
    for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(a, b)


def test_minibatches_only_use_the_valid_rows():
    schedule = mj.linear_schedule(T=10)
    net = mj.make_mlp(1, width=8)
    config = tr.TrainConfig(batch_size=64)
    data = jnp.concatenate([jnp.zeros((10, 1)), jnp.full((90, 1), jnp.nan)])
    state, losses = tr.train(net, schedule, config, tr.init_state(net, config, jax.random.key(0)),
                             data, 10, 20, chunk_steps=10)
    assert np.all(np.isfinite(losses))  # a NaN row would poison the loss if it were ever drawn


def test_nonfinite_loss_stops_with_the_step():
    schedule = mj.linear_schedule(T=10)
    net = mj.make_mlp(1, width=8)
    config = tr.TrainConfig(batch_size=8)
    data = jnp.full((16, 1), jnp.inf)
    with pytest.raises(tr.NonFiniteLossError, match="at step 1;"):
        tr.train(net, schedule, config, tr.init_state(net, config, jax.random.key(0)), data, 16, 5,
                 chunk_steps=5)


def test_grid_equals_models_run_one_by_one():
    """A sweep trained and sampled in one vmapped call == the same models alone, same keys."""
    schedule = mj.linear_schedule(T=50)
    net = mj.make_mlp(1, width=32)
    config = tr.TrainConfig(batch_size=64)
    grid = sweeps.Grid([sweeps.Config("a", mj.mixture_1d([1.0, 2.0, 3.0]), 300),
                        sweeps.Config("b", mj.mixture_1d([1.0, 2.0, 4.0, 5.0]), 500)], [3, 11])
    state, losses = sweeps.train_grid(net, schedule, config, grid, 40, chunk_steps=20)
    res = sweeps.sample_grid(net, state.params, schedule, grid, 50, (1,), chunk_size=25)
    assert losses.shape == (4, 40) and res.x.shape == (4, 50, 1)
    for m in range(grid.num_models):
        c, seed = grid.config_index[m], grid.model_seeds[m]
        cfg = grid.configs[c]
        key = jax.random.key(int(seed))
        data = mx.sample_stratified(cfg.mixture, jax.random.fold_in(key, sweeps.PHASE_DATA),
                                    int(grid.num_train.max()), cfg.num_train)
        alone = tr.init_state(net, config, jax.random.fold_in(key, sweeps.PHASE_INIT))
        alone, alone_losses = tr.train(net, schedule, config, alone, data, cfg.num_train, 40,
                                       chunk_steps=20)
        np.testing.assert_allclose(losses[m], alone_losses, rtol=1e-4, atol=1e-6)
        for a, b in zip(jax.tree.leaves(alone.params),
                        jax.tree.leaves(jax.tree.map(lambda x: x[m], state.params))):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        one = mj.sample(net, schedule, jax.random.fold_in(key, sweeps.PHASE_SAMPLE), 50, (1,),
                        params=alone.params, chunk_size=25)
        np.testing.assert_allclose(res.x[m], one.x, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(res.hal[m], one.hal, rtol=1e-2, atol=1e-7)
    # Configurations of one seed share their initial weights (common random numbers).
    init = sweeps.init_grid(net, config, grid)
    k = np.asarray(init.params["in_fc"]["kernel"])
    np.testing.assert_array_equal(k[0], k[2])
    assert not np.allclose(k[0], k[1])


def test_model_loops_train_the_same_models_and_cpu_avoids_batched_dots():
    """'map' (one model after another) and 'one' (a model axis of 1) train what 'vmap' trains,
    up to float rounding; on this CPU backend the automatic choice is not vmap."""
    schedule = mj.linear_schedule(T=50)
    net = mj.make_mlp(2, width=32)
    config = tr.TrainConfig(batch_size=64)
    data = mx.sample_stratified(mx.grid_2d(size=3), jax.random.key(0), 300)
    fresh = lambda m: jax.vmap(lambda k: tr.init_state(net, config, k))(
        jax.vmap(jax.random.key)(jnp.arange(m)))
    for m, loops in ((3, ("map", "vmap")), (1, ("one", "map", "vmap"))):
        stack = jnp.broadcast_to(data, (m,) + data.shape)
        n = jnp.full((m,), 300, jnp.int32)
        got = {loop: tr.train(net, schedule, config, fresh(m), stack, n, 30, chunk_steps=10,
                              stacked=True, loop=loop) for loop in loops}
        ref_state, ref_losses = got["vmap"]
        for loop in loops[:-1]:
            state, losses = got[loop]
            assert losses.shape == (m, 30)
            np.testing.assert_allclose(losses, ref_losses, rtol=1e-4, atol=1e-6)
            for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    cpu = jax.default_backend() == "cpu"  # accelerators keep vmap
    assert tr.train_loop(fresh(3), True) == ("map" if cpu else "vmap")
    assert tr.train_loop(fresh(1), True) == ("one" if cpu else "vmap")
    assert tr.train_loop(fresh(3), True, unroll=True) == "vmap"  # no loop around unrolled steps
    assert tr.train_loop(fresh(1), False) == "single"
    with pytest.raises(InputError, match="loop='one': needs a model axis of 1"):
        tr.train(net, schedule, config, fresh(3), jnp.broadcast_to(data, (3,) + data.shape),
                 jnp.full((3,), 300, jnp.int32), 10, stacked=True, loop="one")
    with pytest.raises(InputError, match="loop='map': must be 'single' for one model"):
        tr.train(net, schedule, config, tr.init_state(net, config, jax.random.key(0)), data, 300,
                 10, loop="map")


def test_oracle_grid_and_rates():
    schedule = mj.linear_schedule()
    mixtures = [mj.mixture_1d([1.0, 2.0, 3.0]), mx.grid_2d("square")]
    res = sweeps.sample_oracle(mixtures[:1], schedule, 0, 2000)
    rates = sweeps.hallucination_rates(res.x, mx.stack(mixtures[:1]))
    assert rates.shape == (1, 3) and np.all(rates < 0.01)
    x = np.concatenate([np.full((5, 1), 1.5), np.full((15, 1), 2.0)])[None]
    np.testing.assert_allclose(sweeps.hallucination_rates(x, mx.stack(mixtures[:1])), [[0.25] * 3])


def test_focused_timesteps_keep_the_uniform_objective():
    """Importance-weighted t: for a fixed network the expected loss equals the uniform-t loss.

    Exactly over t (enumeration of sum_t q(t) w(t) l(t) against mean_t l(t)), and by Monte Carlo
    through eps_loss itself (same x0 and noise law, 200 000 draws: tolerance 3 %, ~6 s.e.)."""
    from mi_jax.diffusion.forward import focused_timesteps, q_sample

    schedule = mj.linear_schedule()
    q = np.asarray(focused_timesteps(1000, 100, 0.5), np.float64)
    assert q.sum() == pytest.approx(1.0, abs=1e-6)
    assert q[:100].sum() == pytest.approx(0.55, abs=1e-6)  # 0.5 focused + 0.5 * 100/1000 uniform
    g = mj.mixture_1d([1.0, 2.0, 3.0])
    eps_fn = mj.oracle_eps(g, schedule)  # a fixed network whose loss depends strongly on t
    x0 = g.sample(jax.random.key(0), 256)
    noise = jax.random.normal(jax.random.key(1), x0.shape)
    per_t = np.asarray(jax.vmap(lambda t: jnp.mean(
        (eps_fn(q_sample(schedule, x0, jnp.full((256,), t), noise), jnp.full((256,), t))
         - noise) ** 2))(jnp.arange(1000)), np.float64)
    weights = (1.0 / 1000) / q
    assert np.sum(q * weights * per_t) == pytest.approx(per_t.mean(), rel=1e-6)
    # Without the weights the focused draw would change the objective (here by > 2x): the test
    # above can fail, and the Monte Carlo check below would see a dropped weight.
    assert np.sum(q * per_t) > 2 * per_t.mean()
    big = g.sample(jax.random.key(5), 200_000)
    uniform = float(eps_loss(eps_fn, schedule, big, jax.random.key(6)))
    focused = float(eps_loss(eps_fn, schedule, big, jax.random.key(7), jnp.asarray(q, jnp.float32)))
    assert focused == pytest.approx(uniform, rel=0.03), (focused, uniform)


def test_ema_and_in_order_batches():
    """EMA params trail the params (decay warm-up included); in-order batches walk the data in
    fixed blocks, epoch after epoch, as the official DataStreamer does."""
    schedule = mj.linear_schedule(T=100)
    net = mj.make_mlp(1, width=16)
    data = jnp.arange(40, dtype=jnp.float32)[:, None]
    cfg = tr.TrainConfig(batch_size=10, batch_order="in_order", ema_decay=0.9)
    for step, first in ((0, 0.0), (1, 10.0), (3, 30.0), (4, 0.0), (5, 10.0)):
        batch = tr.minibatch(cfg, data, jnp.int32(40), jnp.int32(step), jax.random.key(0))
        np.testing.assert_array_equal(np.asarray(batch[:, 0]), first + np.arange(10))
    # n_valid is a value: a 25-row set inside the padded array has 2 blocks per epoch.
    batch = tr.minibatch(cfg, data, jnp.int32(25), jnp.int32(2), jax.random.key(0))
    assert float(batch[0, 0]) == 0.0
    state = tr.init_state(net, cfg, jax.random.key(1))
    init = jax.tree.map(np.asarray, state.params)  # train() donates the state it is given
    state, _ = tr.train(net, schedule, cfg, state, data, 40, 30, chunk_steps=30)
    for e, p, p0 in zip(*(jax.tree.leaves(t) for t in (state.ema, state.params, init))):
        e, p, p0 = map(np.asarray, (e, p, p0))
        if np.abs(p - p0).max() > 1e-4:  # the EMA lies strictly between init and now
            assert 0 < np.abs(e - p).max() < np.abs(p - p0).max()
    assert state.eval_params is state.ema
    plain = tr.init_state(net, tr.TrainConfig(batch_size=10), jax.random.key(1))
    assert plain.ema is None and plain.eval_params is plain.params


@pytest.mark.parametrize("kwargs, name", [(dict(focus_steps=-1), "focus_steps"),
                                          (dict(focus_prob=1.5), "focus_prob"),
                                          (dict(ema_decay=1.0), "ema_decay"),
                                          (dict(batch_order="shuffled"), "batch_order")])
def test_train_config_rejects_bad_recipe_values(kwargs, name):
    with pytest.raises(mj.InputError, match=name):
        tr.TrainConfig(**kwargs)


def test_in_order_batches_use_the_official_round_robin_data():
    """With in-order batches every batch mixes the modes as the official data does (row i from
    mode i mod K); refused for batches larger than a training set and for unequal weights."""
    from mi_jax.data import support

    m = mj.mixture_1d([1.0, 2.0, 3.0])
    rows = np.asarray(mx.sample_stratified(m, jax.random.key(0), 12, 9, round_robin=True))
    np.testing.assert_array_equal(np.asarray(support.nearest_mode(jnp.asarray(rows), m)),
                                  np.arange(12) % 9 % 3)
    grid = sweeps.Grid([sweeps.Config("a", m, 300)], [0])
    sets = np.asarray(sweeps.training_sets(grid, round_robin=True))[0]
    counts = np.bincount(np.asarray(support.nearest_mode(jnp.asarray(sets[:30]), m)), minlength=3)
    assert counts.tolist() == [10, 10, 10]
    net = mj.make_mlp(1, width=8)
    with pytest.raises(mj.InputError, match="batch_size"):
        sweeps.train_grid(net, mj.linear_schedule(T=50), tr.TrainConfig(400, batch_order="in_order"),
                          grid, 1)
    tilted = sweeps.Grid([sweeps.Config("b", mj.GaussianMixture([[0.0], [1.0]], 0.05, [1, 3]),
                                        300)], [0])
    with pytest.raises(mj.InputError, match="equal mode weights"):
        sweeps.training_sets(tilted, round_robin=True)


def test_epoch_budget_stops_each_model_after_its_own_steps():
    """epochs=E: a model with n rows stops updating after E x (n // batch) steps, inside one
    vmapped call (the official budget: larger sets train longer); its state equals a run of
    exactly that many steps."""
    schedule = mj.linear_schedule(T=50)
    net = mj.make_mlp(1, width=8)
    m = mj.mixture_1d([-1.0, 1.0], std=0.2)
    grid = sweeps.Grid([sweeps.Config("small", m, 40), sweeps.Config("large", m, 120)], [0])
    cfg = tr.TrainConfig(batch_size=20, epochs=2)
    state, _ = sweeps.train_grid(net, schedule, cfg, grid, 12, chunk_steps=6)
    for i, budget in ((0, 4), (1, 12)):
        alone = sweeps.Grid([grid.configs[i]], [0])
        ref, _ = sweeps.train_grid(net, schedule, tr.TrainConfig(batch_size=20), alone, budget,
                                   chunk_steps=budget)
        for a, b in zip(jax.tree.leaves(ref.params), jax.tree.leaves(state.params)):
            np.testing.assert_allclose(np.asarray(a)[0], np.asarray(b)[i], rtol=1e-5, atol=1e-7)


def test_warmup_ramps_the_learning_rate_then_follows_the_schedule():
    cosine = tr.TrainConfig(batch_size=8, learning_rate=1e-3, lr_schedule="cosine",
                            decay_steps=100, warmup_steps=10).schedule()
    assert float(cosine(0)) == 0.0 and np.isclose(float(cosine(5)), 5e-4)
    assert np.isclose(float(cosine(10)), 1e-3) and float(cosine(100)) < 1e-9
    constant = tr.TrainConfig(batch_size=8, learning_rate=1e-3, warmup_steps=4).schedule()
    assert np.isclose(float(constant(2)), 5e-4) and np.isclose(float(constant(50)), 1e-3)
    assert tr.TrainConfig(batch_size=8).schedule() == 1e-3  # no warm-up: the official constant
    with pytest.raises(InputError, match="warmup_steps"):
        tr.TrainConfig(batch_size=8, lr_schedule="cosine", decay_steps=10, warmup_steps=10)


def test_sweep_benchmark_times_each_model_loop_and_one_model_alone():
    """benchmarks.bench_sweep's case at toy size: every loop (and one model alone) trains and
    samples, and reports per-sweep rates."""
    from benchmarks import bench_sweep

    for m, loop, single in ((2, "map", False), (2, "vmap", False), (1, "auto", True)):
        r = bench_sweep.case(m, batch=16, steps=2, num=4, loop=loop, single=single)
        assert r["models"] == m and r["loop"] == ("alone" if single else loop)
        assert r["train_steps_per_s"] > 0 and r["samples_per_s"] > 0

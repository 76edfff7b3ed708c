"""The public API refuses misuse with one InputError naming the argument and the bad value,
never a silent result or a traceback from inside JAX (issue 39, item 5)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mi_jax as mj
from mi_jax.validation import InputError

S = mj.linear_schedule(50)
MIX = mj.grid_2d()
NET = mj.make_mlp(2, width=16, num_timesteps=50)
P1 = NET.init(jax.random.key(0))
P3 = jax.vmap(NET.init)(jax.random.split(jax.random.key(0), 3))
X0 = jnp.zeros((4, 2))
KEY = jax.random.key(0)
ORACLE = mj.oracle_eps(MIX, S)
CFG = mj.TrainConfig(batch_size=4)

CASES = {
    "model index beyond the stack": (lambda: mj.take_model(P3, 7), r"^i=7: must be <= 2"),
    "negative model index": (lambda: mj.take_model(P3, -1), r"^i=-1: must be >= 0"),
    "timestep beyond T": (lambda: mj.q_sample(S, X0, jnp.full((4,), 80), X0),
                          r"^t=\(80, 80\): must lie in \[0, T=50\)"),
    "negative timestep": (lambda: mj.predict_x0(S, X0, jnp.full((4,), -3), X0),
                          r"^t=\(-3, -3\): must lie in \[0, T=50\)"),
    "noise that broadcasts": (lambda: mj.q_sample(S, X0, jnp.zeros((4,), int), jnp.zeros((1, 2))),
                              r"^noise=\(1, 2\): must have the shape of x0 \(4, 2\)"),
    "a Python int as key": (lambda: mj.sample(ORACLE, S, 0, 8, (2,)),
                            r"^key=0: must be a typed PRNG key"),
    "raw uint32 key data": (lambda: mj.sample(ORACLE, S, jax.random.PRNGKey(0), 8, (2,)),
                            r"^key=\(2,\): must be a typed PRNG key .*wrap_key_data"),
    "a stack of keys for one model": (
        lambda: mj.sample(ORACLE, S, jax.random.split(KEY, 3), 8, (2,)),
        r"^key='key array of shape \(3,\)': must be one key"),
    "sample shape vs the mixture": (lambda: mj.sample(ORACLE, S, KEY, 8, (3,)),
                                    r"^x_t=\(8, 3\): must have shape \(batch, 2\)"),
    "a solver of the wrong type": (lambda: mj.sample(ORACLE, S, KEY, 8, (2,), solver="ddpm"),
                                   r"^solver='ddpm': must be a solver"),
    "an observer of the wrong type": (
        lambda: mj.sample(ORACLE, S, KEY, 8, (2,), observers={"a": 3}),
        r"^observers\['a'\]='int': must be an observer"),
    "a window past the chain": (
        lambda: mj.sample(ORACLE, S, KEY, 8, (2,), observers={"hal": mj.window_variance((0, 80))}),
        r"^hal=\[\[0, 80\]\]: windows must end at or before 50"),
    "unsorted net timesteps": (
        lambda: mj.sample(ORACLE, S, KEY, 8, (2,), net_timesteps=np.arange(50)[::-1]),
        r"^net_timesteps=.*: must be increasing"),
    "stacked params and keys that disagree": (
        lambda: mj.sample(NET, S, jax.random.split(KEY, 4), 8, (2,), params=P3,
                          models=mj.Stacked()),
        r"^params='stacks of \[3\] models': must stack as many models as the keys \(4\)"),
    "a model choice of the wrong type": (
        lambda: mj.sample(NET, S, jax.random.split(KEY, 3), 8, (2,), params=P3, models="vmap"),
        r"^models='vmap': must be mi_jax.Single\(\) or mi_jax.Stacked\("),
    "a solver class instead of a solver": (lambda: mj.sample(ORACLE, S, KEY, 8, (2,), solver=mj.DDIM),
                                           r"^solver=.*: must be a solver"),
    "region weights of another shape": (
        lambda: mj.sample(ORACLE, S, KEY, 8, (2,),
                          observers=mj.paper_observers(regions=np.ones((1, 3)))),
        r"^observers\['hal'\]\.regions=\(1, 3\): must have shape \(R, \*\(2,\)\)"),
    "a (models, n) array to a detector helper": (
        lambda: mj.auroc(np.random.rand(2, 10), np.random.rand(2, 10) > 0.5),
        r"^scores=\(2, 10\): must be one model's scores"),
    "operating point on a stack": (
        lambda: mj.removed_at_kept(np.random.rand(2, 10), np.random.rand(2, 10) > 0.5),
        r"^scores=\(2, 10\): must be one model's scores"),
    "exact score at the wrong dimension": (lambda: ORACLE(jnp.zeros((4, 3)), 5),
                                           r"^x_t=\(4, 3\): must have shape \(batch, 2\)"),
    "init with an int key": (lambda: mj.init_state(NET, CFG, 0), r"^key=0: must be a typed"),
    "loss with an int key": (lambda: mj.eps_loss(lambda x, t: x, S, X0, 0),
                             r"^key=0: must be a typed"),
    "data the network cannot take": (
        lambda: mj.train(NET, S, CFG, mj.init_state(NET, CFG, KEY), jnp.zeros((10, 3)), 10, 2),
        r"^data=\(rows \(3,\)\): mlp\(dim=2.*cannot take them"),
    "n_valid beyond the data": (
        lambda: mj.train(NET, S, CFG, mj.init_state(NET, CFG, KEY), jnp.zeros((10, 2)), 20, 2),
        r"^n_valid=20: must lie in \[1, 10\]"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_misuse_is_one_input_error_naming_the_argument(case):
    call, message = CASES[case]
    with pytest.raises(InputError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(-5, 60), min_size=1, max_size=6))
def test_timesteps_are_accepted_exactly_inside_the_schedule(ts):
    t = jnp.asarray(ts, jnp.int32)
    x = jnp.ones((len(ts), 2))
    if min(ts) >= 0 and max(ts) < 50:
        assert mj.q_sample(S, x, t, x).shape == x.shape
    else:
        with pytest.raises(InputError, match=r"^t=.*must lie in \[0, T=50\)"):
            mj.q_sample(S, x, t, x)


@settings(max_examples=20, deadline=None)
@given(st.integers(-4, 6))
def test_model_indices_are_accepted_exactly_inside_the_stack(i):
    if 0 <= i < 3:
        one = mj.take_model(P3, i)
        assert jax.tree.structure(one) == jax.tree.structure(P1)
    else:
        with pytest.raises(InputError, match=rf"^i={i}: must be"):
            mj.take_model(P3, i)


def test_a_run_refused_after_preparing_its_workdir_leaves_nothing_behind(tmp_path):
    import types

    from mi_jax import cli
    from mi_jax import workdir as wd

    def refuse(cfg, workdir):
        raise InputError("steps=3: refused inside the run")

    study = types.SimpleNamespace(validate=lambda cfg: None, run=refuse)
    work = tmp_path / "new"
    with pytest.raises(InputError, match="^steps=3"):
        cli.run_study(study, work, cfg={"steps": 3})
    assert not work.exists()  # no config.json left to refuse the corrected rerun
    done = types.SimpleNamespace(validate=lambda cfg: None,
                                 run=lambda cfg, w: wd.write_json(w / wd.METRICS_FILE, {}) or {})
    cli.run_study(done, work, cfg={"steps": 4})  # the corrected rerun is accepted
    assert wd.read_config(work) == {"steps": 4}
    # A refusal after the run wrote something keeps the directory as it is (it may resume).
    partial = tmp_path / "partial"

    def write_then_refuse(cfg, w):
        (w / "train_state.msgpack").write_bytes(b"x")
        raise InputError("k=0: refused late")

    with pytest.raises(InputError):
        cli.run_study(types.SimpleNamespace(validate=lambda c: None, run=write_then_refuse),
                      partial, cfg={"k": 0})
    assert (partial / wd.CONFIG_FILE).exists()


def test_the_fused_detector_names_a_missing_or_misshapen_input():
    rng = np.random.default_rng(0)
    scores = {"var_x0": rng.random(50), "eps_norm_last": rng.random(50)}
    positive = np.arange(50) < 10
    with pytest.raises(InputError, match=r"^scores=\['eps_norm_last', 'var_x0'\]: lacks the "
                                         r"detector\(s\) flipd"):
        mj.fit_fused_detector(scores, positive, ["var_x0", "flipd"])
    fused = mj.fit_fused_detector(scores, positive)
    with pytest.raises(InputError, match=r"^scores\['var_x0'\]=\(2, 25\): must be one model's"):
        fused.score({"var_x0": rng.random((2, 25)), "eps_norm_last": rng.random(50)})
    with pytest.raises(InputError, match=r"^fit_mask=\(3,\)"):
        mj.fit_fused_detector(scores, positive, fit_mask=np.ones(3, bool))

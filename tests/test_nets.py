import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mi_jax.nets import make_mlp
from mi_jax.nets.embeddings import sinusoidal_embedding


def np_embedding(t, dim):
    """ddpm-torch get_timestep_embedding in float64."""
    half = dim // 2
    freqs = np.exp(-math.log(10000) * np.arange(half) / (half - 1))
    args = np.asarray(t, np.float64)[:, None] * freqs
    return np.concatenate([np.sin(args), np.cos(args)], axis=1)


def np_decoder(params, x, t, num_blocks=3):
    """The official Decoder's forward pass in float64, from our params dict."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    act = lambda z: np.where(z >= 0, z, 0.02 * z)

    def ln(z, q):
        mu = z.mean(-1, keepdims=True)
        var = ((z - mu) ** 2).mean(-1, keepdims=True)
        return (z - mu) / np.sqrt(var + 1e-5) * q["scale"] + q["bias"]

    temb = act(np_embedding(t, 128) @ p["t_proj"]["kernel"] + p["t_proj"]["bias"])
    h = np.asarray(x, np.float64) @ p["in_fc"]["kernel"]
    for i in range(num_blocks):
        b = p["blocks"][i % len(p["blocks"])]
        out = act(ln(h, b["norm1"])) @ b["fc1"]["kernel"] + temb @ b["enc"]["kernel"] + b["enc"]["bias"]
        h = h + act(ln(out, b["norm2"])) @ b["fc2"]["kernel"]
    return ln(h, p["out_norm"]) @ p["out_fc"]["kernel"] + p["out_fc"]["bias"]


def test_parameter_counts_match_official_decoder():
    # 67,074 unique parameters for d = 2 with the official weight tying; 166,658 untied.
    tied, untied = make_mlp(2), make_mlp(2, tied=False)
    assert tied.num_params(tied.init(jax.random.key(0))) == 67_074
    assert untied.num_params(untied.init(jax.random.key(0))) == 166_658


def test_the_official_input_layer_blinds_the_net_to_the_scale_of_x_near_the_origin():
    """Without an input bias the first LayerNorm sees W x, so the first block's normalised input
    is the same at x and at 2 x once |W x| is well above LayerNorm's epsilon (here |x| ~ 0.3; at
    |x| ~ 0.01 the epsilon still passes the scale); the residual path is the only route for |x|.
    With a bias the first block sees |x| too. (The mode on x = 0: BUILD_NOTES.md, mode_mass.)"""
    from mi_jax.nets.mlp import layer_norm

    x = 0.3 * np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
    bias_value = np.random.default_rng(1).normal(0, 0.1, 32).astype(np.float32)  # a trained one
    for input_bias, invariant in ((False, True), (True, False)):
        net = make_mlp(2, 32, input_bias=input_bias)
        params = net.init(jax.random.key(0))
        flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(params)}
        kernel = [v for p, v in flat.items() if "in_fc" in p and "kernel" in p][0]
        bias = [v for p, v in flat.items() if "in_fc" in p and "bias" in p]
        assert len(bias) == int(input_bias)
        b = bias_value[None] if input_bias else 0.0
        one = layer_norm(x @ kernel + b, jnp.ones(32), jnp.zeros(32))
        two = layer_norm(2 * x @ kernel + b, jnp.ones(32), jnp.zeros(32))
        change = float(jnp.max(jnp.abs(one - two)) / jnp.max(jnp.abs(one)))
        assert (change < 0.05) if invariant else (change > 0.2), change
    # The bias is wired into the forward pass: setting it changes the network's output.
    net = make_mlp(2, 32, input_bias=True)
    params = net.init(jax.random.key(0))
    shifted = jax.tree_util.tree_map_with_path(
        lambda p, v: v + bias_value if "in_fc" in jax.tree_util.keystr(p)
        and "bias" in jax.tree_util.keystr(p) else v, params)
    t = jnp.full((8,), 3, jnp.int32)
    assert not np.allclose(net.apply(params, x, t), net.apply(shifted, x, t), atol=1e-3)
    assert make_mlp(2, input_bias=True).num_params(make_mlp(2, input_bias=True).init(
        jax.random.key(0))) == 67_074 + 128


def test_embedding_matches_reference():
    t = np.array([0, 1, 9, 500, 999])
    np.testing.assert_allclose(sinusoidal_embedding(jnp.asarray(t), 128), np_embedding(t, 128),
                               atol=2e-4)


def test_forward_matches_numpy_reference():
    for tied in (True, False):
        net = make_mlp(2, tied=tied)
        params = net.init(jax.random.key(1))
        # Perturb the LayerNorm/bias leaves so that a wrong wiring cannot hide behind zeros/ones.
        leaves, tree = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.key(2), len(leaves))
        params = jax.tree.unflatten(tree, [l + 0.1 * jax.random.normal(k, l.shape)
                                           for l, k in zip(leaves, keys)])
        x = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
        t = np.arange(16) * 37
        out = net.apply(params, jnp.asarray(x), jnp.asarray(t))
        np.testing.assert_allclose(out, np_decoder(params, x, t), rtol=2e-4, atol=2e-4)


def _norm_case(seed, offset):
    """A LayerNorm input (2, 33, 128), non-trivial scale and bias, and a cotangent."""
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    x = 3.0 * jax.random.normal(k1, (2, 33, 128)) + offset
    scale, bias = 1 + 0.3 * jax.random.normal(k2, (128,)), jax.random.normal(k3, (128,))
    return x, scale, bias, jax.random.normal(k4, x.shape)


def test_layer_norm_closed_form_vjp_equals_autodiff():
    from mi_jax.nets.mlp import layer_norm

    def plain(x, scale, bias):  # the textbook formula, differentiated by JAX
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / jnp.sqrt(var + 1e-5) * scale.reshape(1, 1, -1) + bias.reshape(1, 1, -1)

    x, scale, bias, cot = _norm_case(6, offset=1.0)
    out, vjp = jax.vjp(layer_norm, x, scale, bias)
    ref_out, ref_vjp = jax.vjp(plain, x, scale, bias)
    # The differentiated path computes its row means as dots on CPU, the plain call as
    # reductions: both must be the same function.
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer_norm(x, scale, bias), ref_out, rtol=1e-4, atol=1e-4)
    for got, want in zip(vjp(cot), ref_vjp(cot)):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * float(jnp.abs(want).max()))


@pytest.mark.parametrize("tied,input_bias", [(True, False), (False, True)])
def test_folded_means_give_the_same_function_and_gradients(tied, input_bias):
    # The centred-kernel fold (module doc of mi_jax.nets.mlp) is an identity in real arithmetic:
    # in float64 the value and every parameter gradient must match the plain LayerNorms' to
    # ~1e-12, on perturbed params (so LayerNorm scales/biases are not ones/zeros) and off-centre x.
    with jax.enable_x64(True):
        x = 3.0 * jax.random.normal(jax.random.key(1), (1200, 2), jnp.float64) + 1.0
        t = jax.random.randint(jax.random.key(2), (1200,), 0, 1000)
        results, programs = [], []
        for fold in (True, False):
            net = make_mlp(2, tied=tied, num_timesteps=1000, input_bias=input_bias,
                           fold_means=fold)
            params = jax.tree.map(lambda a: a.astype(jnp.float64), net.init(jax.random.key(0)))
            leaves, treedef = jax.tree.flatten(params)
            keys = jax.random.split(jax.random.key(3), len(leaves))
            params = jax.tree.unflatten(treedef, [a + 0.2 * jax.random.normal(k, a.shape, a.dtype)
                                                  for a, k in zip(leaves, keys)])
            loss = lambda p: jnp.sum(jnp.sin(net.apply(p, x, t)))
            programs.append(str(jax.make_jaxpr(jax.grad(loss))(params)))
            results.append((*jax.value_and_grad(loss)(params), net.apply(params, x[:7], 5)))
    assert programs[0] != programs[1]  # the switch reached the trace: two different programs
    (v_fold, g_fold, s_fold), (v_plain, g_plain, s_plain) = results
    np.testing.assert_allclose(v_fold, v_plain, rtol=1e-12)
    np.testing.assert_allclose(s_fold, s_plain, rtol=1e-10, atol=1e-12)
    for a, b in zip(jax.tree.leaves(g_fold), jax.tree.leaves(g_plain)):
        a, b = np.asarray(a), np.asarray(b)  # float64 outside enable_x64: compare in NumPy
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10 * np.abs(b).max())


def test_norm_of_centred_rows_vjp_equals_layer_norm():
    from mi_jax.nets.mlp import _norm_of_centred, layer_norm

    x, scale, bias, cot = _norm_case(7, offset=0.0)
    x = x - x.mean(-1, keepdims=True)  # its precondition: zero-mean rows
    out, vjp = jax.vjp(_norm_of_centred, x, scale, bias)
    ref_out, ref_vjp = jax.vjp(layer_norm, x, scale, bias)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_norm_of_centred(x, scale, bias), ref_out, rtol=1e-4, atol=1e-4)
    # The input gradient differs from layer_norm's only by its row mean (layer_norm projects
    # it out; downstream of a centred kernel the two are the same): compare the centred parts.
    (dx, ds, db), (rdx, rds, rdb) = vjp(cot), ref_vjp(cot)
    tol = 1e-3 * float(jnp.abs(rdx).max())
    np.testing.assert_allclose(dx - dx.mean(-1, keepdims=True), rdx, rtol=1e-3, atol=tol)
    np.testing.assert_allclose(ds, rds, rtol=1e-3, atol=1e-3 * float(jnp.abs(rds).max()))
    np.testing.assert_allclose(db, rdb, rtol=1e-3, atol=1e-3)


def test_timestep_table_is_the_same_function():
    # A batch longer than num_timesteps takes the table path (time path per timestep, gathered
    # by t); its output and gradients must equal the per-sample path (itself checked against the
    # float64 reference above).
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(24, 2)), jnp.float32)
    t = jnp.asarray(rng.integers(0, 20, size=24), jnp.int32)
    for tied in (True, False):
        plain, table = make_mlp(2, 16, tied=tied), make_mlp(2, 16, tied=tied, num_timesteps=20)
        params = plain.init(jax.random.key(4))
        out = table.apply(params, x, t)
        np.testing.assert_allclose(out, plain.apply(params, x, t), rtol=1e-5, atol=1e-6)
        loss = lambda net: jax.grad(lambda p: jnp.sum(net.apply(p, x, t) ** 2))(params)
        for g_table, g_plain in zip(jax.tree.leaves(loss(table)), jax.tree.leaves(loss(plain))):
            np.testing.assert_allclose(g_table, g_plain, rtol=1e-4, atol=1e-5)
    # A timestep outside the table is NaN for its row, not a silently clipped embedding.
    bad = table.apply(params, x, t.at[5].set(20))
    assert np.isnan(np.asarray(bad[5])).all() and np.isfinite(np.asarray(bad[:5])).all()


def test_scalar_timestep_equals_vector():
    net = make_mlp(1)
    params = net.init(jax.random.key(0))
    x = jnp.linspace(-2, 2, 9)[:, None]
    np.testing.assert_allclose(net.apply(params, x, jnp.int32(7)),
                               net.apply(params, x, jnp.full((9,), 7)), rtol=1e-6, atol=1e-6)


def test_vmapped_init_is_an_ensemble():
    net = make_mlp(2)
    stacked = jax.vmap(net.init)(jax.random.split(jax.random.key(0), 3))
    k = np.asarray(stacked["in_fc"]["kernel"])
    assert k.shape == (3, 2, 128) and not np.allclose(k[0], k[1])
    single = net.init(jax.random.split(jax.random.key(0), 3)[1])
    np.testing.assert_allclose(k[1], single["in_fc"]["kernel"])


def _bf16_dots(jaxpr):
    """dot_generals of a (closed) jaxpr, nested ones included, split by operand dtype."""
    found = {"bf16": 0, "f32": 0}
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found["bf16" if eqn.invars[0].aval.dtype == jnp.bfloat16 else "f32"] += 1
        for sub in eqn.params.values():  # pjit / custom_vjp bodies
            sub = getattr(sub, "jaxpr", sub)
            if hasattr(sub, "eqns"):
                for k, v in _bf16_dots(sub).items():
                    found[k] += v
    return found


def test_bf16_mlp_rounds_only_the_block_matmuls_and_stays_near_the_float64_decoder():
    f32, bf16 = make_mlp(2), make_mlp(2, compute_dtype="bfloat16")
    assert f32 != bf16 and "bfloat16" in bf16.name
    params = f32.init(jax.random.key(1))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree.unflatten(tree, [l + 0.1 * jax.random.normal(k, l.shape)
                                       for l, k in zip(leaves, keys)])
    assert jax.tree.structure(jax.eval_shape(bf16.init, jax.random.key(0))) == tree
    x = np.random.default_rng(0).normal(size=(256, 2)).astype(np.float32)
    t = np.arange(256) * 3
    # Three tied blocks x (fc1, fc2) in bf16; in_fc, t_proj, enc and out_fc stay float32, so the
    # sample x itself is never rounded to 8 mantissa bits.
    dots = _bf16_dots(jax.make_jaxpr(bf16.apply)(params, jnp.asarray(x), jnp.asarray(t)).jaxpr)
    assert dots == {"bf16": 6, "f32": 4}, dots
    assert _bf16_dots(jax.make_jaxpr(f32.apply)(params, jnp.asarray(x), jnp.asarray(t)).jaxpr)[
        "bf16"] == 0
    ref = np_decoder(params, x, t)
    out = np.asarray(bf16.apply(params, jnp.asarray(x), jnp.asarray(t)), np.float64)
    assert out.dtype == np.float64 and np.all(np.isfinite(out))
    # bf16 keeps 8 mantissa bits (~4e-3 relative per rounding); six roundings through the
    # LayerNorms stay within ~3 % of the float64 decoder; float32 is 100x closer (and the gap must
    # be real: an accidental float32 path would fail the lower bound).
    rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    rel32 = np.linalg.norm(np.asarray(f32.apply(params, jnp.asarray(x), jnp.asarray(t))) - ref) \
        / np.linalg.norm(ref)
    assert 1e-3 < rel < 0.03 and rel32 < 1e-5, (rel, rel32)
    grads = jax.grad(lambda p: jnp.mean(bf16.apply(p, jnp.asarray(x), jnp.asarray(t)) ** 2))(params)
    assert all(g.dtype == jnp.float32 and np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_unknown_compute_dtype_is_refused():
    from mi_jax.validation import InputError

    with pytest.raises(InputError, match="compute_dtype=.float16.: must be one of"):
        make_mlp(2, compute_dtype="float16")

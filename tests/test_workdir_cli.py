import json

import numpy as np
import pytest

from mi_jax import cli, config
from mi_jax import workdir as wd
from mi_jax.validation import InputError


def test_atomic_files_and_config_guard(tmp_path):
    work = wd.prepare(tmp_path / "w", {"a": 1, "b": [1, 2]})
    wd.write_json(work / "metrics.json", {"x": np.float32(0.5), "nan": float("nan"), "arr": np.arange(3)})
    wd.write_npz(work / "arrays.npz", a=np.ones(3))
    assert json.loads((work / "metrics.json").read_text()) == {"x": 0.5, "nan": None, "arr": [0, 1, 2]}
    assert not [p for p in work.iterdir() if p.name.endswith(".tmp")]
    assert wd.finished(work, {"a": 1, "b": (1, 2)})
    wd.prepare(work, {"a": 1, "b": [1, 2]})  # same config: fine
    with pytest.raises(InputError, match="different config .*differs in a.*--overwrite"):
        wd.prepare(work, {"a": 2, "b": [1, 2]})
    assert (work / "metrics.json").exists()
    wd.prepare(work, {"a": 2, "b": [1, 2]}, overwrite=True)
    assert not (work / "metrics.json").exists() and not wd.finished(work, {"a": 2, "b": [1, 2]})


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        wd.write_json(tmp_path / "m.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_provenance_names_versions():
    p = wd.provenance()
    for name in ("jax", "jaxlib", "flax", "optax", "numpy", "git_commit"):
        assert name in p


@pytest.mark.parametrize("kind, raw, value", [
    ("ints", "1,2,3", (1, 2, 3)), ("floats", "0.5, 2", (0.5, 2.0)), ("window", "0,10", (0, 10)),
    ("int", "7", 7), ("choice", "b", "b"), ("bool", True, True),
])
def test_option_parse_good(kind, raw, value):
    opt = config.Option("f", kind, "", choices=("a", "b"))
    assert config.parse(opt, raw) == value


@pytest.mark.parametrize("kind, raw", [
    ("ints", "1,,2"), ("ints", "1.5"), ("floats", "x"), ("floats", "nan"), ("window", "3,1"),
    ("window", "1"), ("int", ""), ("choice", "c"), ("bool", "yes"), ("str", "  "),
])
def test_option_parse_bad_is_one_line(kind, raw):
    opt = config.Option("f", kind, "", choices=("a", "b"))
    with pytest.raises(InputError) as err:
        config.parse(opt, raw)
    assert str(err.value).startswith(f"f={raw}") and "\n" not in str(err.value)


def test_help_lines_say_what_each_preset_sets():
    from mi_jax.studies import gmm1d

    assert cli.preset_help("steps", gmm1d.PRESETS) == " [quick: 6000; paper: 50000]"
    assert cli.preset_help("hal_window", gmm1d.PRESETS) == " [quick: 0,10; paper: 0,10]"
    assert cli.preset_help("nonexistent", gmm1d.PRESETS) == " [no preset sets it]"
    assert cli.preset_help("steps", None) == ""


def test_study_config_is_typed_checked_and_saved_as_before():
    from mi_jax.studies import gmm1d, shapes

    cfg = config.preset(gmm1d.Config, gmm1d.PRESETS, "quick", steps="250", seeds=[3, 4])
    assert cfg.steps == 250 and cfg.seeds == (3, 4) and cfg.modes == (1.0, 2.0, 3.0)
    with pytest.raises(AttributeError):
        cfg.steps = 1  # frozen
    assert cfg.replace(steps=7).steps == 7 and cfg.steps == 250
    with pytest.raises(InputError, match=r"^steps=0: must be >= 1$"):
        cfg.replace(steps=0)
    with pytest.raises(InputError, match=r"^stepz=1: not an option of Gmm1dConfig"):
        config.preset(gmm1d.Config, gmm1d.PRESETS, "quick", stepz=1)
    with pytest.raises(InputError, match=r"^preset=huge"):
        config.preset(gmm1d.Config, gmm1d.PRESETS, "huge")
    with pytest.raises(InputError, match=r"^width=<unset>"):
        config.from_values(gmm1d.Config, {k: v for k, v in cfg.to_dict().items() if k != "width"})
    saved = cfg.to_dict()
    assert saved["seeds"] == [3, 4] and json.loads(json.dumps(saved)) == saved
    # Every field is saved, an unset optional one as None; "off" options have their meaning as
    # default, so unset and 0 are one config.
    s = config.preset(shapes.Config, shapes.PRESETS, "quick")
    assert s.images_dir is None and s.to_dict()["images_dir"] is None
    assert s.replace(images_dir="pngs").to_dict()["images_dir"] == "pngs"
    assert cfg.replace(jacobian_weight=0, compute_dtype="float32") == cfg


def test_flags_are_typed_absl_flags_with_preset_help():
    from absl import flags

    from mi_jax.studies import gmm1d

    fv = flags.FlagValues()
    cli.define(gmm1d.Config, gmm1d.PRESETS, fv)
    fv(["prog", "--workdir=w", "--seeds=5,6", "--tied=false"])
    assert fv["seeds"].value == (5, 6) and fv["tied"].value is False
    assert "[quick: 6000; paper: 50000]" in fv["steps"].help
    cfg = cli.resolve(gmm1d.Config, gmm1d.PRESETS, fv)
    assert cfg.seeds == (5, 6) and cfg.tied is False and cfg.steps == 6000
    assert cli.check_args(gmm1d, ["prog", "--workdir=w", "--steps=-3"]) == \
        "error: --steps=-3: must be >= 1"


def _quick_gmm1d(**overrides):
    from mi_jax.studies import gmm1d

    return config.preset(gmm1d.Config, gmm1d.PRESETS, "quick", **overrides)


def test_config_json_keeps_protocol_and_execution_apart(tmp_path):
    cfg = _quick_gmm1d(chunk_size=500)
    work = wd.prepare(tmp_path / "w", cfg)
    saved = wd.read_json(work / wd.CONFIG_FILE)
    assert saved["config_version"] == wd.CONFIG_VERSION
    assert set(saved["execution"]) == {"chunk_size", "train_chunk"}
    assert saved["execution"]["chunk_size"] == 500 and "chunk_size" not in saved["protocol"]
    assert saved["protocol"]["steps"] == cfg.steps
    assert wd.read_config(work) == cfg.to_dict()
    assert type(cfg).from_saved(wd.read_config(work)) == cfg  # round trip
    wd.write_json(work / wd.METRICS_FILE, {})
    # Another chunking is the same protocol: resumed and reused, and its settings recorded.
    other = cfg.replace(chunk_size=250, train_chunk=cfg.train_chunk * 2)
    assert wd.finished(work, other)
    wd.prepare(work, other)
    assert wd.read_config(work)["chunk_size"] == 250 and (work / wd.METRICS_FILE).exists()
    # Another protocol is refused, naming the field.
    with pytest.raises(InputError, match=r"differs in steps\)"):
        wd.prepare(work, cfg.replace(steps=cfg.steps + 1))
    assert not wd.finished(work, cfg.replace(steps=cfg.steps + 1))


def test_version_1_config_json_is_read_with_defaults_filled_in(tmp_path):
    """A directory written before config.json had a version (flat, unset fields left out, and
    without the options added since) still belongs to the config it was made with."""
    cfg = _quick_gmm1d()
    old = {k: v for k, v in cfg.to_dict().items()
           if k not in ("jacobian_weight", "jacobian_t_max", "between_weight", "between_t_max",
                        "compute_dtype", "curve_samples")}
    work = tmp_path / "w"
    work.mkdir()
    (work / wd.CONFIG_FILE).write_text(json.dumps(old))
    (work / wd.METRICS_FILE).write_text("{}")
    assert wd.read_config(work) == old
    assert wd.finished(work, cfg)
    assert not wd.finished(work, cfg.replace(jacobian_weight=0.5))
    assert wd.protocol_differences(old, cfg.replace(compute_dtype="bfloat16")) == ["compute_dtype"]
    wd.prepare(work, cfg)  # accepted, and rewritten as version 2
    assert wd.read_json(work / wd.CONFIG_FILE)["config_version"] == wd.CONFIG_VERSION


def test_a_saved_config_of_another_kind_is_named_as_such(tmp_path):
    cfg = _quick_gmm1d()
    bad = dict(cfg.to_dict(), steps=6000.5)
    (diff,) = wd.protocol_differences(bad, cfg)
    assert diff.startswith("everything: not a Gmm1dConfig (InputError: steps=6000.5")
    work = tmp_path / "w"
    work.mkdir()
    (work / wd.CONFIG_FILE).write_text(json.dumps({"config_version": 2, "protocol": [1],
                                                   "execution": {}}))
    with pytest.raises(InputError, match="needs 'protocol' and 'execution' objects"):
        wd.read_config(work)


def test_unknown_config_version_is_refused_in_one_line(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / wd.CONFIG_FILE).write_text(json.dumps({"config_version": 9, "protocol": {}}))
    with pytest.raises(InputError, match=r"^\S+: config\.json of version 9, this mi_jax reads 1 "
                                         r"and 2 \(written by a newer mi_jax\?\)$"):
        wd.read_config(work)
    with pytest.raises(InputError, match="unreadable config.json"):
        wd.prepare(work, _quick_gmm1d())
    assert not wd.finished(work, _quick_gmm1d())


def test_off_options_default_to_the_training_code_s_own_values():
    from mi_jax.training import train as tr

    opts = {o.name: o for o in config.COMMON}
    default = tr.TrainConfig()
    for name in ("jacobian_weight", "jacobian_t_max", "between_weight", "between_t_max",
                 "focus_steps", "focus_prob", "ema_decay", "batch_order", "epochs"):
        assert opts[name].default == getattr(default, name), name


def test_every_study_marks_its_chunk_sizes_as_execution_settings():
    import importlib

    from mi_jax.studies import registry

    for study in registry.studies():
        cls = importlib.import_module(f"mi_jax.studies.{study.name}").Config
        for opt in config.options_of(cls):
            assert opt.execution == (opt.name in ("chunk_size", "train_chunk")), (study.name, opt)

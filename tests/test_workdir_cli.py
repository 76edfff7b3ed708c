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
    # Unset optional fields stay out of config.json, so directories written before they existed
    # still match; a set one is saved.
    s = config.preset(shapes.Config, shapes.PRESETS, "quick")
    assert s.images_dir is None and "images_dir" not in s.to_dict()
    assert s.replace(images_dir="pngs").to_dict()["images_dir"] == "pngs"


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

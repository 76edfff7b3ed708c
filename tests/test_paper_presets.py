"""The `paper` presets are the official settings: read from the official code's run.sh and the
defaults of its training scripts (../shared/official, beside the checkout), not restated here."""

import re
from pathlib import Path

import pytest

from mi_jax.studies import gmm1d, gmm2d, paper_budget
from mi_jax.studies import recursive as recursive_study

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "official" / "gaussian_experiments"
pytestmark = pytest.mark.skipif(not (OFFICIAL / "run.sh").exists(),
                                reason="the official code is not beside this checkout")


def _script_defaults(name: str) -> dict:
    """`--flag: default` of every add_argument with a default in an official script."""
    out = {}
    text = (OFFICIAL / name).read_text()
    for m in re.finditer(r'add_argument\(\s*["\'](--[\w-]+)["\'](.*?)\)\s*(?:#.*)?$', text, re.M):
        d = re.search(r"default\s*=\s*(\[[^\]]*\]|[^,)\s]+)", m.group(2))
        if d:
            out[m.group(1).replace("-", "_").lstrip("_")] = _value(d.group(1))
    return out


def _value(text: str):
    text = text.strip().strip("'\"")
    if text.startswith("["):
        return [_value(t) for t in text.strip("[]").split(",")]
    try:
        return int(text.replace("_", ""))
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _commands() -> list:
    """Each `python <script> ...` of run.sh as (script, {flag: value}) over the script's defaults."""
    text = (OFFICIAL / "run.sh").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        m = re.match(r"\s*python (\S+)\s+(.*)", line)
        if not m:
            continue
        args = dict(_script_defaults(m.group(1)))
        tokens = m.group(2).split()
        i = 0
        while i < len(tokens):
            key = tokens[i].lstrip("-").replace("-", "_")
            vals = []
            i += 1
            while i < len(tokens) and not tokens[i].startswith("--"):
                vals.append(_value(tokens[i]))
                i += 1
            args[key] = vals if len(vals) > 1 else (vals[0] if vals else True)
        out.append((m.group(1), args))
    return out


def _steps(args) -> int:
    """The official step count: epochs x (size // batch_size) (an epoch walks the fixed data)."""
    return args["epochs"] * (args["size"] // args["batch_size"])


def _common(preset: dict, args: dict) -> None:
    assert preset["batch_size"] == args["batch_size"]
    assert preset["lr"] == args["lr"] and args["lr_warmup"] == 0
    assert preset["lr_schedule"] == "constant" and preset["batch_order"] == "in_order"
    assert preset["epochs"] == args["epochs"]
    assert preset["T"] == args["timesteps"]
    assert (preset["beta_start"], preset["beta_end"]) == (args["beta_start"], args["beta_end"])
    assert args["beta_schedule"] == "linear" and args["model_mean_type"] == "eps"
    assert preset["width"] == args["mid_features"]
    assert preset.get("focus_steps", 0) == 0 and preset.get("ema_decay", 0.0) == 0.0


def test_1d_paper_preset_is_run_sh():
    cmds = [a for s, a in _commands() if a["dataset"] == "gaussian1d"]
    assert len(cmds) == 2
    p = gmm1d.PRESETS["paper"]
    for args in cmds:
        _common(p, args)
    a, b = cmds
    assert [float(m) for m in a["modes"]] == p["modes"] and a["size"] == p["num_train"]
    assert [float(m) for m in b["modes"]] == p["modes_b"] and b["size"] == p["num_train_b"]
    assert p["steps"] == max(_steps(a), _steps(b))  # each mixture stops at its own budget
    # The units that run the preset one model at a time train each mixture its own step count.
    units = {tuple(u.settings["modes"]): u.settings for u in paper_budget.units()
             if u.study == "gmm1d"}
    assert units[tuple(p["modes"])]["steps"] == _steps(a) == 20_000
    assert units[tuple(p["modes_b"])]["steps"] == _steps(b) == 50_000
    # The variance window: the filter script's last `start_timestep_var` steps.
    window = _script_defaults("train_toy_filter.py")["start_timestep_var"]
    assert p["hal_window"] == [0, window]


def test_2d_paper_preset_is_run_sh():
    cmds = [(s, a) for s, a in _commands() if a["dataset"] == "gaussian25"]
    assert len(cmds) == 3
    p = gmm2d.PRESETS["paper"]
    plain = next(a for s, a in cmds if s == "train_toy.py")
    _common(p, plain)
    assert p["num_train"] == plain["size"] and p["steps"] == _steps(plain) == 100_000
    assert p["grid_size"] ** 2 == 25 and p["num_samples"] == plain["num_sample_images"]
    for unit in paper_budget.units():
        if unit.study == "gmm2d":
            assert unit.config().steps == p["steps"]


def test_recursion_paper_preset_is_run_sh():
    cmds = [(s, a) for s, a in _commands() if a["dataset"] == "gaussian25"]
    filtered = [a for s, a in cmds if s == "train_toy_filter.py"]
    assert {a["filter_type"] for a in filtered} == {"variance", "random"}
    d = recursive_study.DATASET_PRESETS["paper"]["gmm2d"]
    for a in filtered:
        assert a["generations"] == d["generations"]
        assert d["num_train"] == a["size"]
        # The filter script keeps the first size + 2 500 of its draws as candidates.
        assert d["num_candidates"] == a["size"] + 2_500
        assert d["steps"] == _steps(a) and d["batch_size"] == a["batch_size"]
        assert d["T"] == a["timesteps"] and d["lr"] == a["lr"]
        assert (d["beta_start"], d["beta_end"]) == (a["beta_start"], a["beta_end"])
        assert d["width"] == a["mid_features"]
        assert d["lr_schedule"] == "constant" and d["batch_order"] == "in_order"

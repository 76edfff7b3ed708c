"""The layout guards the design: entry points stay thin, studies are library code."""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ("gmm1d", "gmm2d", "detection", "trajectories", "score_analysis", "ablations",
           "convergence", "shapes", "shapes_detection", "recursive")


def logic_lines(path: Path) -> int:
    """Non-blank, non-comment source lines inside function bodies (docstrings left out)."""
    src = path.read_text()
    lines = src.splitlines()
    covered = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                body = body[1:]
            for statement in body:
                covered.update(range(statement.lineno, statement.end_lineno + 1))
    code = [lines[n - 1].strip() for n in covered]
    return sum(1 for text in code if text and not text.startswith("#"))


def test_logic_lines_counts_function_bodies_only(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('X = 1\n\n\ndef f(a):\n    """doc."""\n    # why\n    b = a + 1\n\n    return b\n')
    assert logic_lines(f) == 2


def test_entry_points_hold_at_most_15_percent_of_the_logic():
    experiments = sum(logic_lines(p) for p in (ROOT / "experiments").glob("*.py"))
    library = sum(logic_lines(p) for p in (ROOT / "mi_jax").rglob("*.py"))
    assert experiments <= 0.15 * (experiments + library), (experiments, library)


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_has_the_study_interface(name):
    from mi_jax import config

    study = importlib.import_module(f"mi_jax.studies.{name}")
    for preset in study.PRESETS:
        cfg = config.preset(study.Config, study.PRESETS, preset)
        assert hash(cfg) == hash(config.preset(study.Config, study.PRESETS, preset))
        assert config.from_values(study.Config, cfg.to_dict()) == cfg  # saved form round-trips
    assert callable(study.validate) and callable(study.run)
    entry = (ROOT / "experiments" / f"{name}.py").read_text()
    assert f"cli.main({name})" in entry

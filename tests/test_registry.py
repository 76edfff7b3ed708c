"""The study registry: each study declares its needs, metrics schema, summary section and ledger
claims; a renamed metrics key fails loudly (when written, when read, and in a reader); the
studies' import graph has no cycle."""

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from mi_jax import ledger, report
from mi_jax.studies import registry
from mi_jax.validation import InputError

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ROOT / "mi_jax" / "studies"


def _complete(study) -> dict:
    """Metrics holding every key `study` declares (values irrelevant to the check)."""
    return {**{k: {} for k in study.schema.metrics},
            "headline": {k: None for k in study.schema.headline}}


def test_every_registered_study_declares_itself():
    for name in registry.MAIN_JOB + registry.BESIDE_MAIN_JOB:
        study = registry.get(name)
        assert study.name == name
        assert set(study.needs) <= set(registry.MAIN_JOB), name
        assert name not in study.needs
    for name in registry.MAIN_JOB:  # each has its section of summary.md
        assert registry.get(name).summary is not None, name
    with pytest.raises(InputError, match=r"^study=gmm3d: not registered"):
        registry.get("gmm3d")


def test_ledger_rows_come_from_the_studies_in_the_stated_order():
    claims = ledger.claims()
    keys = [c.key for c in claims]
    assert keys == list(ledger.ROW_ORDER)  # no stale name in ROW_ORDER, none unlisted
    owned = {c.key: s.name for s in registry.studies() for c in s.claims}
    assert owned["detect_auroc_2d_best"] == "detection"
    assert owned["vdm_interpolates"] == "vdm"
    assert owned["shapes_detect"] == "shapes_detection"
    assert {c.key for c in ledger.PAPER_ONLY} == {"hands", "shapes_64"}


@pytest.mark.parametrize("name", registry.MAIN_JOB + registry.BESIDE_MAIN_JOB)
def test_a_renamed_metrics_key_fails_when_written(tmp_path, name):
    study = registry.get(name)
    study.write_metrics(tmp_path, _complete(study))  # the declared layout passes
    assert study.read_metrics(tmp_path) == json.loads((tmp_path / "metrics.json").read_text())
    key = study.schema.metrics[-1]
    renamed = _complete(study)
    renamed[key + "_v2"] = renamed.pop(key)
    (tmp_path / "metrics.json").unlink()
    with pytest.raises(registry.SchemaError, match=rf"{name} metrics lack {key} "):
        study.write_metrics(tmp_path, renamed)
    assert not (tmp_path / "metrics.json").exists()  # nothing written


def test_a_renamed_key_fails_when_a_finished_run_is_read(tmp_path):
    study = registry.get("gmm2d")
    metrics = _complete(study)
    metrics["pair_shares"] = metrics.pop("pairs")
    metrics["headline"].pop("x_axis_share")
    (tmp_path / "gmm2d").mkdir()
    (tmp_path / "gmm2d" / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(registry.SchemaError,
                       match=r"^metrics=.*gmm2d/metrics.json: gmm2d metrics lack pairs, "
                             r"headline.x_axis_share \(declared by mi_jax.studies.gmm2d.STUDY\)"):
        ledger.ledger_from_workdir(tmp_path)


def test_a_reader_of_an_undeclared_key_fails_instead_of_not_measured(monkeypatch):
    # The schema renamed "pairs" but the rotated-grid extractor still reads "pairs": that row
    # must not silently read "not measured".
    from mi_jax.studies import gmm2d

    schema = dataclasses.replace(gmm2d.STUDY.schema, metrics=tuple(
        "pair_shares" if k == "pairs" else k for k in gmm2d.STUDY.schema.metrics))
    monkeypatch.setattr(gmm2d, "STUDY", dataclasses.replace(gmm2d.STUDY, schema=schema))
    results = {"gmm2d": {"metrics": {"pair_shares": {}}, "config": {}}}
    with pytest.raises(registry.SchemaError, match=r"^key=pairs: not in the metrics schema of "
                                                   r"gmm2d"):
        ledger.ledger(results)


def test_the_summary_has_each_studys_section_in_registry_order():
    sections = {
        "trajectories": {"headline": {}},
        "ablations": {"headline": {"samplers": {"square": {"T=1000": [0.1, None, 0.0]}}}},
    }
    text = report.summary_markdown(sections, "quick")
    assert text.index("## Trajectories") < text.index("## Sampler and training ablations")
    assert "| square | T=1000 | 10.00% (1 seed) | 0.00% |" in text
    assert "Claims ledger" not in text and "## 1D" not in text


def _imports(path: Path, package: str, modules) -> set:
    """The modules of `modules` that `path` imports anywhere (top level or inside a function);
    `from P import m` counts as importing the module P.m where there is one, else P."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative to the module's own package
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    return {m for m in found if m in modules}


def _study_modules() -> dict:
    modules = {}
    for path in STUDIES.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if parts[-1] == "__init__" else ".".join(parts[:-1])
        modules[name] = (path, package)
    return modules


def test_the_studies_import_graph_has_no_cycle():
    modules = _study_modules()
    graph = {name: sorted(m for m in _imports(path, pkg, modules) if m != name)
             for name, (path, pkg) in modules.items()}
    assert "mi_jax.studies.mixture_study" in graph and graph["mi_jax.studies.gmm1d"]
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_cycle_check_sees_a_cycle_through_a_lazy_import(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from mi_jax.studies import b\n")
    b.write_text("def f():\n    from mi_jax.studies import a\n")
    modules = {"mi_jax.studies.a", "mi_jax.studies.b"}
    assert _imports(a, "mi_jax.studies", modules) == {"mi_jax.studies.b"}
    assert _imports(b, "mi_jax.studies", modules) == {"mi_jax.studies.a"}

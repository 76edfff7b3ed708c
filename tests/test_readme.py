"""The README's and the library tour's examples run as written, the README's first block is what
CI runs, and the docs it links to exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_python_examples_run():
    """Every python block of the README and of docs/library.md, each in a fresh namespace (the
    tour: own network and optax optimiser, a 2 x 3 sweep, a respaced DDIM with two observers)."""
    blocks = []
    for name in ("README.md", "docs/library.md"):
        found = re.findall(r"```python\n(.*?)```", (ROOT / name).read_text(), re.S)
        assert found, f"{name} lacks its python examples"
        blocks += found
    assert len(blocks) >= 4
    import jax

    # README code is user code: it runs under the users' default (implicit rank promotion
    # allowed), not under the tests' "raise" that guards the project's own code.
    with jax.numpy_rank_promotion("allow"):
        for block in blocks:
            exec(compile(block, "README.md", "exec"), {})


def test_first_block_is_two_commands_and_ci_runs_the_tests():
    text = (ROOT / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert len(first) == 2
    assert "experiments.reproduce" in first[0]
    test_cmd = first[1].split("&&")[-1].strip()
    assert test_cmd.startswith("python -m pytest")
    assert test_cmd in (ROOT / ".ci" / "run").read_text()


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text()
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        assert (ROOT / link).exists(), link
    assert len(text.splitlines()) <= 150


def test_api_reference_is_generated_from_the_docstrings():
    from mi_jax import apidoc

    text = (ROOT / "docs" / "api.md").read_text()
    assert apidoc.current(text) == apidoc.render(), "run: python -m mi_jax.apidoc --write"
    for name, obj in apidoc.public_symbols():
        assert len(apidoc._summary(obj)) >= 15, f"{name} lacks a docstring"


def test_results_doc_is_generated_from_the_committed_ledgers(tmp_path, monkeypatch):
    from mi_jax import ledger

    monkeypatch.chdir(ROOT)  # the doc cites the ledgers by their paths in the repository
    text = ledger.write_results(tmp_path / "results.md",
                                ["quick budget:results/quick", "paper budget:results/paper"])
    assert (ROOT / "docs" / "results.md").read_text() == text, (
        "run: python -m experiments.ledger --results=docs/results.md")

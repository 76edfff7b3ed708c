"""The README's library example runs as written, and its first block is what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_python_examples_run():
    """Every python block of the README, each in a fresh namespace (the library tour included:
    own network and optax optimiser, a 2 x 3 sweep, a respaced DDIM with two observers)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2, "README lacks its python examples"
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


def test_readme_api_section_is_generated_from_the_docstrings():
    from mi_jax import apidoc

    text = (ROOT / "README.md").read_text()
    assert apidoc.current(text) == apidoc.render(), "run: python -m mi_jax.apidoc --write"
    for name, obj in apidoc.public_symbols():
        assert len(apidoc._summary(obj)) >= 15, f"{name} lacks a docstring"

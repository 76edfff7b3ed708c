"""The README's library example runs as written, and its first block is what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_python_example_runs():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no python example"
    exec(compile(blocks[0], "README.md", "exec"), {})


def test_first_block_is_two_commands_and_ci_runs_the_tests():
    text = (ROOT / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert len(first) == 2
    assert "experiments.reproduce" in first[0]
    test_cmd = first[1].split("&&")[-1].strip()
    assert test_cmd.startswith("python -m pytest")
    assert test_cmd in (ROOT / ".ci" / "run").read_text()

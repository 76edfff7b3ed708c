"""Shared by the benchmark scripts: each case runs in a fresh subprocess (its own peak memory and
compile) and prints one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mi_jax.workdir import peak_rss_mib

__all__ = ["peak_rss_mib", "print_table", "run_case", "run_command", "write_results"]


def run_command(cmd: list[str], env: dict | None = None) -> dict:
    """Run `cmd` in a fresh process; its last stdout line parsed as JSON."""
    out = subprocess.run(cmd, capture_output=True, text=True,
                         env=dict(os.environ) if env is None else env)
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{' '.join(cmd)} failed")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {' '.join(cmd[1:])}: {result}", file=sys.stderr, flush=True)
    return result


def run_case(module: str, *args: str, env: dict | None = None) -> dict:
    """`python -m module *args` in a fresh process; its last stdout line parsed as JSON."""
    return run_command([sys.executable, "-m", module, *args], env)


def print_table(header: list, rows: list) -> None:
    """A markdown table: one header row and rows of already formatted cells."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def write_results(path, results) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)

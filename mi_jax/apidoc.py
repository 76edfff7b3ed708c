"""The API reference (docs/api.md), generated from the docstrings of `mi_jax.__all__` (so it
cannot drift).

    python -m mi_jax.apidoc            # print the table
    python -m mi_jax.apidoc --write    # replace it in docs/api.md (between the two markers)

A test checks that docs/api.md holds exactly what `render()` returns.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

START, END = "<!-- api:start (python -m mi_jax.apidoc --write) -->", "<!-- api:end -->"
API_DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def _summary(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    first = doc.split("\n\n")[0]
    return " ".join(first.split())


def _signature(name: str, obj) -> str:
    if inspect.isclass(obj) or inspect.isfunction(obj):
        try:
            sig = inspect.signature(obj)
        except (TypeError, ValueError):
            return f"{name}(...)"
        bare = sig.replace(parameters=[p.replace(annotation=inspect.Parameter.empty)
                                       for p in sig.parameters.values()],
                           return_annotation=inspect.Signature.empty)
        text = re.sub(r"<function (\w+) at 0x[0-9a-f]+>", r"\1", str(bare))
        return f"{name}{re.sub(r' at 0x[0-9a-f]+', '', text)}"
    return name


def public_symbols() -> list:
    """(name, object) of every public symbol, in `mi_jax.__all__` order (the version excluded)."""
    import mi_jax

    return [(n, getattr(mi_jax, n)) for n in mi_jax.__all__ if not n.startswith("__")]


def render() -> str:
    """The API section as Markdown: one line per public symbol (signature, docstring summary)."""
    lines = [START, "", "| symbol | what it is |", "|---|---|"]
    for name, obj in public_symbols():
        sig = _signature(name, obj).replace("|", "\\|")
        lines.append(f"| `{sig}` | {_summary(obj).replace('|', '/')} |")
    lines += ["", END]
    return "\n".join(lines)


def current(text: str) -> str | None:
    """The API section found in a document's text, or None."""
    if START not in text or END not in text:
        return None
    return text[text.index(START): text.index(END) + len(END)]


def main(argv) -> int:
    section = render()
    if "--write" not in argv:
        print(section)
        return 0
    text = API_DOC.read_text()
    old = current(text)
    if old is None:
        print(f"{API_DOC} has no {START} ... {END} markers", file=sys.stderr)
        return 2
    API_DOC.write_text(text.replace(old, section))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

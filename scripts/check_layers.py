"""Check nightowl's package layering: no import cycle between subpackages, no upward import.

Every ``import nightowl.X...`` / ``from nightowl.X... import`` (including function-level
imports) is read with ``ast``. Packages are ordered in LAYERS (lowest first); a package may
import only packages in a strictly lower layer (or itself). Exit 1 with the offending
imports listed.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# Lowest layer first. A package may import only from layers below its own.
LAYERS: list[set[str]] = [
    {"errors", "sandbox"},
    {"config", "db"},
    {"storage", "checkpoints_sqlite", "llm", "envs"},
    {"checkpoints"},
    {"ledger"},
    {"memory"},
    {"distill", "sleeptime"},
    {"agent"},
    {"chat"},
    {"app"},
    {"workers", "server"},
    {"cli"},
    {"__init__"},
]


def layer_of(pkg: str) -> int:
    """The layer index of a top-level package or module."""
    for i, names in enumerate(LAYERS):
        if pkg in names:
            return i
    raise KeyError(pkg)


def top(root: Path, path: Path) -> str:
    """The top-level package (or module) a file belongs to."""
    rel = path.relative_to(root)
    if len(rel.parts) == 1 and rel.stem == "__init__":
        return "__init__"
    return rel.parts[0].removesuffix(".py")


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level nightowl package) of every absolute nightowl import in a file."""
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return [(ln, m.split(".")[1]) for ln, m in out if m.startswith("nightowl.")]


def main() -> int:
    """Print every violation; 1 if any."""
    root = Path(__file__).resolve().parents[1] / "nightowl"
    bad: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        src = top(root, path)
        if src == "__main__":
            continue
        for ln, dst in imports(path):
            if dst == src:
                continue
            try:
                ok = layer_of(dst) < layer_of(src)
            except KeyError as e:
                bad.append(f"{path.relative_to(root.parent)}:{ln}: unknown package {e}")
                continue
            if not ok:
                bad.append(f"{path.relative_to(root.parent)}:{ln}: {src} imports {dst}")
    for line in bad:
        print(line)
    print(f"{len(bad)} layering violations")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

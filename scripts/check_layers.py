"""Check nightowl's import structure: layering between packages and no module-level cycles.

The whole package is read with ``ast`` into a module-level import graph. An edge is one of

* ``import``: a module-level ``import nightowl.x`` / ``from nightowl.x import y`` (relative
  imports are resolved too; ``from P import m`` points at the module ``P.m`` when it exists);
* ``local``: the same inside a function or method body (it runs on the first call, so it
  counts for cycles like a module-level one);
* ``typing``: inside ``if TYPE_CHECKING:`` (never runs; ignored for cycles);
* ``string``: a lazy reference written as a string: ``"nightowl.x.y:Name"`` anywhere (the
  entry-point / lazy-registry form), or ``"nightowl.x.y"`` as the argument of
  ``import_module`` / ``find_spec`` or as an item of a dict/list/tuple/set literal (lazy
  export tables). A plain module-name string elsewhere (a logger name, an entry-point group)
  is data, not a reference.

Rules, one output line per problem and a summary line; exit 1 when there is any problem
(an import or ``module:Name`` string that names no module also counts as a violation):

1. Layering: top-level packages are ordered in LAYERS (lowest first); a package may use only
   packages in a strictly lower layer (or itself). Every edge kind counts, ``typing`` too.
2. Import cycles: every strongly connected component of more than one module in the graph
   without ``typing`` edges is reported with one concrete cycle through it.
3. Package cycles: inside every package the same holds one level up: its direct children
   (sub-packages taken as a whole, modules, and its own ``__init__``) must not form a cycle,
   e.g. ``agent.search`` may use ``agent.tiers`` or the reverse, never both. Cycles that are
   already reported as an import cycle are not repeated. The top level is left to rule 1
   (a strict layer order has no cycle), unless layering is switched off.

A few lazy back-edges are accepted on purpose (ALLOWED, each with its reason): they stay in
the graph (``--graph`` marks them) but are left out of rules 2 and 3; an allowance that no
longer matches any edge is itself a problem, so the list cannot go stale.

``--graph`` prints the edge list first; ``--root DIR`` checks another package directory.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

# Lowest layer first. A package may import only from layers below its own.
LAYERS: list[set[str]] = [
    {"errors", "sandbox"},
    {"config_sleep", "config_memory"},
    {"config", "db", "plugins"},
    {"storage", "checkpoints_sqlite", "llm", "envs", "telemetry"},
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

#: (src, dst glob, edge kind) -> why this edge may close a cycle. Only lazy ``string`` edges
#: belong here: they resolve at call time, after both modules are loaded.
ALLOWED: dict[tuple[str, str, str], str] = {}

SKIP_DIRS = {"migrations", "__pycache__"}
IMPORTERS = {"import_module", "find_spec"}
_STRING_REF = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(:[A-Za-z_][\w.]*)?$")


@dataclass(frozen=True, order=True)
class Edge:
    """One reference from module ``src`` to module ``dst``."""

    src: str
    dst: str
    line: int
    kind: str  # "import" | "local" | "typing" | "string"
    path: str = field(compare=False)


@dataclass
class Report:
    """Everything found in one package tree."""

    modules: dict[str, Path]
    edges: list[Edge]
    problems: list[str] = field(default_factory=list)
    cycles: int = 0
    package_cycles: int = 0
    violations: int = 0

    def summary(self) -> str:
        """The last line of the output."""
        return (
            f"{len(self.problems)} problems: {self.cycles} import cycles, "
            f"{self.package_cycles} package cycles, {self.violations} layering violations"
        )


def layer_of(pkg: str) -> int:
    """The layer index of a top-level package or module."""
    for i, names in enumerate(LAYERS):
        if pkg in names:
            return i
    raise KeyError(pkg)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level nightowl package) of every absolute nightowl import in a file.

    The per-file view of the layering rule (kept for callers; `check` reads the graph).
    """
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return [(ln, m.split(".")[1]) for ln, m in out if m.startswith("nightowl.")]


def module_name(root: Path, path: Path) -> str:
    """Dotted name of a file under ``root`` (a package ``__init__`` is the package)."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def find_modules(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``, by dotted name."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        if SKIP_DIRS.isdisjoint(path.relative_to(root).parts):
            out[module_name(root, path)] = path
    return out


def _name(node: ast.expr) -> str:
    """The last name of ``x`` / ``a.b.x``."""
    return str(getattr(node, "id", None) or getattr(node, "attr", ""))


class _Refs(ast.NodeVisitor):
    """Collects (line, kind, candidate targets) from one module's syntax tree."""

    def __init__(self, name: str, is_package: bool, prefix: str) -> None:
        self.package = name if is_package else name.rpartition(".")[0]
        self.prefix = prefix
        self.depth = 0  # function nesting
        self.typing = 0  # TYPE_CHECKING nesting
        self.refs: list[tuple[int, str, list[str]]] = []

    def _kind(self) -> str:
        return "typing" if self.typing else "local" if self.depth else "import"

    def _ours(self, name: str) -> bool:
        return name == self.prefix or name.startswith(self.prefix + ".")

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_Lambda = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if _name(node.test) != "TYPE_CHECKING":
            self.generic_visit(node)
            return
        self.typing += 1
        for stmt in node.body:
            self.visit(stmt)
        self.typing -= 1
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if self._ours(alias.name):
                self.refs.append((node.lineno, self._kind(), [alias.name]))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join([*parts, *([base] if base else [])])
        if not self._ours(base):
            return
        for alias in node.names:
            self.refs.append((node.lineno, self._kind(), [f"{base}.{alias.name}", base]))

    def _string(self, node: ast.expr, *, plain: bool) -> None:
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            return
        m = _STRING_REF.match(node.value)
        if m and self._ours(m[1]) and (plain or m[2]):
            # a plain module name that names no module is data (a task name, a file name)
            self.refs.append((node.lineno, "string" if m[2] else "string?", [m[1]]))

    def visit_Constant(self, node: ast.Constant) -> None:
        self._string(node, plain=False)  # only the "module:Name" form

    def visit_Call(self, node: ast.Call) -> None:
        if _name(node.func) in IMPORTERS and node.args:
            self._plain(node.args[:1])
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        self._plain(node.values)
        self.generic_visit(node)

    def visit_List(self, node: ast.List | ast.Tuple | ast.Set) -> None:
        self._plain(node.elts)
        self.generic_visit(node)

    visit_Tuple = visit_Set = visit_List

    def _plain(self, nodes: Iterable[ast.expr | None]) -> None:
        for n in nodes:
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and ":" not in n.value:
                self._string(n, plain=True)


def build_graph(root: Path) -> tuple[dict[str, Path], list[Edge], list[str]]:
    """Modules, edges (self-references dropped) and unresolvable references."""
    modules = find_modules(root)
    edges: set[Edge] = set()
    unresolved: list[str] = []
    for name, path in modules.items():
        rel = str(path.relative_to(root.parent))
        visitor = _Refs(name, path.name == "__init__.py", root.name)
        visitor.visit(ast.parse(path.read_text(), str(path)))
        for line, kind, candidates in visitor.refs:
            dst = next((c for c in candidates if c in modules), None)
            if dst is None and kind != "string?":
                unresolved.append(f"{rel}:{line}: unknown module {candidates[-1]}")
            elif dst is not None and dst != name:
                edges.add(Edge(name, dst, line, kind.rstrip("?"), rel))
    return modules, sorted(edges), unresolved


def _adjacency(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    adj: dict[str, set[str]] = {n: set() for n in nodes}
    for a, b in edges:
        if a != b:
            adj.setdefault(a, set()).add(b)
            adj.setdefault(b, set())
    return adj


def _reach(adj: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for w in adj[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def sccs(adj: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node, each sorted, in order."""
    radj: dict[str, set[str]] = {v: set() for v in adj}
    for v, ws in adj.items():
        for w in ws:
            radj[w].add(v)
    done: set[str] = set()
    out = []
    for v in sorted(adj):
        if v not in done:
            comp = _reach(adj, v) & _reach(radj, v)
            done |= comp
            if len(comp) > 1:
                out.append(sorted(comp))
    return sorted(out)


def cycle_in(comp: Sequence[str], adj: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the first node of a component: [a, b, ..., a]."""
    members, start = set(comp), comp[0]
    prev: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(adj[v] & members):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [*reversed(path), start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    raise AssertionError("a component without a cycle")


def _where(path: list[str], edges: list[Edge], unit: Callable[[str], str | None] = str) -> str:
    """``file:line`` of the first edge behind each hop of a cycle."""
    first: dict[tuple[str | None, str | None], Edge] = {}
    for e in edges:
        first.setdefault((unit(e.src), unit(e.dst)), e)
    hops = [first[(a, b)] for a, b in zip(path, path[1:], strict=False)]
    return ", ".join(f"{e.path}:{e.line}" + ("" if e.kind == "import" else f" ({e.kind})")
                     for e in hops)


def allowance(e: Edge, allowed: dict[tuple[str, str, str], str]) -> tuple[str, str, str] | None:
    """The ALLOWED key that lets edge ``e`` close a cycle, if any."""
    return next((k for k in allowed
                 if k[0] == e.src and fnmatch(e.dst, k[1]) and k[2] == e.kind), None)


def _layering(report: Report, layers: list[set[str]]) -> None:
    rank = {n: i for i, names in enumerate(layers) for n in names}
    for e in report.edges:
        a, b = ((m.split(".") + ["__init__"])[1] for m in (e.src, e.dst))
        if a == b or a == "__main__" or rank.get(b, -1) in range(rank.get(a, -1)):
            continue
        unknown = [n for n in (a, b) if n not in rank]
        report.problems.append(f"{e.path}:{e.line}: " + (
            f"unknown package {unknown[0]!r}" if unknown else f"{a} imports {b}"))
        report.violations += 1


def _package_cycles(
    report: Report, runtime: list[Edge], module_sccs: list[list[str]], *, root: bool
) -> None:
    packages = sorted(n for n, p in report.modules.items()
                      if p.name == "__init__.py" and (root or "." in n))
    for pkg in packages:
        def unit(m: str, pkg: str = pkg) -> str | None:
            if m == pkg:
                return "__init__"
            return m[len(pkg) + 1:].split(".")[0] if m.startswith(pkg + ".") else None

        inner = [e for e in runtime if unit(e.src) and unit(e.dst)]
        padj = _adjacency([], ((unit(e.src) or "", unit(e.dst) or "") for e in inner))
        seen = [{unit(m) for m in comp} for comp in module_sccs]
        for comp in sccs(padj):
            if any(set(comp) <= s for s in seen):
                continue  # already reported as an import cycle
            path = cycle_in(comp, padj)
            report.problems.append(
                f"package cycle in {pkg}: {' -> '.join(path)}  [{_where(path, inner, unit)}]"
            )
            report.package_cycles += 1


def check(
    root: Path,
    layers: list[set[str]] | None = LAYERS,
    allowed: dict[tuple[str, str, str], str] | None = None,
) -> Report:
    """Check the package at ``root``.

    ``layers=None`` skips the layering rule; ``allowed`` are the accepted back-edges
    (`main` passes ALLOWED for nightowl itself, none for another ``--root``).
    """
    allowed = {} if allowed is None else allowed
    modules, edges, unresolved = build_graph(root)
    report = Report(modules, edges, problems=list(unresolved), violations=len(unresolved))
    if layers is not None:
        _layering(report, layers)
    used = {allowance(e, allowed) for e in edges}
    for key in allowed.keys() - used:
        report.problems.append(f"stale allowance (matches no edge): {' -> '.join(key[:2])}")
        report.violations += 1
    runtime = [e for e in edges if e.kind != "typing" and allowance(e, allowed) is None]
    adj = _adjacency(modules, ((e.src, e.dst) for e in runtime))
    module_sccs = sccs(adj)
    for comp in module_sccs:
        path = cycle_in(comp, adj)
        report.problems.append(
            f"import cycle ({len(comp)} modules): {' -> '.join(path)}  [{_where(path, runtime)}]"
        )
    report.cycles = len(module_sccs)
    _package_cycles(report, runtime, module_sccs, root=layers is None)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Print every problem and a summary; 1 if any."""
    default = Path(__file__).resolve().parents[1] / "nightowl"
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--graph", action="store_true", help="print the edge list first")
    parser.add_argument("--root", type=Path, default=default, help="the package directory")
    parser.add_argument("--no-layers", action="store_true", help="skip the layering rule")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    allowed = ALLOWED if root == default else {}
    report = check(root, None if args.no_layers else LAYERS, allowed)
    if args.graph:
        for e in report.edges:
            ok = " (allowed)" if allowance(e, allowed) else ""
            print(f"{e.src} -> {e.dst}  [{e.kind}{ok}] {e.path}:{e.line}")
    for line in report.problems:
        print(line)
    print(report.summary())
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())

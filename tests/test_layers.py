"""The import checker (scripts/check_layers.py): module cycles, package cycles, layering."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cl() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "scripts/check_layers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layers"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["check_layers"]
    return module


def _package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()
    return root


TOY = {
    # a <-> b: the back-edge is a function-local import, which counts
    "a.py": "import toy.b\nimport toy.quiet\n",
    "b.py": "def f():\n    from toy import a\n    return a\n",
    # c -> d, d -> c only under TYPE_CHECKING: not a cycle
    "c.py": "from toy.d import D\n",
    "d.py": """\
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from toy.c import C
        class D: ...
        """,
    # a lazy registry names its plugin as a string; the plugin imports the registry
    "reg.py": 'PLUGINS = {"x": "toy.plug:Thing"}\n',
    "plug.py": "from toy.reg import PLUGINS\nclass Thing: ...\n",
    # module names that are data: a logger name, an entry-point group, a task name
    "quiet.py": 'import logging\nlog = logging.getLogger("toy.a")\nGROUP = "toy.a"\n'
                'ROUTES = {"toy.a.run": "q"}\n',
    # sub-packages that use each other, without any module-level cycle
    "sub1/x.py": "from toy.sub2.y import Y\n",
    "sub1/w.py": "W = 1\n",
    "sub2/y.py": "Y = 1\n",
    "sub2/z.py": "from toy.sub1.w import W\n",
    # relative imports are resolved
    "rel/p.py": "from . import q\n",
    "rel/q.py": "from .p import q as _\n",
    # importlib with a plain module name counts
    "lazy.py": 'import importlib\ndef load():\n    return importlib.import_module("toy.eager")\n',
    "eager.py": "from toy.lazy import load\n",
}


def test_reports_real_cycles_and_not_type_checking_ones(cl: ModuleType, tmp_path: Path) -> None:
    report = cl.check(_package(tmp_path / "toy", TOY), layers=None)
    cycles = [p for p in report.problems if p.startswith("import cycle")]
    assert cycles == [
        "import cycle (2 modules): toy.a -> toy.b -> toy.a  [toy/a.py:1, toy/b.py:2 (local)]",
        "import cycle (2 modules): toy.eager -> toy.lazy -> toy.eager"
        "  [toy/eager.py:1, toy/lazy.py:3 (string)]",
        "import cycle (2 modules): toy.plug -> toy.reg -> toy.plug"
        "  [toy/plug.py:1, toy/reg.py:1 (string)]",
        "import cycle (2 modules): toy.rel.p -> toy.rel.q -> toy.rel.p"
        "  [toy/rel/p.py:1, toy/rel/q.py:1]",
    ]
    assert report.problems[len(cycles):] == [
        "package cycle in toy: sub1 -> sub2 -> sub1  [toy/sub1/x.py:1, toy/sub2/z.py:1]"
    ]
    assert (report.cycles, report.package_cycles, report.violations) == (4, 1, 0)
    assert not [p for p in report.problems if "toy.c" in p or "toy.d" in p or "quiet" in p]
    kinds = {(e.src, e.dst): e.kind for e in report.edges}
    assert kinds[("toy.d", "toy.c")] == "typing"
    assert ("toy.quiet", "toy.a") not in kinds


def test_cli_exit_code_graph_and_summary(cl: ModuleType, tmp_path: Path) -> None:
    root = _package(tmp_path / "toy", TOY)
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts/check_layers.py"), "--root", str(root),
         "--no-layers", "--graph"],
        capture_output=True, text=True, check=False,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "toy.d -> toy.c  [typing] toy/d.py:3" in lines
    assert "toy.b -> toy.a  [local] toy/b.py:2" in lines
    assert lines[-1] == "5 problems: 4 import cycles, 1 package cycles, 0 layering violations"


def test_layering_and_unknown_modules(cl: ModuleType, tmp_path: Path) -> None:
    root = _package(tmp_path / "toy", {
        "low/m.py": "def f():\n    from toy.high.n import N\n",
        "high/n.py": "from toy.low.m import f\nfrom toy.low.gone import g\nN = 1\n",
        "other.py": 'X = "toy.nowhere:Thing"\n',
    })
    report = cl.check(root, layers=[{"low"}, {"high"}, {"__init__"}])
    assert report.problems == [
        "toy/high/n.py:2: unknown module toy.low.gone",
        "toy/other.py:1: unknown module toy.nowhere",
        "toy/low/m.py:2: low imports high",
        "import cycle (2 modules): toy.high.n -> toy.low.m -> toy.high.n"
        "  [toy/high/n.py:1, toy/low/m.py:2 (local)]",
    ]
    assert report.violations == 3


def test_allowances_skip_one_edge_and_cannot_go_stale(cl: ModuleType, tmp_path: Path) -> None:
    root = _package(tmp_path / "toy", TOY)
    allowed = {("toy.reg", "toy.*", "string"): "a lazy registry",
               ("toy.gone", "toy.a", "string"): "stale"}
    report = cl.check(root, layers=None, allowed=allowed)
    assert not [p for p in report.problems if "toy.reg" in p]
    assert "stale allowance (matches no edge): toy.gone -> toy.a" in report.problems
    assert report.cycles == 3


def test_the_real_tree_has_no_problems(cl: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert cl.main([]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == (
        "0 problems: 0 import cycles, 0 package cycles, 0 layering violations"
    )
    report = cl.check(ROOT / "nightowl", allowed=cl.ALLOWED)
    kinds = {e.kind for e in report.edges}
    assert kinds == {"import", "local", "typing", "string"}
    # the lazy tables are seen: the package root's exports, the model registry
    pairs = {(e.src, e.dst) for e in report.edges if e.kind == "string"}
    assert ("nightowl", "nightowl.app") in pairs
    assert ("nightowl.llm.registry", "nightowl.llm.scripted") in pairs


def test_the_accepted_back_edges_are_still_cycles_without_their_allowance(
    cl: ModuleType,
) -> None:
    report = cl.check(ROOT / "nightowl", allowed={})
    assert report.cycles == len(cl.ALLOWED)

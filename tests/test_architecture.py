"""The package layering and the public API (issue: architecture)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nightowl

ROOT = Path(__file__).resolve().parents[1]


def test_no_upward_imports_and_no_package_cycles() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_layers.py")],
        capture_output=True, text=True, check=False,
    )
    assert r.returncode == 0, r.stdout
    assert r.stdout.strip().endswith("0 layering violations")


def test_layer_checker_catches_an_upward_import(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import check_layers
    finally:
        sys.path.pop(0)
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from nightowl.app import Nightowl\n")
    assert check_layers.imports(bad) == [(2, "app")]
    assert check_layers.layer_of("app") > check_layers.layer_of("memory")


def test_public_api_names_resolve() -> None:
    for name in nightowl.__all__:
        assert getattr(nightowl, name) is not None, name
    assert set(nightowl.__all__) == set(nightowl._EXPORTS) | {"__version__"}


def test_import_nightowl_is_cheap() -> None:
    code = "import sys, nightowl; print('torch' in sys.modules, 'langgraph' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["False", "False"]

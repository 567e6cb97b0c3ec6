"""CLI input: every numeric option has a lower and an upper bound in its type, so a
negative or absurd number is refused by the parser; binary context files are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
import typer.main
from typer.testing import CliRunner, Result

from nightowl.cli.main import app
from nightowl.config import get_settings


def _commands(group: Any, prefix: str = "nightowl") -> list[tuple[str, Any]]:
    out = [(prefix, group)]
    for name, cmd in (getattr(group, "commands", None) or {}).items():
        out += _commands(cmd, f"{prefix} {name}")
    return out


def _numeric(param: Any) -> bool:
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None:
        return False
    kinds = set(get_args(descriptor.annotation)) or {descriptor.annotation}
    return bool(kinds & {int, float})


def test_every_numeric_option_is_bounded() -> None:
    root = typer.main.get_command(app)
    unbounded = []
    numeric = 0
    for path, cmd in _commands(root):
        for param in cmd.params:
            if not _numeric(param):
                continue
            numeric += 1
            if param.min is None or param.max is None:
                unbounded.append(f"{path} {param.opts[0]} (min {param.min}, max {param.max})")
    assert numeric > 30
    assert not unbounded, "\n".join(unbounded)


def _cli(*args: str, stdin: bytes | None = None, home: Path | None = None) -> Result:
    """The CLI in-process (typer's runner), with its own data home."""
    env = {"NIGHTOWL_HOME": str(home)} if home else {}
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args), input=stdin, env=env)
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    "args",
    [
        ("envs", "play", "twx/coin/test/20003", "--max-steps", "-3"),
        ("envs", "play", "twx/coin/test/20003", "--max-steps", "10000000"),
        ("envs", "tasks", "twx", "--limit", "-1"),
        ("keys", "create", "k", "--budget", "-5"),
        ("models", "try", "smollm2", "hi", "--temperature", "1e9"),
        ("run", "--env", "twx", "--concurrency", "100000"),
    ],
)
def test_absurd_numbers_are_refused_by_the_parser(args: tuple[str, ...]) -> None:
    out = _cli(*args)
    assert out.exit_code == 2, out.output[-500:]
    assert "Invalid value" in out.output


def test_sleep_add_refuses_binary_unless_told(tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"text\x00\x01\x02 more")
    out = _cli("sleep", "add", str(blob), home=tmp_path)
    err = out.output.strip()
    assert out.exit_code == 2 and "NUL byte at offset 4" in err and "\n" not in err, err
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    out = _cli("sleep", "add", str(latin), home=tmp_path)
    assert out.exit_code == 2 and "not UTF-8" in out.output
    out = _cli("sleep", "add", "-", stdin=b"a\x00b", home=tmp_path)
    assert out.exit_code == 2 and "standard input looks binary" in out.output
    ok = _cli("sleep", "add", str(blob), "--binary-ok", home=tmp_path)
    assert ok.exit_code == 0, ok.output[-500:]
    listed = _cli("sleep", "list", home=tmp_path)
    assert listed.exit_code == 0 and "blob.bin" in listed.output

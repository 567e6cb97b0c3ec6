"""Fixtures: real `nightowl` server processes on 127.0.0.1 (started as a user would)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A `nightowl ...` command serving HTTP on a port; `stop` ends it."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/v1"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_server(
    args: list[str], log: Path, *, env: dict[str, str] | None = None, ready: str = "/v1/models",
    timeout_s: float = 180.0, headers: dict[str, str] | None = None,
) -> ServerProcess:
    """Run ``python -m nightowl.cli.main <args> --port P`` and wait until ``ready`` answers."""
    port = free_port()
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    out = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nightowl.cli.main", *args, "--port", str(port)],
        stdout=out, stderr=subprocess.STDOUT, env=full_env,
    )
    server = ServerProcess(proc=proc, port=port, log=log)
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early: {log.read_text()[-2000:]}")
        try:
            r = httpx.get(f"{server.base}{ready}", timeout=2, headers=headers)
            if r.status_code < 500:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop(signal.SIGKILL)
            raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.3)


@pytest.fixture(scope="session")
def models_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`nightowl models serve smollm2` as a real process."""
    log = tmp_path_factory.mktemp("models-serve") / "server.log"
    server = start_server(["models", "serve", "smollm2"], log)
    try:
        yield server
    finally:
        server.stop()

"""Fixtures: the embedded model loaded once per session, and a real OpenAI-protocol server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from nightowl.config import load_settings
from nightowl.llm.registry import build_backend
from nightowl.llm.transformers import TransformersBackend


@pytest.fixture(scope="session")
def smollm2() -> TransformersBackend:
    backend = build_backend("smollm2", load_settings())
    assert isinstance(backend, TransformersBackend)
    return backend


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def server_url(smollm2: TransformersBackend) -> Iterator[str]:
    """nightowl's FastAPI server over the embedded model, uvicorn in a thread."""
    import uvicorn

    from nightowl.llm.serve import create_app

    port = free_port()
    config = uvicorn.Config(
        create_app(smollm2), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)

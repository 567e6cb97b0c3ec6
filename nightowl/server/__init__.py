"""`nightowl serve`: the chat assistant over the OpenAI protocol (FastAPI + uvicorn).

`build_app` wires the app: the root's `Assistant` (``Nightowl.assistant``, over the
root's database, ledger and models) -> `ChatService` -> FastAPI app.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from nightowl.errors import ConfigError, UserError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from nightowl.app import Nightowl
    from nightowl.chat import AssistantConfig
    from nightowl.chat.sleep import RethinkQueue
    from nightowl.server.service import ServerConfig


def load_oracle(path: Path) -> dict[str, str]:
    """A JSON object {question: gold answer} (the oracle teacher for data sets)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read oracle file {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"oracle file {path} must be a JSON object of question -> answer")
    return data


def build_app(
    root: Nightowl,
    assistant_config: AssistantConfig,
    server_config: ServerConfig,
    *,
    oracle_path: Path | None = None,
    rethink_queue: RethinkQueue | None = None,
    access_log: bool = True,
) -> FastAPI:
    """The root's Assistant -> ChatService -> FastAPI app.

    ``root`` (an opened `Nightowl`) owns the database the assistant, its ledger run and
    the API keys use; the caller closes it after the server stopped.

    ``rethink_queue`` (``queue(thread_id, revision)``) sends idle threads' sleep-time
    rethinks to workers; the server layer cannot import `nightowl.workers`, so the CLI
    passes ``default_queue().enqueue_thread_rethink`` when ``settings.broker_url`` is set.
    Without it (no broker) the ``--sleep`` loop rethinks in-process.

    ``access_log`` writes one line per request to the ``nightowl.access`` logger
    (`nightowl.server.access`; `configure_access_log` sends it to stderr).
    """
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        # fastapi and uvicorn are core dependencies; a trimmed install may still lack them.
        raise UserError(
            f"nightowl serve needs {exc.name or 'fastapi'!r}: pip install fastapi uvicorn"
        ) from None
    from nightowl.server.app import create_app
    from nightowl.server.service import ChatService

    gold = load_oracle(oracle_path) if oracle_path is not None else None
    oracle = (lambda q: gold.get(q.strip())) if gold is not None else None
    assistant = root.assistant(assistant_config, oracle=oracle, rethink_queue=rethink_queue)
    service = ChatService(
        assistant,
        server_config,
        has_teacher=gold is not None or assistant_config.teacher is not None,
    )
    return create_app(service, sleep=assistant_config.sleep, access_log=access_log)

"""The loop's SQLite checkpointer, written inline on the event loop.

LangGraph's `AsyncSqliteSaver` sends every statement through aiosqlite's worker thread:
a checkpoint costs tens of thread hops, which on a busy 2-core machine were most of the
loop's per-step overhead (see bench/overhead.py). A checkpoint write is one short local
SQLite transaction, so `InlineSqliteSaver` runs the sync `SqliteSaver` methods directly
from the async ones. WAL with ``synchronous=NORMAL``: a commit survives a killed process
(the durability resume needs), not a power cut.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.sqlite import SqliteSaver

from nightowl.db import SQLITE_BUSY_TIMEOUT_MS


class InlineSqliteSaver(SqliteSaver):
    """`SqliteSaver` usable by async graphs: the async methods run the sync ones inline."""

    async def aget_tuple(self, config: Any) -> CheckpointTuple | None:
        """See `SqliteSaver.get_tuple`."""
        return self.get_tuple(config)

    async def alist(
        self,
        config: Any,
        *,
        filter: dict[str, Any] | None = None,  # noqa: A002 - LangGraph's signature
        before: Any = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """See `SqliteSaver.list`."""
        for item in self.list(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(
        self,
        config: Any,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Any:
        """See `SqliteSaver.put`."""
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: Any,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """See `SqliteSaver.put_writes`."""
        self.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """See `SqliteSaver.delete_thread`."""
        self.delete_thread(thread_id)


@contextmanager
def open_sqlite_checkpointer(path: Path | str) -> Iterator[InlineSqliteSaver]:
    """An `InlineSqliteSaver` on the SQLite file ``path`` (created with its folder)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    # check_same_thread=False: SqliteSaver serialises access with its own lock
    conn = sqlite3.connect(str(p), check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        yield InlineSqliteSaver(conn)
    finally:
        conn.close()

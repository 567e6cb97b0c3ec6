"""LangGraph checkpoints stored next to nightowl's database, so a run can move between hosts.

`open_checkpointer(settings)` is an async context manager yielding a ready checkpointer:

- PostgreSQL database URL (``postgresql[+driver]://...``): LangGraph's `AsyncPostgresSaver`
  on a small `psycopg_pool.AsyncConnectionPool` (concurrent episodes do not queue on one
  connection), in the same database and ``search_path`` as nightowl's tables. Any worker
  that reaches the database sees every checkpoint: an episode started on one host
  resumes on another.
- anything else (the embedded SQLite default): `InlineSqliteSaver` on ``checkpoints.sqlite``
  in the folder of the SQLite database file (``settings.home`` for an in-memory database).

Tables are created on open (``setup()``; idempotent).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from nightowl.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver

    from nightowl.config import Settings

SQLITE_FILE = "checkpoints.sqlite"


def is_postgres(url: str) -> bool:
    """Whether a SQLAlchemy URL names a PostgreSQL database."""
    try:
        return make_url(url).get_backend_name() == "postgresql"
    except ArgumentError:
        raise ConfigError(f"bad database URL {url!r}") from None


def postgres_conninfo(url: str) -> str:
    """A libpq URI for psycopg from a SQLAlchemy URL (drops the ``+driver`` part)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def sqlite_checkpoint_path(settings: Settings) -> Path:
    """The SQLite checkpoint file: beside the SQLite database file, else in ``home``."""
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent / SQLITE_FILE
    return settings.home.resolve() / SQLITE_FILE


@asynccontextmanager
async def open_checkpointer(
    settings: Settings,
    *,
    pool_size: int = 4,
    connect_timeout_s: float = 30.0,
) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """Open the checkpointer that follows ``settings``' database (see module docstring).

    Args:
        settings: nightowl settings; ``resolved_database_url`` decides the store.
        pool_size: most PostgreSQL connections held at once.
        connect_timeout_s: how long to wait for the first PostgreSQL connection.

    Raises:
        StoreError: the database cannot be reached or its checkpoint tables not created.
    """
    url = settings.resolved_database_url
    if is_postgres(url):
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        # The keyword arguments are what AsyncPostgresSaver.from_conn_string uses.
        pool: AsyncConnectionPool = AsyncConnectionPool(
            postgres_conninfo(url),
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=connect_timeout_s)
        except Exception as exc:  # noqa: BLE001 - psycopg_pool raises PoolTimeout and others
            await pool.close()
            shown = make_url(url).render_as_string(hide_password=True)
            raise StoreError(f"cannot open checkpoints on {shown}: {exc}") from exc
        try:
            pg_saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
            await _setup_serialised(pg_saver, postgres_conninfo(url))
            yield pg_saver
        finally:
            await pool.close()
        return

    from nightowl.checkpoints_sqlite import open_sqlite_checkpointer

    # The inline saver: a checkpoint is one short local transaction, written on the
    # event loop (no aiosqlite thread hops; see nightowl/checkpoints_sqlite.py).
    with open_sqlite_checkpointer(sqlite_checkpoint_path(settings)) as saver:
        saver.setup()
        yield saver


#: arbitrary constant key of the advisory lock held while creating checkpoint tables
_PG_CHECKPOINT_SETUP_LOCK_KEY = 0x6E6F636B  # "nock"


async def _setup_serialised(saver: Any, conninfo: str, poll_s: float = 0.1) -> None:
    """``saver.setup()`` under a PostgreSQL advisory lock.

    LangGraph's setup is not safe against itself: two workers starting at once both see
    no ``checkpoint_migrations`` table and one fails with a unique violation. The lock is
    held on its own connection, so a pool of one connection cannot deadlock on it.

    The lock is *polled* (``pg_try_advisory_lock``), never waited for: setup runs
    ``CREATE INDEX CONCURRENTLY``, which waits until every other open statement ends, and
    a ``pg_advisory_lock`` left waiting on the holder's lock is one that never would --
    a deadlock across two sessions that PostgreSQL cannot see.
    """
    import asyncio

    import psycopg

    lock = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    try:
        while True:
            cur = await lock.execute(
                "SELECT pg_try_advisory_lock(%s)", (_PG_CHECKPOINT_SETUP_LOCK_KEY,)
            )
            row = await cur.fetchone()
            if row is not None and row[0]:
                break
            await asyncio.sleep(poll_s)
        await saver.setup()
    finally:
        await lock.close()  # closing the session releases its advisory locks


"""Open nightowl's SQL database: one `Database` per URL per process, migrated to heads.

`open_db()` resolves the URL (argument, else ``Settings.resolved_database_url``: SQLite
in the data home by default, see `nightowl.config`), creates the engine (SQLite: WAL, busy timeout,
foreign keys; PostgreSQL: pre-ping), checks that the database answers, and runs the
Alembic migrations (``upgrade heads``) programmatically. The result is cached per URL
per process (a forked child gets its own engine).

Errors are one line: an unparseable URL raises `DatabaseURLError`, a database that
cannot be reached or migrated raises `DatabaseUnavailableError`. Both are `StoreError`s
*and* `UserError`s, so the CLI prints them as one line and exits with code 2.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import BigInteger, Engine, Integer, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.orm import Session, sessionmaker

from nightowl.db import make_engine, session_scope
from nightowl.errors import ConfigError, StoreError, UserError

if TYPE_CHECKING:
    from alembic.config import Config

    from nightowl.config import Settings

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: seconds before giving up on an unreachable PostgreSQL server (unless the URL sets one)
PG_CONNECT_TIMEOUT_S = 10
#: arbitrary constant key of the PostgreSQL advisory lock held while migrating
_PG_MIGRATION_LOCK_KEY = 7_116_901_774_210_331
#: 64-bit integer id column type of the table modules (plain INTEGER on SQLite: the rowid)
BIGINT = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """Timezone-aware now (UTC): what every table's timestamps are written with."""
    return datetime.now(UTC)


class DatabaseURLError(StoreError, ConfigError):
    """The database URL cannot be parsed or names a driver that is not installed."""


class DatabaseUnavailableError(StoreError, UserError):
    """The database cannot be reached, opened or migrated."""


def redact_url(url: str) -> str:
    """The URL with any password hidden (safe to print)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - printing must never fail
        return url


def one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (driver errors are multi-line)."""
    orig = getattr(exc, "orig", None) or exc
    for line in str(orig).splitlines():
        line = line.strip()
        if line:
            return line
    return type(orig).__name__


@dataclass(eq=False)
class Database:
    """An opened, migrated database.

    Attributes:
        url: the SQLAlchemy URL (as given; use `redact_url` before printing it).
        engine: the SQLAlchemy engine.
        sessions: a sessionmaker (``expire_on_commit=False``).
    """

    url: str
    engine: Engine
    sessions: sessionmaker[Session] = field(repr=False)

    @property
    def is_sqlite(self) -> bool:
        """Whether this is a SQLite database."""
        return self.engine.dialect.name == "sqlite"

    def session(self) -> contextlib.AbstractContextManager[Session]:
        """A short transaction: commit on success, roll back on error."""
        return session_scope(self.sessions)

    def write(self, fn: Callable[[Session], T], *, attempts: int = 5) -> T:
        """Run ``fn(session)`` in its own transaction, retrying when the database is busy.

        SQLite serialises writers; the busy timeout normally absorbs that, but a
        transaction that read before writing can still get ``database is locked``.
        Such failures are retried with back-off; anything else becomes a `StoreError`.
        """
        delay = 0.05
        for attempt in range(1, attempts + 1):
            try:
                with self.session() as session:
                    return fn(session)
            except (OperationalError, InterfaceError) as exc:
                if attempt < attempts and _is_transient(exc):
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                raise StoreError(f"database write failed: {one_line(exc)}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in a read transaction, wrapping driver errors in `StoreError`."""
        try:
            with self.session() as session:
                return fn(session)
        except (OperationalError, InterfaceError) as exc:
            raise StoreError(f"database read failed: {one_line(exc)}") from exc

    def current_revisions(self) -> tuple[str, ...]:
        """The Alembic revisions the database is at (several when branches exist)."""
        with self.engine.connect() as conn:
            return _revisions(conn)

    def upgrade(self) -> tuple[str, ...]:
        """Migrate to all heads (idempotent); returns the revisions afterwards."""
        _upgrade_heads(self.engine, self.url)
        return self.current_revisions()


def _is_transient(exc: DBAPIError) -> bool:
    msg = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    return "locked" in msg or "busy" in msg or "deadlock" in msg


# --- migrations ----------------------------------------------------------------------
def alembic_config(url: str, connection: Connection | None = None) -> Config:
    """A programmatic Alembic config (no alembic.ini) for ``url``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def import_table_modules(names: Sequence[str]) -> list[str]:
    """Import the modules that declare tables on `nightowl.db.Base`; returns those imported.

    A module that does not exist (yet) is skipped; any other import error, including a
    module that exists but imports something missing, is raised.
    """
    imported = []
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if not (missing == name or name.startswith(missing + ".")):
                raise
            continue
        imported.append(name)
    return imported


@functools.cache
def head_revisions() -> tuple[str, ...]:
    """Every head revision shipped with this version of nightowl."""
    from alembic.script import ScriptDirectory

    return tuple(sorted(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()))


def _revisions(conn: Connection) -> tuple[str, ...]:
    from alembic.runtime.migration import MigrationContext

    return tuple(sorted(MigrationContext.configure(conn).get_current_heads()))


@contextlib.contextmanager
def _sqlite_file_lock(url: str) -> Iterator[None]:
    """An exclusive lock file next to a SQLite database, so one process migrates at a time."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    lock_path = Path(database).with_name(Path(database).name + ".migrate.lock")
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _upgrade_heads(engine: Engine, url: str) -> None:
    from alembic import command

    heads = head_revisions()
    with engine.connect() as conn:
        current = _revisions(conn)
        conn.rollback()
    if current == heads:
        return
    if engine.dialect.name == "sqlite":
        # One explicit write transaction around all DDL: SQLite's DDL is transactional,
        # so a crash mid-migration leaves the database as it was (pysqlite alone would
        # run each CREATE in autocommit mode).
        with _sqlite_file_lock(url), engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            if _revisions(conn) != heads:
                command.upgrade(alembic_config(url, conn), "heads")
            conn.commit()
        return
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            # Serialise concurrent migrators (several workers starting at once).
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK_KEY})
            conn.commit()
        try:
            with conn.begin():
                if _revisions(conn) != heads:
                    command.upgrade(alembic_config(url, conn), "heads")
        finally:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK_KEY})
                conn.commit()


# --- opening ---------------------------------------------------------------------------
_cache: dict[tuple[int, str], Database] = {}
_cache_lock = threading.Lock()


def open_db(
    settings: Settings | None = None, url: str | None = None, *, migrate: bool = True
) -> Database:
    """Open (and migrate to heads) the database at ``url`` or the configured one.

    Cached per URL per process (``migrate=False`` opens an uncached, unmigrated handle,
    for inspecting a database as it is). Raises `DatabaseURLError` for a malformed URL and
    `DatabaseUnavailableError` when the database cannot be reached or migrated; both
    carry a one-line message with the password hidden.
    """
    if not url:
        if settings is None:
            from nightowl.config import get_settings

            settings = get_settings()
        url = settings.resolved_database_url
    if not migrate:
        return _open_uncached(url, migrate=False)
    key = (os.getpid(), url)
    db = _cache.get(key)
    if db is not None:
        return db
    with _cache_lock:
        db = _cache.get(key)
        if db is None:
            db = _open_uncached(url)
            _cache[key] = db
        return db


def _open_uncached(url: str, *, migrate: bool = True) -> Database:
    shown = redact_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseURLError(f"malformed database URL {shown!r}") from None
    engine_url = url
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        # Fail within seconds (not the OS TCP timeout) when the server is unreachable.
        engine_url = parsed.update_query_dict(
            {"connect_timeout": str(PG_CONNECT_TIMEOUT_S)}
        ).render_as_string(hide_password=False)
    try:
        engine = make_engine(engine_url)
    except (NoSuchModuleError, ModuleNotFoundError, ImportError) as exc:
        raise DatabaseURLError(
            f"unsupported database URL {shown!r}: {one_line(exc)}"
        ) from None
    except (ArgumentError, ValueError, TypeError) as exc:
        raise DatabaseURLError(f"malformed database URL {shown!r}: {one_line(exc)}") from None
    except OSError as exc:  # e.g. the SQLite folder cannot be created
        raise DatabaseUnavailableError(
            f"cannot open database {shown}: {exc.strerror or exc}"
        ) from None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (DBAPIError, SQLAlchemyError, OSError) as exc:
        engine.dispose()
        raise DatabaseUnavailableError(
            f"cannot connect to database {shown}: {one_line(exc)}"
        ) from None
    from alembic.util import CommandError

    try:
        if migrate:
            _upgrade_heads(engine, url)
    except (DBAPIError, SQLAlchemyError, OSError, CommandError) as exc:
        engine.dispose()
        raise DatabaseUnavailableError(
            f"cannot migrate database {shown}: {one_line(exc)}"
        ) from None
    return Database(url=url, engine=engine, sessions=sessionmaker(engine, expire_on_commit=False))


def _after_fork_in_child() -> None:
    # Pooled connections must not be shared with the parent: drop them (without closing
    # the parent's sockets) so that a `Database` created before a fork stays usable.
    for db in list(_cache.values()):
        try:
            db.engine.dispose(close=False)
        except Exception:  # noqa: BLE001 - never break a fork
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)


def forget(url: str | None = None) -> None:
    """Drop cached `Database`s (all, or the one for ``url``) and dispose their engines."""
    with _cache_lock:
        for key in list(_cache):
            if url is None or key[1] == url:
                db = _cache.pop(key)
                if key[0] == os.getpid():
                    db.engine.dispose()

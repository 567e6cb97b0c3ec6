"""Process-wide test set-up: offline hubs and one thread before torch/faiss load.

Shared fixtures (storage and services):

- ``pg_url`` / ``redis_url``: the throw-away PostgreSQL / Redis started by
  ``scripts/with-services.sh`` (``make test``). Skipped with a reason when the variable is
  unset, *failed* instead when ``CI=true`` or ``NIGHTOWL_REQUIRE_SERVICES=1``.
- ``db_url``: parametrised over ``sqlite`` (a file in ``tmp_path``) and ``postgresql`` (a
  fresh schema per test on ``pg_url``, dropped afterwards).
- ``db``: an opened, migrated `nightowl.storage.Database` on ``db_url`` (SQLite: a copy
  of a database migrated once per session).
- ``sqlite_db``: the same on SQLite only (cheap).

The session's data home (``NIGHTOWL_HOME``) is a fresh temporary folder, removed at the
end, so no test writes into the user's own data folder or a project's ``.nightowl``;
generated games and environment data stay cached across sessions in the git-ignored
``<repo>/.nightowl/cache`` (``NIGHTOWL_CACHE_DIR``, unless already set).
"""

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

_TEST_HOME = tempfile.mkdtemp(prefix="nightowl-test-home-")
atexit.register(shutil.rmtree, _TEST_HOME, ignore_errors=True)
os.environ["NIGHTOWL_HOME"] = _TEST_HOME
os.environ.setdefault(
    "NIGHTOWL_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".nightowl" / "cache")
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("NIGHTOWL_THREADS", "1"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("NIGHTOWL_THREADS", "1")


def _services_required() -> bool:
    return (
        os.environ.get("CI", "").lower() == "true"
        or os.environ.get("NIGHTOWL_REQUIRE_SERVICES", "") == "1"
    )


def _service_url(var: str, what: str) -> str:
    url = os.environ.get(var, "").strip()
    if url:
        return url
    msg = f"{var} is not set ({what} starts with `make test` / scripts/with-services.sh)"
    if _services_required():
        pytest.fail(msg + "; required because CI=true or NIGHTOWL_REQUIRE_SERVICES=1")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def pg_url() -> str:
    """SQLAlchemy URL of the throw-away PostgreSQL database (psycopg 3 driver)."""
    return _service_url("NIGHTOWL_TEST_PG_URL", "the throw-away PostgreSQL")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the throw-away Redis (database 0)."""
    return _service_url("NIGHTOWL_TEST_REDIS_URL", "the throw-away Redis")


def _with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_schema_url(pg_url: str) -> Iterator[str]:
    """A URL on ``pg_url`` whose search_path is a fresh, empty schema (dropped afterwards)."""
    from sqlalchemy import create_engine, text

    from nightowl import storage

    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = _with_search_path(pg_url, schema)
        yield url
        storage.forget(url)
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        admin.dispose()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh, empty database URL: SQLite in ``tmp_path``, or a fresh PostgreSQL schema."""
    from nightowl import storage

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'nightowl.db'}"
        yield url
        storage.forget(url)
    else:
        yield request.getfixturevalue("pg_schema_url")


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    """A migrated SQLite file, copied by `db`/`sqlite_db` (much cheaper than migrating)."""
    from nightowl import storage

    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    url = f"sqlite:///{path}"
    database = storage.open_db(url=url)
    with database.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    storage.forget(url)
    return str(path)


def _sqlite_from_template(template: str, url: str) -> None:
    import shutil

    from sqlalchemy.engine import make_url

    target = make_url(url).database
    assert target and not os.path.exists(target)
    shutil.copyfile(template, target)


@pytest.fixture
def db(db_url: str, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """An opened, migrated `Database` on ``db_url`` (SQLite and PostgreSQL)."""
    from nightowl.storage import open_db

    if db_url.startswith("sqlite"):
        _sqlite_from_template(request.getfixturevalue("_sqlite_template"), db_url)
    return open_db(url=db_url)


@pytest.fixture
def sqlite_db(tmp_path, _sqlite_template: str) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """An opened, migrated `Database` on a SQLite file in ``tmp_path``."""
    from nightowl import storage

    url = f"sqlite:///{tmp_path / 'sqlite_db.db'}"
    _sqlite_from_template(_sqlite_template, url)
    yield storage.open_db(url=url)
    storage.forget(url)


@pytest.fixture
def resolutions(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every call of the run plan's student resolver (a counting wrapper around the real one)."""
    import nightowl.app.plan as plan_module

    calls: list[tuple] = []
    real = plan_module.resolve_student

    def counting(*args, **kw):  # type: ignore[no-untyped-def]
        calls.append(args[1:])
        return real(*args, **kw)

    monkeypatch.setattr(plan_module, "resolve_student", counting)
    return calls

import pytest
from sqlalchemy import inspect, text

from nightowl import storage
from nightowl.errors import StoreError, UserError
from nightowl.storage import DatabaseUnavailableError, DatabaseURLError, open_db

LEDGER_TABLES = {"runs", "episodes", "model_calls", "tool_calls"}


def _metadata_tables() -> set[str]:
    # The same table modules migrations/env.py imports (those that exist).
    import ast

    from nightowl.db import Base

    env = (storage.MIGRATIONS_DIR / "env.py").read_text()
    tree = ast.parse(env)
    [modules] = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "TABLE_MODULES"
    ]
    assert "nightowl.ledger" in storage.import_table_modules(modules)
    return set(Base.metadata.tables)


def test_migrations_create_every_table(db_url):
    db = open_db(url=db_url)  # db_url is empty; `db` would be a pre-migrated copy
    tables = set(inspect(db.engine).get_table_names())
    assert LEDGER_TABLES <= tables
    assert "alembic_version" in tables
    assert _metadata_tables() <= tables
    assert db.current_revisions() == storage.head_revisions()
    assert "0001" not in db.current_revisions() or storage.head_revisions() == ("0001",)


def test_migrations_are_idempotent(db_url):
    db = open_db(url=db_url)
    before = db.current_revisions()
    assert db.upgrade() == before
    storage.forget(db_url)
    again = open_db(url=db_url)
    assert again is not db
    assert again.current_revisions() == before
    # A plain `alembic upgrade heads` on the migrated database is a no-op too.
    from alembic import command

    with again.engine.begin() as conn:
        command.upgrade(storage.alembic_config(db_url, conn), "heads")
    assert again.current_revisions() == before


def test_ledger_schema_matches_models(db):
    """The 0001 migration and the ORM classes in nightowl.ledger describe the same tables."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from nightowl.db import Base

    _metadata_tables()
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)

    def table_of(diff) -> str | None:  # type: ignore[no-untyped-def]
        item = diff[0] if isinstance(diff, list) else diff
        for obj in item[1:]:
            name = getattr(obj, "name", None)
            table = getattr(obj, "table", None)
            if table is not None:
                return table.name
            if isinstance(obj, str) and obj in LEDGER_TABLES:
                return obj
            if name in LEDGER_TABLES:
                return name
        return None

    ledger_diffs = [d for d in diffs if table_of(d) in LEDGER_TABLES]
    assert ledger_diffs == []


def test_open_db_is_cached_per_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    a = open_db(url=url)
    assert open_db(url=url) is a
    assert open_db(url=f"sqlite:///{tmp_path / 'b.db'}") is not a
    storage.forget(url)
    assert open_db(url=url) is not a


def test_open_db_uses_settings(tmp_path):
    from nightowl.config import load_settings

    settings = load_settings(home=tmp_path / "home")
    db = open_db(settings)
    assert db.url == settings.resolved_database_url
    assert (tmp_path / "home" / "nightowl.db").exists()


def test_sqlite_is_wal_with_busy_timeout(sqlite_db):
    with sqlite_db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_unreachable_postgres_is_one_line_error():
    url = "postgresql+psycopg://nightowl:s3cret@127.0.0.1:1/nowhere?connect_timeout=2"
    with pytest.raises(DatabaseUnavailableError) as info:
        open_db(url=url)
    msg = str(info.value)
    assert isinstance(info.value, StoreError) and isinstance(info.value, UserError)
    assert "\n" not in msg
    assert "s3cret" not in msg
    assert msg.startswith("cannot connect to database postgresql+psycopg://nightowl:***@127.0.0.1:1")


def test_unopenable_sqlite_is_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DatabaseUnavailableError) as info:
        open_db(url=f"sqlite:///{blocker / 'sub' / 'x.db'}")
    assert "\n" not in str(info.value)


def test_not_a_database_is_one_line_error(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DatabaseUnavailableError) as info:
        open_db(url=f"sqlite:///{junk}")
    assert "\n" not in str(info.value)
    assert junk.read_bytes() == b"this is not sqlite" * 100  # untouched


@pytest.mark.parametrize("url", ["nonsense", "foo://bar", "postgresql+nodriver://x@h/db"])
def test_malformed_url_is_config_error(url):
    with pytest.raises(DatabaseURLError) as info:
        open_db(url=url)
    assert isinstance(info.value, UserError)
    assert "\n" not in str(info.value)


# Concurrent first opens (two processes migrating one empty database at once) are
# covered by tests/ledger/test_ledger.py::test_two_processes_write_concurrently.


def test_unknown_revision_is_one_line_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'future.db'}"
    db = open_db(url=url)
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('zz_from_the_future')"))
    storage.forget(url)
    with pytest.raises(DatabaseUnavailableError, match="cannot migrate database") as info:
        open_db(url=url)
    assert "\n" not in str(info.value)


def test_database_opened_before_fork_works_in_child(db):
    import multiprocessing

    from nightowl.ledger import Ledger

    ledger = Ledger(db)
    run = ledger.start_run("parent", "eval")
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_child_writes, args=(ledger, run))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    ledger.start_episode(run, "t/parent")  # the parent's pool still works
    assert ledger.run_report(run).n_episodes == 2


def _child_writes(ledger, run: str) -> None:  # type: ignore[no-untyped-def]
    ledger.start_episode(run, "t/child")  # the parent's Database object, inherited by fork


def test_failed_sqlite_migration_leaves_database_untouched(tmp_path, monkeypatch):
    """All DDL runs in one transaction: a migration that dies half-way changes nothing."""
    from alembic import command

    url = f"sqlite:///{tmp_path / 'half.db'}"
    real_upgrade = command.upgrade

    def dying_upgrade(cfg, revision):  # type: ignore[no-untyped-def]
        real_upgrade(cfg, revision)  # creates every table ...
        raise RuntimeError("power cut")  # ... then the process dies before committing

    monkeypatch.setattr(command, "upgrade", dying_upgrade)
    with pytest.raises(RuntimeError, match="power cut"):
        open_db(url=url)
    monkeypatch.setattr(command, "upgrade", real_upgrade)
    from sqlalchemy import create_engine

    engine = create_engine(url)
    assert inspect(engine).get_table_names() == []
    engine.dispose()
    assert open_db(url=url).current_revisions() == storage.head_revisions()


def test_import_table_modules_tolerates_only_missing_modules(tmp_path, monkeypatch):
    pkg = tmp_path / "fakepkg_tables"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "broken.py").write_text("import fakepkg_tables_dependency_that_is_missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert storage.import_table_modules(
        ["nightowl.ledger", "fakepkg_tables.not_written_yet", "no_such_package.schema"]
    ) == ["nightowl.ledger"]
    with pytest.raises(ModuleNotFoundError, match="fakepkg_tables_dependency_that_is_missing"):
        storage.import_table_modules(["fakepkg_tables.broken"])

"""Alembic environment for nightowl (programmatic; no alembic.ini).

`nightowl.storage.open_db` (and `nightowl db upgrade`) build the Alembic config in code
and hand over an open connection in ``config.attributes["connection"]``. Running the
``alembic`` command against ``nightowl/migrations`` also works when ``sqlalchemy.url``
is set.

Every table module declares its tables on `nightowl.db.Base`; import it below (one line
each) so that ``target_metadata`` sees every table. A module that is not written yet is
skipped, but only when the module itself is missing: any other import error surfaces.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from nightowl.db import Base
from nightowl.storage import import_table_modules

# One line per subsystem that declares tables on `nightowl.db.Base`.
TABLE_MODULES = (
    "nightowl.ledger",
    "nightowl.memory.schema",
    "nightowl.sleeptime.schema",
    "nightowl.chat.tables",
)

import_table_modules(TABLE_MODULES)

target_metadata = Base.metadata
config = context.config


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    connectable = engine_from_config(
        config.get_section(config.config_ini_section) or {},
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as conn:
        _run(conn)
        conn.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

"""Migration 0004_chat and the ORM classes in nightowl.chat.tables describe the same tables."""

from __future__ import annotations

from nightowl.chat import tables

CHAT_TABLES = {
    "chat_api_keys", "chat_threads", "chat_messages", "chat_thread_contexts", "chat_demos",
}


def test_chat_schema_matches_models(db) -> None:  # type: ignore[no-untyped-def]
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from nightowl.db import Base

    assert tables.ThreadRow.__tablename__ in Base.metadata.tables
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)

    def touches_chat(diff) -> bool:  # type: ignore[no-untyped-def]
        text = repr(diff)
        return any(t in text for t in CHAT_TABLES)

    assert [d for d in diffs if touches_chat(d)] == []

"""Checkpoints follow the database: SQLite file beside the SQLite DB, PostgreSQL otherwise.

A two-node LangGraph graph is interrupted after its first node, the checkpointer is
closed, and a *new* checkpointer opened from the same settings resumes it: what moving a
run to another process (or host, on PostgreSQL) needs.
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Annotated, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph

from nightowl.checkpoints import (
    is_postgres,
    open_checkpointer,
    postgres_conninfo,
    sqlite_checkpoint_path,
)
from nightowl.config import load_settings
from nightowl.errors import StoreError


class _State(TypedDict):
    steps: Annotated[list[str], operator.add]


def _graph(saver):  # type: ignore[no-untyped-def]
    g = StateGraph(_State)
    g.add_node("first", lambda s: {"steps": ["first"]})
    g.add_node("second", lambda s: {"steps": ["second"]})
    g.add_edge(START, "first")
    g.add_edge("first", "second")
    g.add_edge("second", END)
    return g.compile(checkpointer=saver, interrupt_after=["first"])


async def _interrupt_then_resume(settings) -> list[str]:  # type: ignore[no-untyped-def]
    config = {"configurable": {"thread_id": "episode-1"}}
    async with open_checkpointer(settings) as saver:
        await _graph(saver).ainvoke({"steps": []}, config, durability="sync")
    async with open_checkpointer(settings) as saver:  # a fresh process would do this
        graph = _graph(saver)
        state = await graph.aget_state(config)
        assert state.values["steps"] == ["first"] and state.next == ("second",)
        done = await graph.ainvoke(None, config, durability="sync")
    return list(done["steps"])


async def test_sqlite_checkpoints_beside_the_database(tmp_path: Path):
    settings = load_settings(
        home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'db' / 'n.db'}"
    )
    assert sqlite_checkpoint_path(settings) == (tmp_path / "db" / "checkpoints.sqlite").resolve()
    assert await _interrupt_then_resume(settings) == ["first", "second"]
    assert (tmp_path / "db" / "checkpoints.sqlite").exists()
    assert not (tmp_path / "home").exists()


def test_default_and_memory_sqlite_go_to_home(tmp_path: Path):
    home = tmp_path / "h"
    assert sqlite_checkpoint_path(load_settings(home=home)) == home.resolve() / "checkpoints.sqlite"
    mem = load_settings(home=home, database_url="sqlite://")
    assert sqlite_checkpoint_path(mem) == home.resolve() / "checkpoints.sqlite"


def test_url_helpers():
    url = "postgresql+psycopg://u:secret@127.0.0.1:5433/db?options=-csearch_path%3Dt_1"
    assert is_postgres(url) and not is_postgres("sqlite:///x.db")
    assert postgres_conninfo(url).startswith("postgresql://u:secret@127.0.0.1:5433/db?options=")


async def test_unreachable_postgres_is_a_store_error(tmp_path: Path):
    from tests.llm.conftest import free_port

    settings = load_settings(
        home=tmp_path, database_url=f"postgresql+psycopg://x@127.0.0.1:{free_port()}/none"
    )
    with pytest.raises(StoreError, match="cannot open checkpoints"):
        async with open_checkpointer(settings, pool_size=1, connect_timeout_s=1):
            pass


@pytest.mark.postgres
async def test_postgres_checkpoints_resume_from_a_new_connection(pg_schema_url: str, tmp_path):
    settings = load_settings(home=tmp_path, database_url=pg_schema_url)
    assert await _interrupt_then_resume(settings) == ["first", "second"]
    assert not (tmp_path / "checkpoints.sqlite").exists()
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_schema_url)
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM checkpoints")).scalar_one()
    engine.dispose()
    assert n >= 2


@pytest.mark.postgres
async def test_postgres_checkpoint_tables_created_by_many_workers_at_once(
    pg_schema_url: str, tmp_path: Path
) -> None:
    """Several workers opening checkpoints on a fresh database at the same moment all
    succeed (LangGraph's setup alone raced on ``checkpoint_migrations``)."""
    import asyncio

    settings = load_settings(home=tmp_path, database_url=pg_schema_url)
    start = asyncio.Event()

    async def open_one() -> bool:
        await start.wait()
        async with open_checkpointer(settings, pool_size=1) as saver:
            return saver is not None

    tasks = [asyncio.create_task(open_one()) for _ in range(6)]
    await asyncio.sleep(0.05)
    start.set()
    # a deadlock (as with a waiting pg_advisory_lock) fails here instead of hanging the run
    assert await asyncio.wait_for(asyncio.gather(*tasks), timeout=60) == [True] * 6

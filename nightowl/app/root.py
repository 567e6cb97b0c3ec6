"""The composition root: one object that owns settings, database, ledger, models, memory.

Every use case (collect, run, calibrate, the showcase demo, sleep-time jobs, index
maintenance) takes a `Nightowl`; the CLI, the Celery tasks and user scripts open one,
call use cases, and close it. Opening is cheap: the demo memory, the embedder, model
weights and the sleep-time service are built on first use.

    with Nightowl.open() as no:
        summary = no.run(RunSpec(name="cascade", env="twx", split="test",
                                 task_ids=select_tasks("twx", "test", 5, game="coin")))
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from nightowl.config import Prices, Settings, get_settings
from nightowl.ledger import Ledger
from nightowl.storage import Database, open_db

if TYPE_CHECKING:
    from nightowl.app.collect import CollectRequest, CollectResult
    from nightowl.app.runs import RunSpec, RunSummary
    from nightowl.ledger import RunReport
    from nightowl.llm.base import ModelBackend
    from nightowl.memory.store import DemoMemory
    from nightowl.sleeptime.service import SleepService

T = TypeVar("T")


@dataclass(kw_only=True, eq=False)
class Nightowl:
    """Opened resources for every use case (lazy where loading is slow).

    Attributes:
        settings: the settings everything was built from (defaults resolved once here:
            ``student`` is the student model's registry name).
        db: the migrated database (SQLite or PostgreSQL).
        ledger: the cost ledger over ``db``.
        embedder: the demo memory's embedder (None: the one named in settings).
        memory_dir: where FAISS indexes live (None: next to the database).
    """

    settings: Settings
    db: Database
    ledger: Ledger
    embedder: Any = None
    memory_dir: Path | None = None
    _memory: DemoMemory | None = field(default=None, repr=False)
    _sleep: SleepService | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def open(
        cls,
        settings: Settings | None = None,
        *,
        db_url: str | None = None,
        embedder: Any = None,
        memory_dir: Path | None = None,
    ) -> Nightowl:
        """Open (and migrate) the database and the ledger; nothing else is loaded yet."""
        settings = settings or get_settings()
        db = open_db(settings, url=db_url) if db_url else open_db(settings)
        return cls(
            settings=settings, db=db, ledger=Ledger(db), embedder=embedder, memory_dir=memory_dir
        )

    # --- defaults, resolved in one place -------------------------------------------
    @property
    def student(self) -> str:
        """The student model's registry name (``settings.student_model``)."""
        return self.settings.student_model

    def prices(self, model: str) -> Prices:
        """Registry prices of ``model`` (raises UnknownNameError for an unknown name)."""
        return self.settings.model(model).prices

    # --- lazily built parts ----------------------------------------------------------
    @property
    def memory(self) -> DemoMemory:
        """The demo memory (opened on first use)."""
        if self._memory is None:
            from nightowl.memory.store import DemoMemory

            self._memory = DemoMemory(
                self.db, self.embedder, self.memory_dir, settings=self.settings
            )
        return self._memory

    def backend(self, name: str | None = None) -> ModelBackend:
        """The backend of a registry model (default: the student); cached per process."""
        from nightowl.llm.registry import build_backend

        return build_backend(name or self.student, self.settings)

    def cold_start(self, name: str | None = None) -> None:
        """Forget a backend's cached prompt prefixes and scores (for side-by-side runs).

        Configurations compared in one process would otherwise reuse each other's cached
        prompts and look cheaper than they would alone.
        """
        clear = getattr(self.backend(name), "clear_prefix_cache", None)
        if callable(clear):
            clear()

    def student_backend(self, name: str | None = None) -> ModelBackend:
        """The student's backend (``name`` overrides the settings' student)."""
        return self.backend(name)

    @property
    def sleep(self) -> SleepService:
        """The sleep-time service over this database and these models."""
        if self._sleep is None:
            from nightowl.sleeptime.service import SleepService

            self._sleep = SleepService(self.settings, db=self.db, backend_factory=self.backend)
        return self._sleep

    # --- use cases, for scripts (async code awaits the functions in nightowl.app) ------
    def run(self, spec: RunSpec, *, progress: Any = None) -> RunSummary:
        """Run one ladder over tasks (see `nightowl.app.runs.run_tasks`)."""
        from nightowl.app.runs import run_tasks

        return _sync(run_tasks(self, spec, progress=progress))

    def collect(self, request: CollectRequest, *, progress: Any = None) -> CollectResult:
        """Collect teacher demos (see `nightowl.app.collect.collect_demos`)."""
        from nightowl.app.collect import collect_demos

        return _sync(collect_demos(self, request, progress=progress))

    def report(self, run_id: str) -> RunReport:
        """The ledger's report of a run (id or unique prefix)."""
        return self.ledger.run_report(self.ledger.resolve_run_id(run_id))

    # --- lifetime ---------------------------------------------------------------------
    def close(self) -> None:
        """Flush the memory's indexes and release the database (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._memory is not None:
                self._memory.close()
        finally:
            self.db.engine.dispose()

    def __enter__(self) -> Nightowl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Nightowl:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code (a clear error inside a running event loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise RuntimeError(
        "Nightowl.run/collect are for scripts; inside an event loop await "
        "nightowl.app.run_tasks / collect_demos instead"
    )

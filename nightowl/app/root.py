"""The composition root: one object that owns settings, database, ledger, models, memory.

Every use case (collect, run, calibrate, the showcase demo, sleep-time jobs, index
maintenance) takes a `Nightowl`; the CLI, both servers, the Celery tasks and user
scripts open one, call use cases, and close it. This is the one place that opens the
database. Opening is cheap: the demo store, the embedder, model weights, the API key
store, the chat assistant and the sleep-time service are built on first use.

The demo store is `nightowl.memory.store.DemoMemory` (SQL + FAISS) unless
``settings.demo_store`` (``NIGHTOWL_DEMO_STORE``, ``demo_store`` in nightowl.toml) names
a ``"module:factory"`` that builds another `nightowl.memory.base.DemoStore`.

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
from nightowl.errors import ConfigError
from nightowl.ledger import Ledger
from nightowl.storage import Database, open_db

if TYPE_CHECKING:
    from collections.abc import Callable

    from nightowl.app.collect import CollectRequest, CollectResult
    from nightowl.app.runs import RunSpec, RunSummary
    from nightowl.chat import Assistant, AssistantConfig, KeyStore
    from nightowl.chat.sleep import RethinkQueue
    from nightowl.ledger import MeteredModel, RunReport
    from nightowl.llm.base import ModelBackend
    from nightowl.memory.base import DemoStore
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
        embedder: the demo store's embedder (None: the one named in settings).
        memory_dir: where FAISS indexes live (None: next to the database).
    """

    settings: Settings
    db: Database
    ledger: Ledger
    embedder: Any = None
    memory_dir: Path | None = None
    _memory: DemoStore | None = field(default=None, repr=False)
    _sleep: SleepService | None = field(default=None, repr=False)
    _keys: KeyStore | None = field(default=None, repr=False)
    _assistant: Assistant | None = field(default=None, repr=False)
    _owns_db: bool = field(default=True, repr=False)
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def open(
        cls,
        settings: Settings | None = None,
        *,
        db_url: str | None = None,
        embedder: Any = None,
        memory_dir: Path | None = None,
        migrate: bool = True,
    ) -> Nightowl:
        """Open (and migrate) the database and the ledger; nothing else is loaded yet.

        ``db_url`` overrides the settings' database; ``migrate=False`` opens the database
        as it is (uncached, unmigrated: for inspecting its revisions).
        """
        settings = settings or get_settings()
        db = open_db(settings, db_url, migrate=migrate)
        return cls(
            settings=settings, db=db, ledger=Ledger(db), embedder=embedder, memory_dir=memory_dir
        )

    def with_memory(self, *, embedder: Any = None, memory_dir: Path | None = None) -> Nightowl:
        """A root sharing these settings, database and ledger with another demo memory.

        Its ``close`` flushes only that memory; the database stays open (this root owns it).
        """
        return Nightowl(
            settings=self.settings, db=self.db, ledger=self.ledger, embedder=embedder,
            memory_dir=memory_dir, _owns_db=False,
        )  # fmt: skip

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
    def memory(self) -> DemoStore:
        """The demo store (opened on first use): ``settings.demo_store``'s, else `DemoMemory`.

        A configured ``"module:factory"`` is called with the keyword arguments ``db``,
        ``embedder``, ``memory_dir`` and ``settings`` and must return a `DemoStore`.
        """
        if self._memory is None:
            self._memory = self._build_memory()
        return self._memory

    def _build_memory(self) -> DemoStore:
        from nightowl.memory.base import DemoStore

        target = self.settings.demo_store
        if target is None:
            from nightowl.memory.store import DemoMemory

            return DemoMemory(self.db, self.embedder, self.memory_dir, settings=self.settings)
        from nightowl.plugins import load_target

        try:
            factory = load_target(target)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(
                f"bad configuration at demo_store (NIGHTOWL_DEMO_STORE): cannot load "
                f"{target!r}: {type(exc).__name__}: {exc}"
            ) from None
        store = factory(
            db=self.db, embedder=self.embedder, memory_dir=self.memory_dir,
            settings=self.settings,
        )  # fmt: skip
        if not isinstance(store, DemoStore):
            raise ConfigError(
                f"bad configuration at demo_store (NIGHTOWL_DEMO_STORE): {target!r} returned "
                f"a {type(store).__name__}, not a nightowl.memory.base.DemoStore"
            )
        return store

    def demo_memory(self, what: str) -> DemoMemory:
        """The demo store as the built-in `DemoMemory`, for its index maintenance.

        ``what`` names the operation (``"nightowl memory rebuild"``) in the error raised
        when ``settings.demo_store`` configures another kind of store.
        """
        from nightowl.memory.store import DemoMemory

        store = self.memory
        if not isinstance(store, DemoMemory):
            raise ConfigError(
                f"{what} works on nightowl's built-in demo memory (SQL + FAISS indexes); "
                f"the configured demo store {self.settings.demo_store!r} is a "
                f"{type(store).__name__}, which has no such maintenance"
            )
        return store

    def backend(self, name: str | None = None) -> ModelBackend:
        """The backend of a registry model (default: the student); cached per process."""
        from nightowl.llm.registry import build_backend

        return build_backend(name or self.student, self.settings)

    def model(self, name: str | None = None, *, run_id: str, role: str) -> MeteredModel:
        """``name``'s backend (default: the student), each call recorded in the ledger.

        The backend comes from the registry (built once per name and process); the
        wrapper records under ``run_id`` and ``role`` at the registry's prices.
        """
        from nightowl.ledger import MeteredModel

        name = name or self.student
        return MeteredModel(
            self.backend(name), self.ledger, self.prices(name), run_id=run_id, role=role
        )

    def cold_start(self, name: str | None = None) -> None:
        """Forget a backend's cached prompt prefixes and scores (for side-by-side runs).

        Configurations compared in one process would otherwise reuse each other's cached
        prompts and look cheaper than they would alone.
        """
        clear = getattr(self.backend(name), "clear_prefix_cache", None)
        if callable(clear):
            clear()

    @property
    def sleep(self) -> SleepService:
        """The sleep-time service over this database and these models."""
        if self._sleep is None:
            from nightowl.sleeptime.service import SleepService

            self._sleep = SleepService(  # its settings: self.settings.sleep
                self.settings, db=self.db, ledger=self.ledger, backend_factory=self.backend
            )
        return self._sleep

    @property
    def keys(self) -> KeyStore:
        """The API keys of `nightowl serve` / `models serve --keys` (hashed, in ``db``)."""
        if self._keys is None:
            from nightowl.chat import KeyStore

            self._keys = KeyStore(self.db)
        return self._keys

    def assistant(
        self,
        config: AssistantConfig | None = None,
        *,
        oracle: Callable[[str], str | None] | None = None,
        rethink_queue: RethinkQueue | None = None,
    ) -> Assistant:
        """The chat assistant over this database, ledger and models (built on first call).

        Later calls return the same assistant; they may not ask for another config.
        ``oracle`` and ``rethink_queue`` are as in `Assistant.from_settings`.
        """
        if self._assistant is None:
            from nightowl.chat import Assistant

            self._assistant = Assistant.from_settings(
                self.settings, config, db=self.db, ledger=self.ledger,
                backend_factory=self.backend, embedder=self.embedder, oracle=oracle,
                rethink_queue=rethink_queue,
            )  # fmt: skip
        elif config is not None and config != self._assistant.config:
            raise ValueError("this root's assistant was already built with another config")
        return self._assistant

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
        """Flush the memory's indexes and release the database (idempotent).

        A root from `with_memory` leaves the database to the root it came from.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._memory is not None:
                self._memory.close()
        finally:
            if self._owns_db:
                self.db.engine.dispose()

    def __enter__(self) -> Nightowl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Nightowl:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._assistant is not None:
            await self._assistant.aclose()  # stop its sleep loop, if one was started
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

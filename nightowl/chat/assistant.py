"""`Assistant`: the chat API that cascades, distills teacher replies and thinks between turns.

::

    async with Nightowl.open() as no:                    # nightowl.app.Nightowl
        assistant = no.assistant(AssistantConfig(teacher="gpt"))
        reply = await assistant.chat([{"role": "user", "content": "2+3?"}], thread="t1")
        reply.text, reply.tier, reply.cost_usd, reply.agreement

A turn: reconcile the thread's stored history with the incoming messages, check the
thread and key budgets, build the prompt (tenant demos, learned context c' + messages
after its revision), run the cascade, store the reply, keep an accepted teacher reply
as a demo for the tenant, and add the cost to the thread and key. Every model call is
recorded in the ledger under one run per assistant. Blocking SQL runs in worker
threads, so the event loop of a server stays free.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nightowl.chat._keys import ApiKey, KeyStore
from nightowl.chat._prompt import DEFAULT_SYSTEM, build_messages
from nightowl.chat.agreement import Agreement
from nightowl.chat.cascade import (
    DEFAULT_TAU,
    ChatCascade,
    Mode,
    ModelTeacher,
    OracleTeacher,
    Sampling,
    Teacher,
    Tier,
)
from nightowl.chat.demos import ChatDemos
from nightowl.chat.sleep import RethinkQueue, ThreadSleeper
from nightowl.chat.threads import ThreadStore
from nightowl.config import Settings
from nightowl.errors import UserError
from nightowl.ledger import Ledger, MeteredModel
from nightowl.llm.base import ChatMessage, ModelBackend, Usage
from nightowl.memory import Embedder
from nightowl.storage import Database


class AssistantConfig(BaseModel):
    """How the assistant answers (models, cascade, demos, sleep-time, budgets)."""

    model_config = ConfigDict(extra="forbid")

    student: str | None = Field(None, description="registry name; default Settings.student_model")
    teacher: str | None = Field(None, description="registry name of the teacher model")
    mode: Mode = "cascade"
    n: int = Field(3, ge=1, le=16, description="student samples per turn (one batched call)")
    tau: float = Field(
        DEFAULT_TAU, ge=0.0, le=1.01,
        description="accept when agreement share >= tau (default 2/3: two of three agree)",
    )
    sample_temperature: float = Field(0.7, gt=0.0, le=2.0)
    sim: float = Field(0.8, gt=0.0, le=1.0, description="cosine for 'same meaning'")
    max_tokens: int = Field(192, ge=1)
    system_prompt: str = DEFAULT_SYSTEM
    demos: bool = True
    k_demos: int = Field(2, ge=0, le=8)
    demo_min_score: float = Field(0.6, ge=-1.0, le=1.0)
    sleep: bool = False
    sleep_idle_s: float = Field(30.0, ge=0.0)
    thread_budget_usd: float | None = Field(None, ge=0.0)
    max_prompt_tokens: int = Field(6000, ge=64)


@dataclass(frozen=True, kw_only=True)
class ChatReply:
    """A reply with where it came from and what it cost."""

    text: str
    tier: Tier
    cost_usd: float
    usage: Usage
    agreement: Agreement | None
    finish_reason: str = "stop"
    thread: str | None = None
    revision: int = 0
    demos_used: int = 0
    learned_revision: int | None = None
    latency_s: float = 0.0


MessagesIn = Sequence[ChatMessage | dict[str, Any]]


def as_messages(messages: MessagesIn) -> list[ChatMessage]:
    """Dicts ({"role", "content"}) or `ChatMessage`s -> `ChatMessage`s (checked)."""
    out: list[ChatMessage] = []
    for m in messages:
        if isinstance(m, ChatMessage):
            out.append(m)
            continue
        role, content = m.get("role"), m.get("content")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise UserError(f"unknown message role {role!r}; use system, user or assistant")
        if not isinstance(content, str):
            raise UserError("message content must be a string")
        out.append(ChatMessage(role=role, content=content))
    if not out or out[-1].role != "user":
        raise UserError("the last message must be a user message")
    return out


def token_counter(backend: ModelBackend) -> Callable[[str], int]:
    """The backend's tokenizer, or ~4 characters per token for backends without one.

    HTTP backends (OpenAI-compatible servers) have no local tokenizer; the estimate is
    only used to trim long histories and to bill the oracle's prompt.
    """
    try:
        backend.count_tokens("probe")
    except NotImplementedError:
        return lambda text: max(1, len(text) // 4)
    return backend.count_tokens


class Assistant:
    """Chat with a student/teacher cascade, tenant demos and per-thread sleep-time."""

    def __init__(
        self,
        *,
        student: ModelBackend,
        teacher: Teacher | None,
        db: Database,
        ledger: Ledger,
        run_id: str,
        prices: Any,
        embedder: Embedder | None,
        config: AssistantConfig,
        rethink_queue: RethinkQueue | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.ledger = ledger
        self.run_id = run_id
        self.student = MeteredModel(student, ledger, prices, run_id=run_id, role="student")
        self._count_tokens = token_counter(student)
        self.cascade = ChatCascade(
            self.student,
            teacher,
            embedder,
            n=config.n,
            tau=config.tau,
            sample_temperature=config.sample_temperature,
            sim=config.sim,
            mode=config.mode,
        )
        self.threads = ThreadStore(db)
        self.keys = KeyStore(db)
        self.demos = (
            ChatDemos(db, embedder, ledger, min_score=config.demo_min_score)
            if (embedder and config.demos)
            else None
        )
        # With a queue (a broker is configured) idle threads become Celery jobs;
        # without one the sleep loop rethinks them here.
        sleep_model = self.student.with_role("sleep")
        self.sleeper = ThreadSleeper(
            self.threads, sleep_model, prices, queue=rethink_queue, scorer=sleep_model
        )
        self._sleep_task: asyncio.Task[None] | None = None
        self._sleep_stop = asyncio.Event()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        config: AssistantConfig | None = None,
        *,
        db: Database,
        ledger: Ledger | None = None,
        backend_factory: Callable[[str], ModelBackend] | None = None,
        oracle: Callable[[str], str | None] | None = None,
        embedder: Embedder | None = None,
        rethink_queue: RethinkQueue | None = None,
    ) -> Assistant:
        """Build from settings: registry models, the SQL database, the embedder.

        Built by the composition root (`nightowl.app.Nightowl.assistant`), which passes
        its ``db``, ``ledger`` and ``backend_factory`` (registry name -> backend); without
        the last two: a ledger over ``db`` and the registry.
        ``rethink_queue`` sends idle threads' rethinks to a job queue (the CLI passes
        the Celery one when ``settings.broker_url`` is set); None rethinks in-process.
        """
        from nightowl.llm.registry import build_backend
        from nightowl.memory import build_embedder

        config = config or AssistantConfig()
        ledger = ledger if ledger is not None else Ledger(db)
        backend = backend_factory or functools.partial(build_backend, settings=settings)
        run_id = ledger.start_run("chat", kind="chat", config=config.model_dump())
        student_name = config.student or settings.student_model
        student = backend(student_name)
        teacher: Teacher | None = None
        if oracle is not None:
            teacher = OracleTeacher(
                oracle,
                ledger=ledger,
                run_id=run_id,
                prices=settings.model(settings.teacher_price_model).prices,
                count_tokens=token_counter(student),
                output_tokens=settings.oracle_output_tokens,
            )
        elif config.teacher is not None:
            tprices = settings.model(config.teacher).prices
            teacher = ModelTeacher(
                MeteredModel(
                    backend(config.teacher),
                    ledger,
                    tprices,
                    run_id=run_id,
                    role="teacher",
                )
            )
        if embedder is None and (config.demos or config.n > 1):
            embedder = build_embedder(settings.embedder)
        return cls(
            student=student,
            teacher=teacher,
            db=db,
            ledger=ledger,
            run_id=run_id,
            prices=settings.model(student_name).prices,
            embedder=embedder,
            config=config,
            rethink_queue=rethink_queue,
        )

    # --- one turn ------------------------------------------------------------------
    async def chat(
        self,
        messages: MessagesIn,
        *,
        thread: str | None = None,
        tenant: str = "default",
        key: ApiKey | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: Sequence[str] = (),
        seed: int | None = None,
        mode: Mode | None = None,
    ) -> ChatReply:
        """Answer the last user message (of ``messages``, continuing ``thread`` if given)."""
        started = time.perf_counter()
        incoming = as_messages(messages)
        tenant = key.tenant if key is not None else tenant
        client_system = "\n".join(m.content for m in incoming if m.role == "system")
        tid: str | None = None
        learned = None
        if key is not None:
            fresh = await asyncio.to_thread(self.keys.authenticate_id, key.id)
            self.keys.check_budget(fresh)
        if thread is not None:
            rec = await asyncio.to_thread(
                self.threads.open, tenant, thread, budget_usd=self.config.thread_budget_usd
            )
            tid = rec.id
            await asyncio.to_thread(self.threads.check_budget, tid)
            history = await asyncio.to_thread(self.threads.sync, tid, incoming)
            if self.config.sleep:
                learned = await asyncio.to_thread(self.threads.latest_context, tid)
        else:
            history = [m for m in incoming if m.role != "system"]
        question = history[-1].content
        context, demos = "", []
        if self.demos is not None:  # the conversation before the question, for demos
            context = "\n".join(f"{m.role}: {m.content}" for m in history[:-1])
            if self.config.k_demos:
                store = self.demos.for_tenant(tenant)
                demos = await asyncio.to_thread(
                    store.retrieve, question, context, k_episodes=self.config.k_demos
                )
        prompt = build_messages(
            history,
            system=self.config.system_prompt,
            client_system=client_system,
            demos=demos,
            learned=learned,
            count_tokens=self._count_tokens,
            max_prompt_tokens=self.config.max_prompt_tokens,
        )
        sampling = Sampling(
            max_tokens=max_tokens or self.config.max_tokens,
            temperature=self.config.sample_temperature if temperature is None else temperature,
            stop=tuple(stop),
            seed=seed,
        )
        outcome = await self.cascade.run(prompt, question, sampling, mode=mode)
        reply = outcome.reply
        revision = len(history)
        if tid is not None:
            revision = await asyncio.to_thread(
                self.threads.append,
                tid,
                ChatMessage(role="assistant", content=reply.text),
                tier=reply.tier,
                cost=outcome.cost_usd,
            )
            await asyncio.to_thread(self.threads.add_spend, tid, outcome.cost_usd)
        if key is not None:
            await asyncio.to_thread(self.keys.add_spend, key.id, outcome.cost_usd)
        if self.demos is not None and reply.tier != "student" and reply.text.strip():
            await asyncio.to_thread(
                self.demos.keep, tenant, question, reply.text, context=context, task_id=thread or ""
            )
        return ChatReply(
            text=reply.text,
            tier=reply.tier,
            cost_usd=outcome.cost_usd,
            usage=outcome.usage,
            agreement=outcome.agreement,
            finish_reason=reply.finish_reason,
            thread=thread,
            revision=revision,
            demos_used=len(demos),
            learned_revision=learned.revision if learned is not None else None,
            latency_s=time.perf_counter() - started,
        )

    def stream(self, messages: MessagesIn, **kw: Any) -> ChatStream:
        """An async iterator of text pieces; ``.reply`` holds the `ChatReply` at the end.

        The cascade must see the student's samples before it can accept one, so the text
        arrives after the decision (the backends return whole completions).
        """
        return ChatStream(self.chat(messages, **kw))

    # --- sync wrappers for scripts -------------------------------------------------------
    def chat_sync(self, messages: MessagesIn, **kw: Any) -> ChatReply:
        """`chat` for scripts (runs its own event loop)."""
        return asyncio.run(self.chat(messages, **kw))

    def stream_sync(self, messages: MessagesIn, **kw: Any) -> Iterator[str]:
        """`stream` for scripts: yields the text pieces."""
        yield self.chat_sync(messages, **kw).text

    # --- sleep-time ----------------------------------------------------------------------
    def start_sleep(self, *, poll_s: float = 5.0, gate: Callable[[], bool] | None = None) -> None:
        """Start the idle-thread rethink loop (needs a running event loop).

        It rethinks in-process, or enqueues jobs when the assistant has a rethink queue.

        ``gate`` is asked before each thread is rethought (e.g. "no request in flight").
        """
        if self._sleep_task is None:
            self._sleep_stop.clear()
            self._sleep_task = asyncio.create_task(
                self.sleeper.run_idle(
                    idle_s=self.config.sleep_idle_s,
                    poll_s=poll_s,
                    stop=self._sleep_stop,
                    gate=gate,
                )
            )

    async def aclose(self) -> None:
        """Stop the sleep loop."""
        if self._sleep_task is not None:
            self._sleep_stop.set()
            await self._sleep_task
            self._sleep_task = None


class ChatStream:
    """Async iterator over a reply's text; ``reply`` is set once it finished."""

    def __init__(self, pending: Any) -> None:
        self._pending = pending
        self.reply: ChatReply | None = None

    async def __aiter__(self) -> AsyncIterator[str]:
        self.reply = await self._pending
        yield self.reply.text

"""The chat cascade: student samples, agreement, accept or escalate to the teacher.

The student draws ``n`` replies in one batched call (the embedded backend prefills the
prompt once and decodes the samples together). Their agreement (`measure_agreement`)
gives each reply a vote (its extracted answer, or its meaning cluster), and the same
acceptance rule objects the agent's student tier uses decide on those votes
(`nightowl.distill.rules`; ``tau`` is ``Majority(n, tau)``): accepted, the
representative student reply is the answer; else the request goes to the teacher (a
registry model) or, for data sets with gold answers, to the oracle, billed at the
teacher price model's rates. Every call is recorded in the cost ledger through
metering's one write path (`MeteredModel`, or its `record_call` for the oracle).
`calibrate_tau` picks the smallest tau that reaches a target accuracy on a dev set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from nightowl.chat.agreement import Agreement, measure_agreement
from nightowl.config import Prices
from nightowl.distill.acceptance import AcceptanceRule
from nightowl.distill.rules import Majority
from nightowl.ledger import CallSite, Ledger, MeteredModel
from nightowl.ledger.metered import record_call
from nightowl.llm.base import ChatMessage, GenerationRequest, Usage
from nightowl.memory import Embedder

Tier = Literal["student", "teacher", "oracle"]
Mode = Literal["cascade", "teacher", "student"]


#: the default agreement to accept: two of three samples (a share of exactly 2/3)
DEFAULT_TAU = 2 / 3


@dataclass(frozen=True, kw_only=True)
class Sampling:
    """Per-request generation limits (from the client)."""

    max_tokens: int = 192
    temperature: float = 0.7
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def request(
        self, messages: tuple[ChatMessage, ...], *, n: int = 1, temperature: float | None = None
    ) -> GenerationRequest:
        """The generation request for ``messages`` under these limits."""
        return GenerationRequest(
            messages=messages,
            n=n,
            max_tokens=self.max_tokens,
            temperature=self.temperature if temperature is None else temperature,
            stop=self.stop,
            seed=self.seed,
        )


@dataclass(frozen=True, kw_only=True)
class TierReply:
    """What one tier produced for a turn."""

    text: str
    tier: Tier
    usage: Usage
    cost_usd: float
    finish_reason: str = "stop"


class Teacher(Protocol):
    """Answers a turn the student was unsure about; None when it cannot."""

    async def reply(
        self, messages: tuple[ChatMessage, ...], question: str, sampling: Sampling
    ) -> TierReply | None:
        """The teacher's reply, recorded in the ledger."""
        ...


class ModelTeacher:
    """A registry model as teacher (any backend), metered."""

    def __init__(self, model: MeteredModel) -> None:
        self.model = model

    async def reply(
        self, messages: tuple[ChatMessage, ...], question: str, sampling: Sampling
    ) -> TierReply | None:
        """One greedy-or-client-temperature completion of the full prompt."""
        result = await self.model.generate(sampling.request(messages))
        c, u = result.completions[0], result.usage
        cost = self.model.prices.cost(u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens)
        return TierReply(
            text=c.text, tier="teacher", usage=u, cost_usd=cost, finish_reason=c.finish_reason
        )


class OracleTeacher:
    """Gold answers of a data set as the teacher, billed as if a priced model answered.

    The prompt is counted with the student's tokenizer; ``output_tokens`` are billed per
    answer (`Settings.oracle_output_tokens`), at ``prices`` (`Settings.teacher_price_model`).
    """

    def __init__(
        self,
        gold: Callable[[str], str | None],
        *,
        ledger: Ledger,
        run_id: str,
        prices: Prices,
        count_tokens: Callable[[str], int],
        output_tokens: int = 60,
    ) -> None:
        self.gold = gold
        self.ledger = ledger
        self.run_id = run_id
        self.prices = prices
        self.count_tokens = count_tokens
        self.output_tokens = output_tokens

    async def reply(
        self, messages: tuple[ChatMessage, ...], question: str, sampling: Sampling
    ) -> TierReply | None:
        """The gold answer for ``question`` (None when the data set has none)."""
        answer = self.gold(question)
        if answer is None:
            return None
        prompt = sum(self.count_tokens(m.content) for m in messages)
        usage = Usage(prompt_tokens=prompt, completion_tokens=self.output_tokens)
        cost = await record_call(
            self.ledger, CallSite(run_id=self.run_id, role="teacher"), self.prices,
            model="oracle", usage=usage, latency_s=0.0, meta={"oracle": True},
        )
        return TierReply(text=answer, tier="oracle", usage=usage, cost_usd=cost)


@dataclass(frozen=True, kw_only=True)
class CascadeOutcome:
    """The accepted reply, the tier that gave it, and what the turn cost in all."""

    reply: TierReply
    agreement: Agreement | None
    usage: Usage
    cost_usd: float


class ChatCascade:
    """Student samples -> agreement -> accept, or escalate to the teacher."""

    def __init__(
        self,
        student: MeteredModel,
        teacher: Teacher | None,
        embedder: Embedder | None,
        *,
        n: int = 3,
        tau: float = DEFAULT_TAU,
        sample_temperature: float = 0.7,
        sim: float = 0.8,
        mode: Mode = "cascade",
        rule: AcceptanceRule | None = None,
    ) -> None:
        """A cascade over ``n`` student samples.

        ``rule`` decides on the replies' votes (default ``Majority(n, tau)``; a tau above
        1, which calibration may choose, always escalates).
        """
        self.student = student
        self.teacher = teacher
        self.embedder = embedder
        self.n = n
        self.rule = rule if rule is not None else (Majority(n, tau) if tau <= 1.0 else None)
        self.sample_temperature = sample_temperature
        self.sim = sim
        self.mode = mode

    async def sample(
        self, messages: tuple[ChatMessage, ...], sampling: Sampling, mode: Mode
    ) -> CascadeOutcome:
        """The student's ``n`` replies (one batched call), their agreement and its winner."""
        n = 1 if mode == "student" else self.n
        temperature = self.sample_temperature if n > 1 else sampling.temperature
        result = await self.student.generate(
            sampling.request(messages, n=n, temperature=temperature)
        )
        u = result.usage
        cost = self.student.prices.cost(
            u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens
        )
        agreement = measure_agreement(result.texts, self.embedder, sim=self.sim)
        best = result.completions[agreement.winner]
        reply = TierReply(
            text=best.text, tier="student", usage=Usage(), cost_usd=0.0,
            finish_reason=best.finish_reason,
        )
        return CascadeOutcome(reply=reply, agreement=agreement, usage=u, cost_usd=cost)

    async def accepts(self, agreement: Agreement | None) -> bool:
        """The rule's verdict on the replies' votes (the samples already drawn)."""
        if self.rule is None or agreement is None:
            return False
        keys = list(agreement.keys)

        async def drawn(k: int) -> list[str | None]:
            return keys[:k]

        return (await self.rule.judge(drawn)).accepted

    async def run(
        self, messages: tuple[ChatMessage, ...], question: str, sampling: Sampling,
        *, mode: Mode | None = None,
    ) -> CascadeOutcome:
        """Answer one turn (``mode`` overrides the cascade's own for this turn)."""
        mode = mode or self.mode
        student: CascadeOutcome | None = None
        if mode != "teacher" or self.teacher is None:
            student = await self.sample(messages, sampling, mode)
            if mode == "student" or self.teacher is None or await self.accepts(student.agreement):
                return student
        answer = await self.teacher.reply(messages, question, sampling)
        if answer is None:  # the student's reply (drawn now in teacher-only mode)
            return student or await self.sample(messages, sampling, mode)
        if student is None:
            return CascadeOutcome(
                reply=answer, agreement=None, usage=answer.usage, cost_usd=answer.cost_usd
            )
        return CascadeOutcome(
            reply=answer,
            agreement=student.agreement,
            usage=student.usage + answer.usage,
            cost_usd=student.cost_usd + answer.cost_usd,
        )


@dataclass(frozen=True, kw_only=True)
class DevPoint:
    """One dev question: the student's agreement and whether its reply / the teacher's is right."""

    share: float
    student_correct: bool
    teacher_correct: bool = True


@dataclass(frozen=True, kw_only=True)
class TauChoice:
    """A calibrated threshold with the dev accuracy and teacher share it gives."""

    tau: float
    accuracy: float
    teacher_share: float
    reached: bool


def evaluate_tau(points: Sequence[DevPoint], tau: float) -> tuple[float, float]:
    """(accuracy, teacher share) on ``points`` if replies with share >= tau are accepted."""
    if not points:
        return 0.0, 0.0
    right = sum(p.student_correct if p.share >= tau else p.teacher_correct for p in points)
    escalated = sum(p.share < tau for p in points)
    return right / len(points), escalated / len(points)


def calibrate_tau(points: Sequence[DevPoint], target_accuracy: float) -> TauChoice:
    """The smallest tau (fewest escalations) whose dev accuracy reaches the target.

    Candidates are the observed shares plus "always escalate" (tau above 1). When no
    candidate reaches the target, the most accurate one is returned (``reached`` False).
    """
    candidates = sorted({p.share for p in points} | {0.0, 1.0 + 1e-9})
    scored = [(t, *evaluate_tau(points, t)) for t in candidates]
    ok = [s for s in scored if s[1] >= target_accuracy]
    t, acc, share = min(ok) if ok else max(scored, key=lambda s: (s[1], -s[0]))
    return TauChoice(tau=t, accuracy=acc, teacher_share=share, reached=bool(ok))

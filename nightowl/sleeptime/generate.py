"""The rethink loop that turns a context ``c`` into a learned context ``c'``.

Round 1 writes notes about ``c`` (optionally ``drafts`` samples merged by a further
call). Every later round shows the model ``c`` and the current ``c'`` and asks for an
improved rewrite, or the single word DONE when nothing is left to add. The loop stops
on DONE (or an empty answer), when ``max_rounds`` rounds ran, or when the completion-
token budget is spent. Between rounds it saves progress and asks ``should_yield``
whether to stop for now (serving traffic returned); then it raises `Yielded` with the
progress, and a later call resumes from it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol

from nightowl.config import Prices
from nightowl.config_sleep import GeneratorConfig
from nightowl.llm.base import ChatMessage, GenerationRequest, GenerationResult
from nightowl.sleeptime.store import Progress

SYSTEM = (
    "You study a text before anyone asks about it. Write notes that let a reader answer "
    "questions about the text quickly and correctly: the key facts; every quantity that "
    "can be computed from the text, with the computation and its result; a short "
    "summary; and questions someone is likely to ask, each on a line 'Q: ...' followed "
    "by a line 'A: ...' with the answer."
)
FIRST = "Text:\n{context}\n\nWrite the notes."
REWRITE = (
    "Text:\n{context}\n\nCurrent notes:\n{notes}\n\nCheck the notes against the text. "
    "Fix any mistake, add missing computed quantities and likely questions with answers, "
    "and reply with the complete improved notes. If the notes are already complete and "
    "correct, reply with the single word DONE."
)
MERGE = (
    "Text:\n{context}\n\n{drafts}\n\nMerge these drafts into one complete, correct set of "
    "notes (facts, computed quantities with their computations, summary, 'Q:'/'A:' lines). "
    "Keep what is correct, drop what contradicts the text."
)
#: a round with fewer completion tokens than this left in the budget is not started
MIN_ROUND_TOKENS = 8
DONE_RE = re.compile(r"^\W*DONE\W*$", re.IGNORECASE)
QA_RE = re.compile(
    r"^\s*(?:[-*]\s*)?Q\d*\s*[:.)]\s*(?P<q>.+?)\s*\n\s*(?:[-*]\s*)?A\d*\s*[:.)]\s*(?P<a>.+?)\s*$",
    re.MULTILINE,
)


class SleepModel(Protocol):
    """What the loop needs from a model: `MeteredModel.generate` (role "sleep")."""

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Generate (and record the call in the ledger)."""
        ...


class Yielded(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The loop stopped between rounds because the accelerator is needed for serving."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        super().__init__(f"yielded after {progress.rounds} rounds")


@dataclass(frozen=True, kw_only=True)
class RethinkHooks:
    """Callbacks between rounds: save progress (returns False if the claim was lost)."""

    on_round: Callable[[Progress], bool] | None = None
    should_yield: Callable[[], bool | Awaitable[bool]] | None = None


class ClaimLostError(Exception):
    """Another worker took the job over (our heartbeat was presumed dead)."""


def parse_qa(text: str) -> list[dict[str, str]]:
    """Anticipated questions with answers from 'Q: ... / A: ...' line pairs."""
    return [{"q": m["q"], "a": m["a"]} for m in QA_RE.finditer(text)]


def _strip_done(text: str) -> tuple[str, bool]:
    """Notes followed by a final DONE line count as a rewrite *and* a stop."""
    lines = text.rstrip().splitlines()
    if lines and DONE_RE.match(lines[-1]) and len(lines) > 1:
        return "\n".join(lines[:-1]).rstrip(), True
    return text.strip(), False


def _account(progress: Progress, result: GenerationResult, prices: Prices) -> Progress:
    u = result.usage
    return replace(
        progress,
        prompt_tokens=progress.prompt_tokens + u.prompt_tokens,
        completion_tokens=progress.completion_tokens + u.completion_tokens,
        cost_usd=progress.cost_usd
        + prices.cost(u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens),
    )


def _request(
    config: GeneratorConfig, user: str, max_tokens: int, *, n: int = 1
) -> GenerationRequest:
    temperature = config.temperature if n == 1 else max(config.temperature, 0.7)
    return GenerationRequest(
        messages=(
            ChatMessage(role="system", content=SYSTEM),
            ChatMessage(role="user", content=user),
        ),
        n=n,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=config.seed,
    )


async def rethink(
    model: SleepModel,
    context: str,
    config: GeneratorConfig,
    prices: Prices,
    *,
    start: Progress | None = None,
    hooks: RethinkHooks | None = None,
) -> Progress:
    """Run (or resume) the rethink loop; returns the final progress with a stop reason.

    Raises:
        Yielded: ``hooks.should_yield`` said stop between rounds (progress attached).
        ClaimLostError: ``hooks.on_round`` reported that the job's claim was lost.
    """
    hooks = hooks or RethinkHooks()
    progress = start or Progress(
        text="", qa=[], rounds=0, prompt_tokens=0, completion_tokens=0, cost_usd=0.0
    )
    while True:
        if progress.rounds >= config.max_rounds:
            return replace(progress, stop_reason="rounds")
        left = config.token_budget - progress.completion_tokens
        if left < MIN_ROUND_TOKENS:
            return replace(progress, stop_reason="tokens")
        if progress.rounds > 0 and hooks.should_yield is not None:
            verdict = hooks.should_yield()
            if not isinstance(verdict, bool):
                verdict = await verdict
            if verdict:
                raise Yielded(progress)
        max_tokens = min(config.round_max_tokens, left)
        done = False
        if progress.rounds == 0:
            text, progress = await _first_round(
                model, context, config, prices, progress, max_tokens
            )
            if not text:
                return replace(progress, rounds=1, stop_reason="empty")
        else:
            user = REWRITE.format(context=context, notes=progress.text)
            result = await model.generate(_request(config, user, max_tokens))
            progress = _account(progress, result, prices)
            raw = result.completions[0].text
            if not raw.strip() or DONE_RE.match(raw.strip()):
                return replace(progress, rounds=progress.rounds + 1, stop_reason="done")
            text, done = _strip_done(raw)
        progress = replace(progress, text=text, qa=parse_qa(text), rounds=progress.rounds + 1)
        if done:
            return replace(progress, stop_reason="done")
        if hooks.on_round is not None and not hooks.on_round(progress):
            raise ClaimLostError("the job's claim was taken over by another worker")


async def _first_round(
    model: SleepModel,
    context: str,
    config: GeneratorConfig,
    prices: Prices,
    progress: Progress,
    max_tokens: int,
) -> tuple[str, Progress]:
    """First notes; with ``drafts`` > 1, sample drafts in one call and merge them."""
    user = FIRST.format(context=context)
    result = await model.generate(_request(config, user, max_tokens, n=config.drafts))
    progress = _account(progress, result, prices)
    drafts = [t.strip() for t in result.texts if t.strip()]
    if len(drafts) <= 1:
        return (drafts[0] if drafts else ""), progress
    left = config.token_budget - progress.completion_tokens
    if left < MIN_ROUND_TOKENS:
        return drafts[0], progress
    listing = "\n\n".join(f"Draft {i + 1}:\n{d}" for i, d in enumerate(drafts))
    merge = MERGE.format(context=context, drafts=listing)
    result = await model.generate(_request(config, merge, min(config.round_max_tokens, left)))
    progress = _account(progress, result, prices)
    merged = result.completions[0].text.strip()
    return (merged or drafts[0]), progress

"""Answering a query about a context, with its learned context c' when one is fresh.

Modes: ``with`` puts c' next to c (as Lin et al. do); ``instead`` replaces c by c'
(a summary mode that also saves prompt tokens). Without a fresh c' the query is
answered from c alone with ordinary test-time compute, and the result says so
(``learned_status`` "missing" or "stale"): a stale c' is never used.

The test-time budget is a verbosity level with a token cap, which is what makes
accuracy-vs-tokens curves possible: ``low`` asks for the answer only, ``mid`` for
brief reasoning, ``high`` for step-by-step reasoning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from nightowl.config import Prices
from nightowl.errors import UserError
from nightowl.llm.base import ChatMessage, GenerationRequest
from nightowl.sleeptime.generate import SleepModel
from nightowl.sleeptime.schema import QueryRow
from nightowl.sleeptime.store import ContextRecord, ContextStore, LearnedStatus

MODES: tuple[str, ...] = ("with", "instead")


@dataclass(frozen=True, kw_only=True)
class AnswerBudget:
    """A test-time budget level."""

    name: str
    max_tokens: int
    instruction: str


BUDGETS: dict[str, AnswerBudget] = {
    "low": AnswerBudget(
        name="low", max_tokens=24, instruction="Reply with only the final answer, no explanation."
    ),
    "mid": AnswerBudget(
        name="mid", max_tokens=96, instruction="Think briefly (one or two lines), then answer."
    ),
    "high": AnswerBudget(
        name="high", max_tokens=256, instruction="Think step by step, then give the answer."
    ),
}
SYSTEM = "You answer questions about a text accurately."
ANSWER_LINE = 'End with a final line "Answer: <answer>".'
ANSWER_RE = re.compile(r"answer\s*[:=]\s*(.+)", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class AnswerResult:
    """One answered query."""

    text: str
    final: str
    used_learned: bool
    learned_status: LearnedStatus
    learned_id: int | None
    budget: str
    mode: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    query_id: int | None = None


def extract_final(text: str) -> str:
    """The answer part of a reply: after the last 'Answer:', else its first line."""
    if hits := ANSWER_RE.findall(text):
        return str(hits[-1]).strip().rstrip(".").strip()
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def build_prompt(
    context: str, learned: str | None, query: str, budget: AnswerBudget, mode: str
) -> GenerationRequest:
    """The chat request for one query."""
    parts = []
    if learned is None or mode == "with":
        parts.append(f"Text:\n{context}")
    if learned is not None:
        parts.append(f"Notes prepared in advance about the text:\n{learned}")
    parts.append(f"Question: {query}\n{budget.instruction} {ANSWER_LINE}")
    return GenerationRequest(
        messages=(
            ChatMessage(role="system", content=SYSTEM),
            ChatMessage(role="user", content="\n\n".join(parts)),
        ),
        max_tokens=budget.max_tokens,
        temperature=0.0,
    )


async def answer(
    store: ContextStore,
    ctx: ContextRecord,
    query: str,
    *,
    model: SleepModel,
    prices: Prices,
    budget: str | AnswerBudget = "mid",
    mode: str = "with",
    use_learned: bool = True,
    config_hash: str | None = None,
    record: bool = True,
) -> AnswerResult:
    """Answer ``query`` about ``ctx``, using a fresh c' when one exists.

    Args:
        store: the context store (finds c', records the query).
        ctx: the context as it is now.
        query: the question.
        model: the answering model (metered; calls are recorded in the ledger).
        prices: the answering model's prices.
        budget: "low", "mid" or "high" (or a custom `AnswerBudget`).
        mode: "with" (c and c') or "instead" (c' only).
        use_learned: False forces the no-c' baseline (benchmarks).
        config_hash: prefer the c' made with this generator config.
        record: store the query and answer (they feed priority and predictability).
    """
    level = budget if isinstance(budget, AnswerBudget) else BUDGETS.get(budget)
    if level is None:
        raise UserError(f"unknown budget {budget!r}; known: {', '.join(BUDGETS)}")
    if mode not in MODES:
        raise UserError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    status, learned = store.fresh_learned(ctx, config_hash=config_hash)
    use = use_learned and status == "fresh" and learned is not None and bool(learned.text)
    request = build_prompt(
        ctx.content, learned.text if use and learned else None, query, level, mode
    )
    result = await model.generate(request)
    text = result.completions[0].text.strip()
    u = result.usage
    cost = prices.cost(u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens)
    out = AnswerResult(
        text=text,
        final=extract_final(text),
        used_learned=use,
        learned_status=status,
        learned_id=learned.id if use and learned else None,
        budget=level.name,
        mode=mode if use else "none",
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        cost_usd=cost,
    )
    if not record:
        return out
    qid = store.record_query(
        QueryRow(
            context_id=ctx.id,
            query=query,
            answer=text,
            budget=level.name,
            mode=out.mode,
            learned_id=out.learned_id,
            learned_status=status,
            prompt_tokens=u.prompt_tokens,
            completion_tokens=u.completion_tokens,
            cost_usd=cost,
        )
    )
    return replace(out, query_id=qid)

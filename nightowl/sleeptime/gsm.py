"""Stateful GSM: GSM-Symbolic problems split into a context and several queries.

Following Lin et al. (2025), each problem of reasoning-gym's ``gsm_symbolic`` generator
is split into a *context* (every sentence but the final question) and a *query* (the
final question sentence), keeping the answer. Sleep-time compute sees only the
context; queries come later.

Multi-query (at least 3 queries per context where the generator's variables allow):
besides the original question, extra queries are derived from the generator's
metadata variables, with answers computed from those variables, never from a model:

1. *derived quantities*: numeric variables whose value does not appear in the context
   text (the generator computed them from the given numbers, e.g. ``volleyball_players
   = 2 * tennis_players``). The query names the variable: "Compute the quantity
   'volleyball players' described in the text." — answer: the variable's value.
2. *combinations* (only if still short of ``min_queries``): the sum of two given
   numeric variables that both appear in the text: "What is the sum of 'hours' and
   'hourly rate'?" — answer: their sum.

Variable names are the generator authors' and occasionally imprecise; the queries
quote them verbatim rather than paraphrasing. Answers are scored by numeric compare.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal

from nightowl.errors import MissingExtraError

INSTRUCTION_RE = re.compile(r"\s*Give the result as your final answer\..*$", re.DOTALL)
NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
ABBREVIATIONS = ("Mr.", "Ms.", "Mrs.", "Dr.", "St.", "Jr.", "Sr.", "vs.", "etc.", "Prof.")
SUFFIX = " Give the result as your final answer. Do not include units."

QueryKind = Literal["original", "derived", "combined"]


@dataclass(frozen=True, kw_only=True)
class GsmQuery:
    """One query about a context, with its numeric answer."""

    text: str
    answer: float
    kind: QueryKind


@dataclass(frozen=True, kw_only=True)
class GsmContext:
    """A context with its queries (the original question first)."""

    id: str
    context: str
    queries: tuple[GsmQuery, ...]
    source_question: str


def split_question(question: str) -> tuple[str, str] | None:
    """Split a GSM question into (context, final question sentence), or None."""
    text = INSTRUCTION_RE.sub("", question).strip()
    if not text.endswith("?"):
        return None
    body = text[:-1]
    for m in reversed(list(re.finditer(r"[.!?](?=\s+\S)", body))):
        end = m.end()
        if body[:end].endswith(ABBREVIATIONS):
            continue
        if body[m.start() - 1 : m.start()].isdigit() and body[end : end + 1].isdigit():
            continue
        context, query = body[:end].strip(), text[end:].strip()
        if context and query:
            return context, query
    return None


def _numbers(text: str) -> set[float]:
    return {float(tok.replace(",", "")) for tok in NUMBER_RE.findall(text)}


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _human(name: str) -> str:
    return name.replace("_", " ").strip()


def derive_queries(
    context: str, query: str, answer: float, variables: dict[str, Any], *, max_queries: int = 4
) -> list[GsmQuery]:
    """The original query plus queries derived from the generator's variables."""
    out = [GsmQuery(text=query + SUFFIX, answer=answer, kind="original")]
    in_text = _numbers(context)
    used = {answer}
    given: list[tuple[str, float]] = []
    for name, raw in variables.items():
        value = _numeric(raw)
        if value is None:
            continue
        if value in in_text:
            given.append((name, value))
            continue
        if value in used or len(out) >= max_queries or value * 100 in in_text:
            continue  # (a percentage restated as a fraction is not a new quantity)
        used.add(value)
        out.append(
            GsmQuery(
                text=f"Compute the quantity '{_human(name)}' described in the text.{SUFFIX}",
                answer=value,
                kind="derived",
            )
        )
    for (a, va), (b, vb) in combinations(given, 2):
        if len(out) >= 3:  # combinations top the queries up to three at most
            break
        total = va + vb
        if total in used or va == vb:
            continue
        used.add(total)
        out.append(
            GsmQuery(
                text=f"What is the sum of '{_human(a)}' and '{_human(b)}' in the text?{SUFFIX}",
                answer=total,
                kind="combined",
            )
        )
    return out


def load_stateful_gsm(
    n_contexts: int = 10, *, seed: int = 42, min_queries: int = 3, max_queries: int = 4
) -> list[GsmContext]:
    """The first ``n_contexts`` problems that split cleanly and yield >= ``min_queries``."""
    try:
        import reasoning_gym
    except ImportError:  # pragma: no cover - reasoning-gym comes with the envs extra
        raise MissingExtraError("stateful GSM", "envs", "reasoning-gym") from None
    out: list[GsmContext] = []
    size = max(4 * n_contexts, 20)
    ds = reasoning_gym.create_dataset("gsm_symbolic", size=size, seed=seed)
    for index, item in enumerate(ds):
        split = split_question(item["question"])
        answer = _numeric(item["metadata"].get("answer_value"))
        if split is None or answer is None:
            continue
        context, query = split
        queries = derive_queries(
            context, query, answer, item["metadata"].get("variables", {}), max_queries=max_queries
        )
        if len(queries) < min_queries:
            continue
        out.append(
            GsmContext(
                id=f"gsm/{seed}/{index}",
                context=context,
                queries=tuple(queries),
                source_question=item["question"],
            )
        )
        if len(out) >= n_contexts:
            break
    return out


def parse_number(text: str) -> float | None:
    """The number a reply commits to (after 'Answer:' if present, else its last number)."""
    tail = re.split(r"answer\s*[:=]", text, flags=re.IGNORECASE)[-1]
    nums = NUMBER_RE.findall(tail) or NUMBER_RE.findall(text)
    if not nums:
        return None
    return float(nums[0 if tail is not text else -1].replace(",", ""))


def is_correct(reply: str, expected: float) -> bool:
    """Numeric compare with a small relative tolerance."""
    got = parse_number(reply)
    return got is not None and math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-6)

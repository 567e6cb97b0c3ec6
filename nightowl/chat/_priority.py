"""Which idle thread to rethink first: expected queries x predictability.

The same rule as the document sleep-time queue (`nightowl.sleeptime.policy`, after
Lin et al., 2025: sleep-time compute pays off when many queries share a context and
they are predictable from it), adapted to conversations:

- ``expected_queries = 1 + user turns so far``: a thread's past questions are the
  best estimate of how many more it will get (a long-running thread keeps going).
- ``predictability = exp(mean per-token log p(u | earlier transcript))`` over the
  thread's last few user turns ``u``, scored by the student (`score_continuations`,
  one forward pass per turn on a transcript cut to its last ``max_chars``). It is
  measured once per thread revision and cached by the caller. Threads whose backend
  cannot score (e.g. an HTTP endpoint without prompt logprobs) get the geometric
  mean of the measured ones (1.0 when none is), exactly like unmeasured documents,
  so they neither jump nor trail the queue; ties go to the longest idle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nightowl.chat.threads import ThreadRecord
from nightowl.llm.base import ChatMessage, ModelBackend


@dataclass(frozen=True, kw_only=True)
class ThreadWork:
    """An idle thread with how urgently it should be rethought."""

    thread: ThreadRecord
    expected_queries: int
    predictability: float
    priority: float


def rank_threads(
    threads: list[ThreadRecord],
    user_turns: dict[str, int],
    predictability: dict[str, float | None],
) -> list[ThreadWork]:
    """Order threads by (1 + user turns) x predictability, highest first."""
    measured = [p for t in threads if (p := predictability.get(t.id))]
    prior = math.exp(sum(math.log(p) for p in measured) / len(measured)) if measured else 1.0
    items = []
    for t in threads:
        expected = 1 + user_turns.get(t.id, 0)
        pred = predictability.get(t.id) or prior
        items.append(
            ThreadWork(
                thread=t, expected_queries=expected, predictability=pred, priority=expected * pred
            )
        )
    items.sort(key=lambda w: (-w.priority, w.thread.last_active_at, w.thread.id))
    return items


def transcript(messages: list[ChatMessage]) -> str:
    """A conversation as text (what the rethink loop studies and the scorer conditions on)."""
    return "\n".join(f"{m.role.capitalize()}: {m.content}" for m in messages)


async def thread_predictability(
    messages: list[ChatMessage], scorer: ModelBackend, *, turns: int = 2, max_chars: int = 2000
) -> float | None:
    """exp(mean per-token log p(user turn | transcript before it)) over recent user turns.

    None when the thread has no user turn with history before it, or the backend
    cannot score.
    """
    scored_logprob, scored_tokens = 0.0, 0
    picked = [i for i, m in enumerate(messages) if m.role == "user" and i > 0][-turns:]
    for i in picked:
        prompt = transcript(messages[:i])[-max_chars:] + "\nUser:"
        try:
            scored = await scorer.score_continuations(prompt, [" " + messages[i].content])
        except NotImplementedError:
            return None
        scored_logprob += sum(scored.logprobs)
        scored_tokens += sum(scored.token_counts)
    if scored_tokens <= 0:
        return None
    return math.exp(scored_logprob / scored_tokens)

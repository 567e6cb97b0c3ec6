"""Acceptance signals from retrieved demos: what did the nearest demo step do?

The memory returns demo windows around the demo steps most similar to the current state
(`DemoWindow.hit_idxs`, scored by observation + goal/history embeddings). The demo step
nearest to this state is the hit step of the best-scored window whose observation
shares most words with the current one; the action it took, mapped onto this state's
valid actions (exact, else contained, else close by string similarity), is a second
opinion that costs no model call. Agreement between it and the student's top choice is
an acceptance signal (`nightowl.agent.acceptance.DemoAgreement`), calibrated on dev.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nightowl.distill.parser import normalize_action, parse_action
from nightowl.distill.prompt import field_of

_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True, kw_only=True)
class DemoHint:
    """The nearest demo step's action, mapped to the current valid actions."""

    action: str | None  # a valid action of this state, or None (no usable mapping)
    demo_action: str  # what the demo did, verbatim
    how: str  # exact | contained | closest | analogy | failed | free


def _words(text: str) -> set[str]:
    # Masking numbers: move counters and scores change without the state changing.
    return {w for w in _WORD.findall((text or "").lower()) if not w.isdigit()}


def jaccard(a: str, b: str) -> float:
    """Word-set overlap of two texts (numbers ignored)."""
    wa, wb = _words(a), _words(b)
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / max(1, len(wa | wb))


def nearest_demo_step(demos: Sequence[Any], observation: str) -> Any | None:
    """The demo step nearest this state (None: no candidate).

    Candidates are the retrieval hits (``hit_idxs``) of every window, or every step
    where a window does not say; they are ranked by the window's retrieval score first
    (the memory's embedding similarity), then by word overlap with ``observation``.
    """
    best: tuple[tuple[float, float], Any] | None = None
    for w in demos:
        hits = set(field_of(w, "hit_idxs", ()) or ())
        score = round(float(field_of(w, "step_score", 0.0) or 0.0), 4)
        for st in field_of(w, "steps", ()) or ():
            if hits and field_of(st, "idx", None) not in hits:
                continue
            obs = field_of(st, "observation", None) or field_of(st, "obs", "") or ""
            rank = (score, jaccard(str(obs), observation))
            if best is None or rank > best[0]:
                best = (rank, st)
    return None if best is None else best[1]


def demo_hint(
    demos: Sequence[Any],
    observation: str,
    valid_actions: Sequence[str] | None,
    *,
    cutoff: float = 0.8,
) -> DemoHint | None:
    """The nearest demo step's action mapped onto ``valid_actions`` (None: no demos).

    Args:
        demos: retrieved demo windows (`DemoWindow`, `DemoView` or dicts).
        observation: the current observation.
        valid_actions: this state's valid actions (None: the action is kept as is).
        cutoff: minimum string similarity for a "closest" mapping; a lower one leaves
            ``action`` None (the demo's action has no counterpart here).
    """
    step = nearest_demo_step(demos, observation)
    if step is None:
        return None
    demo_action = str(field_of(step, "action", "") or "")
    demo_obs = str(field_of(step, "observation", None) or field_of(step, "obs", "") or "")
    parsed = parse_action(demo_action, tuple(valid_actions) if valid_actions else None,
                          cutoff=cutoff)
    action, how = parsed.action, str(parsed.method)
    if valid_actions and how in ("failed", "closest"):
        analog = analogous_action(demo_action, demo_obs, observation, valid_actions)
        if analog is not None:
            action, how = analog, "analogy"
    return DemoHint(action=action, demo_action=demo_action, how=how)


def analogous_action(
    demo_action: str, demo_obs: str, observation: str, valid_actions: Sequence[str]
) -> str | None:
    """The valid action that does here what ``demo_action`` did in its demo state.

    Demos come from other tasks, so their objects differ ("touch pineapple" when
    Simon now says "touch cucumber"). Same verb (first word), and: if the demo's object
    words were mentioned in the demo's observation, the candidate whose object words are
    mentioned in this observation; otherwise the candidate closest as a string. None
    when no valid action has the verb, or the choice is ambiguous.
    """
    words = normalize_action(demo_action).split()
    if not words:
        return None
    verb, obj = words[0], set(words[1:])
    cands = [a for a in valid_actions if normalize_action(a).split()[:1] == [verb]]
    if not cands:
        return None
    if len(cands) == 1:
        return cands[0]
    here = _words(observation)
    if obj and obj <= _words(demo_obs):
        # The demo acted on something its observation named: do so with what this one names.
        hits = [(len(set(normalize_action(a).split()[1:]) & here), a) for a in cands]
        best = max(n for n, _ in hits)
        top = [a for n, a in hits if n == best]
        if best > 0 and len(top) == 1:
            return top[0]
    return None

"""Moves in text worlds: which actions move the agent, and which one walks back.

A student without the map cannot know which exit leads to the coin or the kitchen, but
it can know which exit it just came through. On TextWorld coin the embedded student's
misses on navigation choices were almost all that exit: after ``go east`` it ranked
``go west`` first, back into the room it had just left (``bench/icd_matrix.py``, the
"walk back" table). An expert that searches or knows the map never does that while
another exit is open, so the student tier leaves the walk-back move out of its
candidates (``StudentTier(backtrack="avoid")``) unless it is the only move left: a dead
end still walks back.

Compass moves only (``go north``, ``move west``, ``north``); ``go to kitchen`` and
other named moves have no opposite to detect.
"""

from __future__ import annotations

from collections.abc import Sequence

from nightowl.distill.parser import normalize_action

#: each compass direction and the one that undoes it
OPPOSITE: dict[str, str] = {
    "north": "south", "south": "north", "east": "west", "west": "east",
    "up": "down", "down": "up",
    "northeast": "southwest", "southwest": "northeast",
    "northwest": "southeast", "southeast": "northwest",
}
_VERBS = ("go", "move", "walk")


def is_move(action: str) -> bool:
    """Whether an action moves the agent (``go west``, ``move north``, ``north``, ``go to X``)."""
    words = normalize_action(action).split()
    return bool(words) and (words[0] in _VERBS or words[0] in OPPOSITE)


def direction(action: str | None) -> str | None:
    """The compass direction of a move (``"west"`` for ``go west``), else None."""
    words = normalize_action(action or "").split()
    if len(words) == 2 and words[0] in _VERBS and words[1] in OPPOSITE:
        return words[1]
    if len(words) == 1 and words[0] in OPPOSITE:
        return words[0]
    return None


def walks_back(previous: str | None, action: str) -> bool:
    """Whether ``action`` undoes the move ``previous`` (``go west`` after ``go east``)."""
    came = direction(previous)
    return came is not None and direction(action) == OPPOSITE[came]


def without_walk_back(actions: Sequence[str], previous: str | None) -> tuple[str, ...]:
    """``actions`` without the one that walks back, while another compass move is left.

    Unchanged when the previous action was not a compass move, when no action walks
    back, or when walking back is the only move (a dead end).
    """
    acts = tuple(actions)
    back = [walks_back(previous, a) for a in acts]
    if not any(back):
        return acts
    other_moves = sum(direction(a) is not None and not b for a, b in zip(acts, back, strict=True))
    if other_moves == 0:
        return acts
    return tuple(a for a, b in zip(acts, back, strict=True) if not b)

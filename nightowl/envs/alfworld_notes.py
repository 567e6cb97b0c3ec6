"""Notes an ALFWorld observation may end with: what the imitable expert knows, as text.

Both come from the same knowledge `ImitableAlfredExpert` acts on -- the goal, the
episode's text and the search statistics of train games -- never from the game's facts:

* ``search`` (`search_note`): while the object is still to be found, where one was seen,
  else the receptacles not searched yet in the learned order; nothing after that.
* ``plan`` (`plan_note`): one line for every phase, in the way a ReAct teacher's thought
  says what it does next: what it is looking for and where, what it holds, and the next
  step ("Next: go to shelf 1.", "Next: open it.", "Next: go to fridge 1 and take it.",
  "Next: go to microwave 1 and heat it with microwave 1.", "Next: move it to countertop 1
  (here)."). The put steps use the command's verb ("move"). A receptacle the agent
  stands at is marked "(here)".
"""

from __future__ import annotations

from collections.abc import Sequence

from nightowl.envs.imitable_alfworld import (
    TOOLS,
    ImitableAlfredExpert,
    World,
    kind_of,
    parse_goal,
)

Trace = Sequence[tuple[str, str]]
#: what a transformed object is, by task kind
DONE = {"clean": "cleaned", "heat": "heated", "cool": "cooled"}


def search_note(expert: ImitableAlfredExpert, goal: str, first_text: str, trace: Trace,
                shown: int = 4) -> str:
    """One line on the search ("" if none).

    While an object is still to be found: where one was seen, else the first ``shown``
    receptacles the episode has not searched, in the learned order.
    """
    g = parse_goal(goal)
    if g is None:
        return ""
    w = World.replay(first_text, trace)
    if w.held is not None and (g.kind != "look" or w.where(g.target)):
        return ""
    kind = g.target if w.held is not None else g.obj
    last, skip = "", set[str]()
    if g.kind != "look":  # as the expert: the goal type last, its receptacle skipped
        last, goal_recep = g.target, expert.goal_receptacle(g, w)
        skip = {goal_recep} if goal_recep else set()
    seen = w.where(kind, exclude=skip)
    if seen:
        obj, recep = seen[0]
        return f"Seen: {obj} in {recep}."
    todo = expert.unsearched(w, kind, last=last, skip=skip)
    if not todo:
        return ""
    return f"Not searched yet for a {kind}, likeliest first: {', '.join(todo[:shown])}."


def plan_note(expert: ImitableAlfredExpert, goal: str, first_text: str, trace: Trace,
              shown: int = 4) -> str:
    """One line on what the expert does next and why ("" if the goal is not understood)."""
    g = parse_goal(goal)
    if g is None:
        return ""
    w = World.replay(first_text, trace)

    def here(recep: str) -> str:
        if recep != w.at:
            return recep
        return f"{recep} (here, closed)" if recep in w.closed else f"{recep} (here)"

    def looking_for(kind: str, last: str = "", skip: frozenset[str] = frozenset()) -> str:
        seen = w.where(kind, exclude=skip)
        if seen:
            obj, recep = seen[0]
            return (f"Looking for a {kind}: {obj} is in {here(recep)}. "
                    f"Next: {go_and(recep, 'take it')}.")
        if w.at and w.at in w.closed and w.at not in skip:
            return f"Looking for a {kind}: {here(w.at)} is not searched yet. Next: open it."
        todo = expert.unsearched(w, kind, last=last, skip=skip)
        if not todo:
            return f"Looking for a {kind}: every receptacle is searched."
        # the expert goes to the first; said last, as a step, so that a small student
        # does not take the list's last item for the one to act on
        return (f"Looking for a {kind}; not searched yet, likeliest first: "
                f"{', '.join(todo[:shown])}. Next: go to {todo[0]}.")

    def go_and(recep: str, verb: str) -> str:
        """``verb`` (naming X where it says "{}") if the agent is at X, else go to X first."""
        if recep == w.at:
            return verb.format(here(recep))
        return f"go to {recep} and {verb.format(recep)}"

    # the put steps use the command's verb ("move apple 2 to countertop 1"): with "put it
    # in", a small student did not choose the move command at the goal receptacle
    if w.held and kind_of(w.held) != g.obj:
        back = f", or back to {w.held_from}" if w.held_from and w.held_from != w.at else ""
        return (f"Holding {w.held}, which the task does not need. "
                f"Next: move it to {here(w.at or '')}{back}.")
    if g.kind == "look":
        if w.held is None:
            return looking_for(g.obj)
        lamps = w.where(g.target)
        if lamps:
            lamp, recep = lamps[0]
            return f"Holding {w.held}. Next: {go_and(recep, f'use {lamp}')}."
        return f"Holding {w.held}. {looking_for(g.target)}"
    goal_recep = expert.goal_receptacle(g, w)
    if goal_recep is None:
        return ""
    if w.held is None:
        return looking_for(g.obj, last=g.target, skip=frozenset({goal_recep}))
    tool = TOOLS.get(g.kind)
    if tool and (g.kind, w.held) not in w.transformed:
        station = expert.first_of(w, tool)
        if station is None:
            return ""
        return f"Holding {w.held}. Next: {go_and(station, g.kind + ' it with {}')}."
    state = f", {DONE[g.kind]}" if tool else ""
    closed = w.at == goal_recep and goal_recep in w.closed
    put = "open {}, then move it to " + goal_recep if closed else "move it to {}"
    return f"Holding {w.held}{state}. Next: {go_and(goal_recep, put)}."

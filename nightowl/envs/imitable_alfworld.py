"""An imitable ALFWorld expert: it acts only on what the episode has shown.

ALFWorld's handcoded expert and the PDDL planner read the game's facts, so they walk
straight to the receptacle that holds the object; a student that sees only the text
cannot agree with those choices. This expert sees what the student sees -- the goal,
the first observation (the receptacles of the room), every action taken with its
feedback, and the valid actions -- plus statistics learned from *training* games only:
for each object type, how often an instance of each receptacle type held one
(`SearchStats`, from the generator's train split), and which receptacle types open.

Policy, by task type (read from the goal text):

* find the object: go to the receptacle where one was already seen, else to the next
  receptacle whose contents the episode has not shown, in the learned search order
  (the likeliest holders first, openable ones counted as two steps; the goal
  receptacle's type last); open a closed receptacle on arrival; take the object once
  it is in view;
* then clean / heat / cool it at the first sinkbasin / microwave / fridge, or, for
  ``look``, go to the desk lamp (seen, or searched the same way) and use it;
* put it in the first receptacle of the goal type (opening it if closed); ``pick2``
  repeats the search for a second object and puts both in the same receptacle.

Everything is recomputed from the trace at every call (`World.replay`), so the expert
is state-aware: after any action the agent took, it continues from the state the text
shows. It is deterministic: same goal, trace and valid actions, same action.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: bump when the statistics' definition changes (part of the cache file name)
STATS_VERSION = 1
#: train seeds per task type the statistics are learned from
STATS_SEEDS = 200

#: goal templates (alfworld.gen.goal_library) -> task kind
GOALS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), kind)
    for p, kind in (
        (r"^put a clean (\w+) in (\w+)$", "clean"),
        (r"^clean some (\w+) and put it in (\w+)$", "clean"),
        (r"^put a hot (\w+) in (\w+)$", "heat"),
        (r"^heat some (\w+) and put it in (\w+)$", "heat"),
        (r"^put a cool (\w+) in (\w+)$", "cool"),
        (r"^cool some (\w+) and put it in (\w+)$", "cool"),
        (r"^put two (\w+) in (\w+)$", "pick2"),
        (r"^find two (\w+) and put them in (\w+)$", "pick2"),
        (r"^look at (\w+) under the (\w+)$", "look"),
        (r"^examine the (\w+) with the (\w+)$", "look"),
        (r"^put a (\w+) in (\w+)$", "pick"),
        (r"^put some (\w+) on (\w+)$", "pick"),
    )
)
#: the appliance each transform uses, and the verb of its command
TOOLS = {"clean": "sinkbasin", "heat": "microwave", "cool": "fridge"}

_ENTITY = re.compile(r"\b([a-z]+) (\d+)\b")
_PUT = re.compile(r"you (?:move|put) the ([a-z]+ \d+) (?:to|in|on) the ([a-z]+ \d+)\.")


@dataclass(frozen=True, kw_only=True)
class Goal:
    """A parsed goal: task kind, object type, and goal receptacle (lamp for ``look``)."""

    kind: str
    obj: str
    target: str


def parse_goal(goal: str) -> Goal | None:
    """The task in an ALFWorld goal text, or None if it matches no template."""
    text = " ".join(goal.lower().replace("your task is to:", "").split()).strip(" .")
    for pattern, kind in GOALS:
        m = pattern.match(text)
        if m:
            return Goal(kind=kind, obj=m.group(1), target=m.group(2))
    return None


def kind_of(name: str) -> str:
    """``"cabinet 3"`` -> ``"cabinet"``."""
    return name.rsplit(" ", 1)[0]


# ----------------------------------------------------------------------------- statistics
@dataclass(frozen=True, kw_only=True)
class SearchStats:
    """What training games say about where objects are.

    ``rates[obj][recep]``: the share of receptacles of type ``recep`` that held an
    ``obj`` in the training games where ``obj`` was present (and ``recep`` was not the
    goal receptacle's type); ``openable``: receptacle types that were openable.
    """

    rates: dict[str, dict[str, float]]
    openable: frozenset[str]
    games: int = 0

    def order(self, obj: str, receptacles: Sequence[str], last: str = "") -> list[str]:
        """``receptacles`` in search order for ``obj`` (type ``last`` at the end).

        Likeliest first, an openable receptacle counted as two steps (go, open); ties
        in the order the room listed them, by number.
        """
        rates = self.rates.get(obj, {})

        def key(r: str) -> tuple[int, float, str, int]:
            k = kind_of(r)
            value = rates.get(k, 0.0) / (2.0 if k in self.openable else 1.0)
            return (int(k == last), -value, k, _number(r))

        return sorted(receptacles, key=key)

    def to_json(self) -> dict[str, object]:
        """A JSON-able form (the cache file)."""
        return {"version": STATS_VERSION, "games": self.games, "rates": self.rates,
                "openable": sorted(self.openable)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchStats:
        """Inverse of `to_json`."""
        openable, games = frozenset(data["openable"]), int(data.get("games", 0))
        return cls(rates=data["rates"], openable=openable, games=games)


_PDDL_FACT = re.compile(r"\((\w+) (\S+) (\S+)\)")


def stats_from_problems(problems: Iterable[str]) -> SearchStats:
    """Learn `SearchStats` from ALFWorld PDDL problems (training games)."""
    held: Counter[tuple[str, str]] = Counter()
    seen: Counter[tuple[str, str]] = Counter()
    openable: set[str] = set()
    games = 0
    for problem in problems:
        games += 1
        rtype: dict[str, str] = {}
        otype: dict[str, str] = {}
        inside: dict[str, str] = {}
        for pred, a, b in _PDDL_FACT.findall(problem):
            if pred == "receptacleType":
                rtype[a] = b.removesuffix("Type").lower()
            elif pred == "objectType":
                otype[a] = b.removesuffix("Type").lower()
            elif pred == "inReceptacle":
                inside[a] = b
        opens = re.findall(r"\(openable (\S+)\)", problem)
        openable.update(rtype[r] for r in opens if r in rtype)
        goal = re.search(r"\(receptacleType \?r (\w+)Type\)", problem)
        goal_type = goal.group(1).lower() if goal else ""
        by_recep: dict[str, set[str]] = {}
        for o, r in inside.items():
            by_recep.setdefault(r, set()).add(otype.get(o, ""))
        present = set(otype.values())
        for obj in present:
            for r, t in rtype.items():
                if t == goal_type:
                    continue
                seen[(obj, t)] += 1
                held[(obj, t)] += int(obj in by_recep.get(r, ()))
    rates: dict[str, dict[str, float]] = {}
    for (obj, t), n in sorted(seen.items()):
        if held[(obj, t)]:
            rates.setdefault(obj, {})[t] = round(held[(obj, t)] / n, 4)
    return SearchStats(rates=rates, openable=frozenset(openable), games=games)


def train_stats(cache_dir: Path | None = None, seeds: int = STATS_SEEDS) -> SearchStats:
    """`SearchStats` learned from the generator's train games (cached as JSON).

    The problems are the generator's train-split draws (`alfworld_gen.build_problem`
    for train seeds ``0..seeds-1`` of every task type: the same object placement as the
    kept games, no planner needed); dev and test games are never read.
    """
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"imitable-stats-v{STATS_VERSION}-{seeds}.json"
        if path.is_file():
            return SearchStats.from_json(json.loads(path.read_text()))
    from nightowl.envs import alfworld_gen

    problems = (
        alfworld_gen.build_problem(task, "train", seed)[0]
        for task in alfworld_gen.TASK_TYPES
        for seed in range(seeds)
    )
    stats = stats_from_problems(problems)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stats.to_json(), sort_keys=True))
        tmp.replace(path)
    return stats


# ----------------------------------------------------------------------------- the world
@dataclass
class World:
    """What the text has shown so far."""

    receptacles: list[str] = field(default_factory=list)
    at: str | None = None
    contents: dict[str, list[str]] = field(default_factory=dict)  # known contents
    closed: set[str] = field(default_factory=set)
    held: str | None = None
    held_from: str | None = None  # where the held object was taken from
    transformed: set[tuple[str, str]] = field(default_factory=set)  # (verb, object)

    @classmethod
    def replay(cls, first_text: str, trace: Sequence[tuple[str, str]]) -> World:
        """The world after the first observation and each (action, feedback)."""
        w = cls()
        m = re.search(r"you see (.*?)\.\s*(?:\n|$)", first_text, re.S)
        if m:
            w.receptacles = [f"{a} {n}" for a, n in _ENTITY.findall(m.group(1))]
        for action, text in trace:
            w.update(action, text)
        return w

    def _seen(self, recep: str, text: str) -> None:
        m = re.search(r"you see (.*?)\.", text)
        self.contents[recep] = (
            [] if not m or m.group(1).strip() == "nothing"
            else [f"{a} {n}" for a, n in _ENTITY.findall(m.group(1))]
        )

    def update(self, action: str, text: str) -> None:
        """Apply one step's feedback (actions that did nothing change nothing)."""
        t = " ".join(text.split())
        low = t.lower()
        if low.startswith("you arrive at") and action.startswith("go to "):
            r = action.removeprefix("go to ")
            self.at = r
            if f"the {r} is closed" in low:
                self.closed.add(r)
            else:
                self.closed.discard(r)
                self._seen(r, low)
        elif m := re.match(r"you open the ([a-z]+ \d+)\.", low):
            self.closed.discard(m.group(1))
            self._seen(m.group(1), low)
        elif m := re.match(r"you close the ([a-z]+ \d+)\.", low):
            self.closed.add(m.group(1))
        elif m := re.match(r"you pick up the ([a-z]+ \d+) from the ([a-z]+ \d+)\.", low):
            self.held, self.held_from = m.group(1), m.group(2)
            items = self.contents.get(m.group(2), [])
            if self.held in items:
                items.remove(self.held)
        elif m := _PUT.match(low):
            self.contents.setdefault(m.group(2), []).append(m.group(1))
            if self.held == m.group(1):
                self.held = None
        elif m := re.match(r"you (clean|heat|cool) the ([a-z]+ \d+) using", low):
            self.transformed.add((m.group(1), m.group(2)))
        elif action.startswith("examine ") and "you see" in low:
            self._seen(action.removeprefix("examine "), low)

    def where(self, kind: str, exclude: Iterable[str] = ()) -> list[tuple[str, str]]:
        """(object, receptacle) pairs of a kind in known contents, in receptacle order."""
        skip = set(exclude)
        return [(o, r) for r in self.receptacles if r not in skip
                for o in self.contents.get(r, []) if kind_of(o) == kind]


# ----------------------------------------------------------------------------- the policy
class ImitableAlfredExpert:
    """The next action from observations only (see the module docstring)."""

    def __init__(self, stats: SearchStats) -> None:
        self.stats = stats

    def act(
        self, goal: str, first_text: str, trace: Sequence[tuple[str, str]], valid: Sequence[str]
    ) -> str | None:
        """The next action, or None when the goal is not understood or nothing fits."""
        g = parse_goal(goal)
        if g is None:
            return None
        w = World.replay(first_text, trace)
        valid_set = set(valid)
        step = self._decide(g, w, valid_set)
        return step if step in valid_set else None

    # -- helpers
    def first_of(self, w: World, kind: str) -> str | None:
        """The lowest-numbered receptacle of ``kind`` in the room (the station it uses)."""
        return min((r for r in w.receptacles if kind_of(r) == kind), key=_number, default=None)

    @staticmethod
    def _reach(w: World, recep: str, then: str, valid: set[str]) -> str:
        """``then`` if it is valid here, else the step towards ``recep``.

        Receptacles that share a spot (cabinet 3 and cabinet 4) cannot be gone to from
        each other: there, ``open`` or ``examine`` reaches them.
        """
        if then in valid:
            return then
        for step in (f"go to {recep}", f"open {recep}", f"examine {recep}"):
            if step in valid and not (step.startswith("examine") and recep in w.contents):
                return step
        return then

    def _put(self, w: World, obj: str, recep: str, valid: set[str]) -> str:
        """Go to ``recep``, open it if closed, put ``obj`` in it."""
        for cmd in (f"move {obj} to {recep}", f"put {obj} in {recep}", f"put {obj} on {recep}",
                    f"put {obj} in/on {recep}"):
            if cmd in valid:
                return cmd
        return self._reach(w, recep, f"move {obj} to {recep}", valid)

    def _search(self, w: World, kind: str, valid: set[str], last: str = "",
                exclude: Iterable[str] = ()) -> str | None:
        """Take an object of ``kind`` in view, else go to where one was seen, else search.

        Searching: the first receptacle in the learned order whose contents the episode
        has not shown yet (one visited but left closed is still unsearched).
        """
        skip = set(exclude)
        for obj, recep in w.where(kind, exclude=skip):
            return self._reach(w, recep, f"take {obj} from {recep}", valid)
        if w.at and w.at in w.closed and w.at not in skip:
            return f"open {w.at}"  # arrived at a closed receptacle: look inside
        for r in self.unsearched(w, kind, last=last, skip=skip):
            step = self._reach(w, r, f"go to {r}", valid)
            if step in valid:
                return step
        return None

    def unsearched(self, w: World, kind: str, last: str = "",
                   skip: Iterable[str] = ()) -> list[str]:
        """Receptacles whose contents the episode has not shown, in search order.

        The order is the learned one for ``kind``, type ``last`` at the end; ``skip`` is
        left out.
        """
        left_out = set(skip)
        return [r for r in self.stats.order(kind, w.receptacles, last=last)
                if r not in w.contents and r not in left_out]

    def _decide(self, g: Goal, w: World, valid: set[str]) -> str | None:
        # Holding something the task does not need: put it down here, else put it back.
        if w.held and kind_of(w.held) != g.obj:
            here = w.at or ""
            if f"move {w.held} to {here}" in valid:
                return f"move {w.held} to {here}"
            back = w.held_from or here
            return self._reach(w, back, f"move {w.held} to {back}", valid)
        if g.kind == "look":
            if w.held is None:
                return self._search(w, g.obj, valid)
            lamps = w.where(g.target)
            if lamps:
                lamp, recep = lamps[0]
                return self._reach(w, recep, f"use {lamp}", valid)
            return self._search(w, g.target, valid)
        goal_recep = self.goal_receptacle(g, w)
        if goal_recep is None:
            return None
        if w.held is None:
            # pick2: objects already in the goal receptacle do not count as found
            return self._search(w, g.obj, valid, last=g.target, exclude=(goal_recep,))
        tool = TOOLS.get(g.kind)
        if tool and (g.kind, w.held) not in w.transformed:
            station = self.first_of(w, tool)
            if station is None:
                return None
            return self._reach(w, station, f"{g.kind} {w.held} with {station}", valid)
        return self._put(w, w.held, goal_recep, valid)

    def goal_receptacle(self, g: Goal, w: World) -> str | None:
        """The first receptacle of the goal type (for pick2: one already holding one)."""
        options = sorted((r for r in w.receptacles if kind_of(r) == g.target), key=_number)
        if g.kind == "pick2":
            started = [r for r in options
                       if any(kind_of(o) == g.obj for o in w.contents.get(r, []))]
            if started:
                return started[0]
        return options[0] if options else None


def _number(name: str) -> int:
    tail = name.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0

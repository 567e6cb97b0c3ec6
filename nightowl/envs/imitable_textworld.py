"""Imitable TextWorld experts: they act only on what the episode has shown.

TextWorld's own expert (``policy_commands``) is computed from the game's full state:
in a cooking game it walks straight to the kitchen on a map the player has not seen,
and never reads the cookbook, so which ingredient to take is in no prompt. The experts
here see what a student sees -- the goal, every action taken with its feedback, and the
valid actions -- and decide from that alone:

* **cooking** (`cooking_action`): find the kitchen by systematic exploration (the
  first exit not yet taken from the current room, in the order north, east, south,
  west; closed doors opened when a room has no untried exit; back through known rooms
  to the nearest one with an untried exit), ``examine cookbook`` first, then gather the
  recipe's ingredients (take one in view; else open the room's closed containers, the
  fridge first; else explore further rooms), carry out each direction the text does not
  already show done (fry / roast / grill with stove / oven / BBQ, slice / dice / chop
  with the knife), return to the kitchen, ``prepare meal``, ``eat meal``.
* **coin_collector / treasure_hunter** (`route_action`): their goal text spells out the
  route ("head west, then travel north ... lift the coin from the floor of the
  studio"), so the expert follows the goal: it keeps to the instructed route on the
  grid of rooms (each move is a unit step), walks back when off it, and takes the
  object the goal names once it is in view.

The state is rebuilt from the trace at every call, so the experts keep playing after
any deviation, and they are deterministic functions of (goal, trace, valid actions).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

DIRECTIONS = ("north", "east", "south", "west")
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
STEP = {"north": (0, 1), "south": (0, -1), "east": (1, 0), "west": (-1, 0)}
#: how each recipe direction is carried out: verb -> (participle, command, tool)
PROCESS = {
    "fry": ("fried", "cook", "stove"),
    "roast": ("roasted", "cook", "oven"),
    "grill": ("grilled", "cook", "BBQ"),
    "slice": ("sliced", "slice", "knife"),
    "dice": ("diced", "dice", "knife"),
    "chop": ("chopped", "chop", "knife"),
}

_ROOM = re.compile(r"-= (.+?) =-")


def room_of(text: str) -> str | None:
    """The room the text shows the player in (its last ``-= Room =-`` header)."""
    found = _ROOM.findall(text)
    return found[-1].strip().lower() if found else None


@dataclass
class Map:
    """Rooms and the moves between them, as the trace has shown them."""

    room: str | None = None
    edges: dict[str, dict[str, str]] = field(default_factory=dict)  # room -> dir -> room
    tried: dict[str, set[str]] = field(default_factory=dict)  # moves taken from a room
    visited: list[str] = field(default_factory=list)
    exits: dict[str, set[str]] = field(default_factory=dict)  # directions a room mentions
    desc: dict[str, str] = field(default_factory=dict)  # a room's last description
    shown: dict[str, str] = field(default_factory=dict)  # what looking/opening showed there

    def see(self, room: str | None, text: str = "") -> None:
        """The player is in ``room`` now (``text``: the feedback that showed it)."""
        if room:
            self.room = room
            if room not in self.visited:
                self.visited.append(room)
            head = text.lower().split(f"-= {room} =-", 1)
            if len(head) == 2 and head[1].strip() and not head[1].lstrip()[:1].isdigit():
                body = head[1].split("-= ", 1)[0]  # the description, not the status line
                self.exits[room] = set(re.findall(r"\b(north|south|east|west)\b", body))
                self.desc[room] = body

    def untried(self, room: str) -> bool:
        """Whether a known room mentions an exit that was not taken yet."""
        return bool(self.untried_exits(room))

    def untried_exits(self, room: str) -> list[str]:
        """The exits a known room mentions that were not taken yet, north first."""
        done = self.tried.get(room, set()) | set(self.edges.get(room, {}))
        return [d for d in DIRECTIONS if d in self.exits.get(room, set()) - done]

    def move(self, src: str | None, direction: str, dst: str | None) -> None:
        """A ``go`` from ``src`` arrived in ``dst`` (or did not move)."""
        if src is None:
            return
        self.tried.setdefault(src, set()).add(direction)
        if dst and dst != src:
            self.edges.setdefault(src, {})[direction] = dst
            self.edges.setdefault(dst, {}).setdefault(OPPOSITE[direction], src)
            self.tried.setdefault(dst, set())

    def route(self, goal: str) -> str | None:
        """The first move of a shortest known route from the current room to ``goal``."""
        return self._bfs(lambda r: r == goal)

    def _bfs(self, want: object) -> str | None:
        if self.room is None:
            return None
        seen = {self.room}
        queue: deque[tuple[str, str | None]] = deque([(self.room, None)])
        while queue:
            room, first = queue.popleft()
            if first is not None and want(room):  # type: ignore[operator]
                return first
            for d in DIRECTIONS:
                nxt = self.edges.get(room, {}).get(d)
                if nxt and nxt not in seen:
                    seen.add(nxt)
                    queue.append((nxt, first or f"go {d}"))
        return None

    def explore(self, valid: Sequence[str]) -> str | None:
        """Next exploring action.

        An untried exit here, else a closed door here, else the first move of a route
        to the nearest known room with an untried exit.
        """
        here = self.room or ""
        done = self.tried.get(here, set()) | set(self.edges.get(here, {}))
        for d in DIRECTIONS:
            if f"go {d}" in valid and d not in done:
                return f"go {d}"
        doors = sorted(a for a in valid if a.startswith("open ") and a.endswith("door"))
        if doors:
            return doors[0]
        return self._bfs(self.untried)


def _replay_map(first_text: str, trace: Sequence[tuple[str, str]]) -> Map:
    m = Map()
    m.see(room_of(first_text), first_text)
    if m.room:
        m.shown[m.room] = " ".join(first_text.lower().split())
    for action, text in trace:
        before = m.room
        now = room_of(text) or before
        if action.startswith("go ") and action[3:] in STEP:
            m.move(before, action[3:], now)
        m.see(now, text)
        if now and action.split(" ", 1)[0] in ("go", "look", "open"):
            m.shown[now] = m.shown.get(now, "") + " " + " ".join(text.lower().split())
    return m


# ----------------------------------------------------------------------------- cooking
@dataclass(frozen=True, kw_only=True)
class Recipe:
    """What the cookbook says: ingredients, and the directions before ``prepare meal``."""

    ingredients: tuple[str, ...]
    directions: tuple[tuple[str, str], ...]  # (verb, ingredient)


def parse_recipe(text: str) -> Recipe | None:
    """The recipe in the cookbook's text, or None if the text is not the cookbook."""
    m = re.search(r"Ingredients:\s*(.*?)\s*Directions:\s*(.*)", text, re.S)
    if not m:
        return None
    ingredients = tuple(x.strip().lower() for x in m.group(1).splitlines() if x.strip())
    steps = []
    for line in m.group(2).splitlines():
        words = line.strip().lower().split(" ", 1)
        if len(words) == 2 and words[0] in PROCESS:
            steps.append((words[0], words[1].removeprefix("the ").strip()))
    return Recipe(ingredients=ingredients, directions=tuple(steps))


_GAINED = re.compile(r"you (?:take|pick up) the ([\w\- ]+?) from ")
_LOST = re.compile(
    r"you (?:drop the ([\w\- ]+?) on the|eat the ([\w\- ]+?)\.|put the ([\w\- ]+?) on the "
    r"|insert the ([\w\- ]+?) into the)"
)


def _carried(trace: Sequence[tuple[str, str]], names: Sequence[str] = ()) -> set[str]:
    """What the player picked up and still carries, by the feedback texts.

    ``names``: items an ``inventory`` listing is checked for.
    """
    held: set[str] = set()
    for _, text in trace:
        low = " ".join(text.lower().split())
        held |= {m.group(1) for m in _GAINED.finditer(low)}
        held -= {g for m in _LOST.finditer(low) for g in m.groups() if g}
        if "adding the meal to your inventory" in low:
            held.add("meal")
        if m := re.search(r"you are carrying:(.*)", low):
            held |= {n for n in names if re.search(rf"\b{re.escape(n)}\b", m.group(1))}
    return held


def _done(verb: str, item: str, trace: Sequence[tuple[str, str]], texts: Sequence[str]) -> bool:
    """Whether ``item`` is already in the state ``verb`` makes it.

    It is when the action was taken and answered, or a text describes the item so.
    """
    participle, command, tool = PROCESS[verb]
    act = f"{command} {item} with {tool}".lower()
    if any(a.lower() == act and _answered(t) for a, t in trace):
        return True
    adjs = r"((?:(?!(?:a|an|and|some|of) )[\w-]+ )*?)"
    phrase = re.compile(r"\b(?:a|an|some) " + adjs + re.escape(item) + r"\b")
    return any(participle in m.group(1).split() for t in texts for m in phrase.finditer(t))


def _pending(recipe: Recipe, first_text: str,
             trace: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The recipe's directions the episode's text does not show done yet, in order."""
    texts = [" ".join(t.lower().split()) for t in (first_text, *(t for _, t in trace))]
    return [(verb, item) for verb, item in recipe.directions
            if not _done(verb, item, trace, texts)]


def _answered(text: str) -> bool:
    low = text.lower()
    return not any(x in low for x in ("can't", "cannot", "nothing happens", "you need"))


def cooking_action(
    goal: str, first_text: str, trace: Sequence[tuple[str, str]], valid: Sequence[str]
) -> str | None:
    """The imitable cooking expert's next action (see the module docstring)."""
    valid = list(valid)
    vset = set(valid)
    world = _replay_map(first_text, trace)
    recipe = next((r for _, t in trace if (r := parse_recipe(t))), None)
    if recipe is None:  # find the kitchen, read the cookbook
        if world.room == "kitchen":
            return "examine cookbook" if "examine cookbook" in vset else None
        return world.explore(valid)
    held = _carried(trace, recipe.ingredients)
    if "meal" in held:
        return "eat meal" if "eat meal" in vset else None
    missing = [i for i in recipe.ingredients if i not in held]
    if len(recipe.ingredients) > 1 and missing and not any(a == "inventory" for a, _ in trace):
        return "inventory"  # some may be carried from the start
    for item in missing:  # take one in view
        take = _take(item, valid)
        if take:
            return take
    for item in missing:  # seen in another room on the way
        where = next((r for r in world.visited if r != world.room
                      and re.search(rf"\b{re.escape(item)}\b", world.shown.get(r, ""))), None)
        if where and (step := world.route(where)):
            return step
    if missing:  # look inside this room's closed containers, the fridge first
        opens = sorted((a for a in valid if a.startswith("open ") and not a.endswith("door")),
                       key=lambda a: (a != "open fridge", a))
        return opens[0] if opens else world.explore(valid)
    if pending := _pending(recipe, first_text, trace):  # the first direction not done yet
        verb, item = pending[0]
        _, command, tool = PROCESS[verb]
        if tool == "knife" and "knife" not in held:
            return _take("knife", valid) or _go_to(world, valid, "kitchen")
        act = f"{command} {item} with {tool}"
        if act in vset:
            return act
        if tool == "BBQ":  # outside: go where one was seen, else explore
            seen = next((r for r, d in world.desc.items() if "bbq" in d), None)
            return _go_to(world, valid, seen) if seen else world.explore(valid)
        return _go_to(world, valid, "kitchen") if world.room != "kitchen" else None
    if world.room != "kitchen":
        return _go_to(world, valid, "kitchen")
    return "prepare meal" if "prepare meal" in vset else None


def cooking_note(first_text: str, trace: Sequence[tuple[str, str]]) -> str:
    """One line on the cooking plan, from the same knowledge as `cooking_action`.

    Before the cookbook is read: that it is not read yet (and, outside the kitchen, the
    exits not taken from this room, in the order the expert tries them); then what is
    still to take and still to do, in the recipe's order; then ``prepare meal`` and ``eat meal``.
    """
    world = _replay_map(first_text, trace)
    recipe = next((r for _, t in trace if (r := parse_recipe(t))), None)
    if recipe is None:
        if world.room == "kitchen":
            return "Cookbook: not read yet (here, in the kitchen)."
        exits = world.untried_exits(world.room or "")
        return ("Cookbook: not read yet; looking for the kitchen. Exits not taken from here: "
                + (", ".join(exits) if exits else "none") + ".")
    held = _carried(trace, recipe.ingredients)
    if "meal" in held:
        return "Cookbook read; the meal is prepared. Next: eat meal."
    missing = [i for i in recipe.ingredients if i not in held]
    if missing:
        checked = len(recipe.ingredients) < 2 or any(a == "inventory" for a, _ in trace)
        what = "still to take" if checked else "check the inventory for"
        return f"Cookbook read; {what}: {', '.join(missing)}."
    todo = []
    for verb, item in _pending(recipe, first_text, trace):
        _, command, tool = PROCESS[verb]
        todo.append(f"{command} {item} with {tool}"
                    + (" (take the knife first)" if tool == "knife" and "knife" not in held
                       else ""))
    if todo:
        return f"Cookbook read; every ingredient taken; still to do: {'; '.join(todo)}."
    return "Cookbook read; everything done. Next: prepare meal, in the kitchen."


def _take(item: str, valid: Sequence[str]) -> str | None:
    return next((a for a in valid if a == f"take {item}" or a.startswith(f"take {item} from ")),
                None)


def _go_to(world: Map, valid: Sequence[str], room: str) -> str | None:
    return world.route(room) or world.explore(valid)


# ----------------------------------------------------------------------------- routes
def instructed_moves(goal: str) -> list[str]:
    """The compass directions a goal text tells the player to take, in order."""
    return re.findall(r"\b(north|south|east|west)\b", goal.lower())


def route_action(
    goal: str, first_text: str, trace: Sequence[tuple[str, str]], valid: Sequence[str]
) -> str | None:
    """Follow the route the goal describes (coin_collector, treasure_hunter)."""
    low_goal = goal.lower()
    for a in valid:  # the object the goal names, once it is in view
        if a.startswith("take ") and re.search(rf"\b{re.escape(a[5:])}\b", low_goal):
            return a
    plan = instructed_moves(goal)
    path = [(0, 0)]
    for d in plan:
        dx, dy = STEP[d]
        path.append((path[-1][0] + dx, path[-1][1] + dy))
    pos, last_room = (0, 0), room_of(first_text)
    stack: list[str] = []  # the moves that led here, walk-backs cancelled
    for action, text in trace:
        room = room_of(text) or last_room
        if action.startswith("go ") and action[3:] in STEP and room != last_room:
            d = action[3:]
            pos = (pos[0] + STEP[d][0], pos[1] + STEP[d][1])
            if stack and stack[-1] == OPPOSITE[d]:
                stack.pop()
            else:
                stack.append(d)
        last_room = room
    if pos in path:
        i = max(k for k, p in enumerate(path) if p == pos)
        if i < len(plan) and f"go {plan[i]}" in valid:
            return f"go {plan[i]}"
    if stack and f"go {OPPOSITE[stack[-1]]}" in valid:
        return f"go {OPPOSITE[stack[-1]]}"  # off the route: walk back
    return None

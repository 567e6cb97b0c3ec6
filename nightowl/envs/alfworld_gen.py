"""Generate ALFWorld games from what the `alfworld` package ships.

The official ALFWorld games (``alfworld-download``) are PDDL problems extracted from
ALFRED trajectories. Without them we build problems of the same shape from the
package's own pieces:

* the scene layouts in ``alfworld/gen/layouts`` (``FloorPlan<N>-openable.json``: the
  receptacles of each AI2-THOR scene with the pose an agent interacts from, and
  ``FloorPlan<N>-objects.json``: the object types present in the scene);
* the object/receptacle constants in ``alfworld.gen.constants`` (which receptacle can
  hold which object; which objects are heatable, coolable, cleanable, toggleable);
* the goal formulas of ``alfworld.gen.goal_library`` for the six ALFWorld task types;
* ``alfred.pddl`` + ``alfred.twl2`` (with the goal text put in by the same
  substitution as ``add_task_to_grammar``).

Each game is a directory ``<root>/<task_type>/<split>/<seed>/`` holding ``game.tw-pddl``
and ``traj_data.json``, the layout `AlfredTWEnv.collect_game_files` reads. Seeds are
deterministic per split; train and dev draw from ALFRED's train scenes, test from its
held-out scenes (ALFWorld's "unseen" split). A candidate game is kept only if the
PDDL planner finds a plan *and* ALFWorld's handcoded expert (its random choices seeded
with the task id) wins it within the episode step limit; otherwise the next candidate
is drawn. The number of candidates drawn is recorded, so the yield is measured.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
from functools import cache
from pathlib import Path
from typing import Any

from nightowl.envs._tw_engine import TEXTWORLD_ENGINE_LOCK, SerialGame

#: ALFWorld's task types, by their short game names in task ids.
TASK_TYPES: dict[str, str] = {
    "pick": "pick_and_place_simple",
    "look": "look_at_obj_in_light",
    "clean": "pick_clean_then_place_in_recep",
    "heat": "pick_heat_then_place_in_recep",
    "cool": "pick_cool_then_place_in_recep",
    "pick2": "pick_two_obj_and_place",
}

#: Receptacles a desk lamp stands on in ALFRED scenes.
LAMP_RECEPTACLES = ("SideTable", "Desk", "Dresser")
#: The appliance each transform task uses; the goal receptacle may not be it.
TOOL_RECEPTACLE = {"clean": "SinkBasin", "heat": "Microwave", "cool": "Fridge"}
#: seconds the planner may search a candidate before it counts as unsolvable
PLANNER_TIMEOUT_S = 30.0
#: Layout names that differ from the receptacle types the PDDL domain uses.
RENAMED_RECEPTACLES = {"Sink": "SinkBasin", "Bathtub": "BathtubBasin"}


def mangle(name: str) -> str:
    """ALFRED id -> the PDDL-safe form ALFWorld uses.

    ``Mug|+01.00`` becomes ``Mug_bar__plus_01_dot_00``.
    """
    return (
        name.replace("|", "_bar_")
        .replace("-", "_minus_")
        .replace("+", "_plus_")
        .replace(".", "_dot_")
        .replace(",", "_comma_")
    )


@cache
def _constants() -> Any:
    import alfworld.gen.constants as constants

    return constants


@cache
def _layout_dir() -> Path:
    import alfworld.gen as gen

    return Path(gen.__file__).parent / "layouts"


@cache
def _scene(scene: int) -> tuple[dict[str, tuple[str, str]], frozenset[str]]:
    """Receptacles ``{alfred id: (type, location)}`` and object types of a FloorPlan."""
    folder = _layout_dir()
    openable = json.loads((folder / f"FloorPlan{scene}-openable.json").read_text())
    objects = frozenset(json.loads((folder / f"FloorPlan{scene}-objects.json").read_text()))
    receptacles: dict[str, tuple[str, str]] = {}
    for rid, (x, z, rot, horizon) in sorted(openable.items()):
        rtype = rid.split("|", 1)[0]
        if rtype in RENAMED_RECEPTACLES:  # ALFRED's basin ids: Sink|x|y|z|SinkBasin
            rtype = RENAMED_RECEPTACLES[rtype]
            rid = f"{rid}|{rtype}"
        if rtype not in _constants().VAL_RECEPTACLE_OBJECTS:
            continue
        loc = f"loc|{round(x / 0.25)}|{round(z / 0.25)}|{int(rot) // 90}|{int(horizon)}"
        receptacles[rid] = (rtype, loc)
    return receptacles, objects


@cache
def _pickupable() -> frozenset[str]:
    c = _constants()
    held = set().union(*c.VAL_RECEPTACLE_OBJECTS.values())
    return frozenset(o for o in c.OBJECTS if o in held and "Sliced" not in o)


def scenes_for(task: str, split: str) -> list[int]:
    """Scenes a task type can be generated in, for a split (train/dev: seen; test: unseen)."""
    c = _constants()
    pool = c.TEST_SCENE_NUMBERS if split == "test" else c.TRAIN_SCENE_NUMBERS
    kinds = c.GOALS_VALID[TASK_TYPES[task]]
    return [
        scene
        for scene in sorted(pool)
        if any(scene in c.SCENE_TYPE[k] for k in kinds)
        and (_layout_dir() / f"FloorPlan{scene}-openable.json").exists()
        and _candidates(task, scene)
    ]


def _action_ok(task: str, otype: str) -> bool:
    acts = _constants().VAL_ACTION_OBJECTS
    need = {"clean": "Cleanable", "heat": "Heatable", "cool": "Coolable"}.get(task)
    return need is None or otype in acts[need]


@cache
def _candidates(task: str, scene: int) -> list[tuple[str, str]]:
    """(object type, goal receptacle type / lamp type) pairs possible in a scene."""
    c = _constants()
    receps, objects = _scene(scene)
    rtypes = {t for t, _ in receps.values()}
    targets = sorted(o for o in objects & _pickupable() if _action_ok(task, o))
    if task == "look":
        if "DeskLamp" not in objects or not rtypes & set(LAMP_RECEPTACLES):
            return []
        return [(o, "DeskLamp") for o in targets if _holders(o, rtypes)]
    tool = TOOL_RECEPTACLE.get(task)
    if tool is not None and tool not in rtypes:
        return []
    out = []
    for o in targets:
        for r in sorted(rtypes):
            if r == tool or o not in c.VAL_RECEPTACLE_OBJECTS[r]:
                continue
            # the object must be able to start somewhere other than the goal receptacle
            if _holders(o, rtypes - {r}):
                out.append((o, r))
    return out


def _holders(otype: str, rtypes: set[str]) -> list[str]:
    vro = _constants().VAL_RECEPTACLE_OBJECTS
    return sorted(r for r in rtypes if otype in vro[r])


def _object_id(otype: str, rid: str, rng: random.Random, taken: set[str]) -> str:
    _, *coords = rid.split("|")
    base = [float(v) for v in coords[:3]] if len(coords) >= 3 else [0.0, 0.0, 0.0]
    while True:
        xyz = [v + rng.uniform(-0.3, 0.3) for v in base]
        oid = f"{otype}|" + "|".join(f"{v:+06.2f}" for v in xyz)
        if oid not in taken:
            taken.add(oid)
            return oid


def build_problem(task: str, split: str, seed: int, attempt: int = 0) -> tuple[str, dict, str]:
    """The PDDL problem, traj_data and goal text of one game (pure; no planner)."""
    c = _constants()
    import alfworld.gen.goal_library as glib

    rng = random.Random(f"alfworld/{task}/{split}/{seed}/{attempt}")
    scene = rng.choice(scenes_for(task, split))
    receps, objects = _scene(scene)
    rtypes = {t for t, _ in receps.values()}
    otype, parent = rng.choice(_candidates(task, scene))
    toggle, parent = (parent, "") if task == "look" else ("", parent)

    placed: dict[str, tuple[str, str]] = {}  # object id -> (type, receptacle id)
    taken: set[str] = set()

    def place(ot: str, avoid: str = "") -> None:
        options = [
            r for r, (t, _) in receps.items() if ot in c.VAL_RECEPTACLE_OBJECTS[t] and t != avoid
        ]
        rid = rng.choice(sorted(options))
        placed[_object_id(ot, rid, rng, taken)] = (ot, rid)

    n_target = rng.randint(2, 3) if task == "pick2" else rng.randint(1, 2)
    for _ in range(n_target):
        place(otype, avoid=parent)
    pool = sorted((objects & _pickupable()) - {otype})
    for ot in rng.sample(pool, k=min(len(pool), rng.randint(4, 9))):
        if _holders(ot, rtypes):
            for _ in range(rng.randint(1, 2)):
                place(ot)
    lamps: dict[str, str] = {}
    if task == "look":
        stands = sorted(r for r, (t, _) in receps.items() if t in LAMP_RECEPTACLES)
        rid = rng.choice(stands)
        lamps[_object_id("DeskLamp", rid, rng, taken)] = rid

    locations = sorted({loc for _, loc in receps.values()})
    start = _start_location(scene, rng, set(locations))
    otypes = sorted({t for t, _ in placed.values()} | ({"DeskLamp"} if lamps else set()))
    rtype_list = sorted(rtypes)

    objs = ["agent1 - agent"]
    objs += [f"{t}Type - otype" for t in otypes] + [f"{t}Type - rtype" for t in rtype_list]
    objs += [f"{mangle(o)} - object" for o in sorted(placed) + sorted(lamps)]
    objs += [f"{mangle(r)} - receptacle" for r in sorted(receps)]
    objs += [f"{mangle(loc)} - location" for loc in sorted(set(locations) | {start})]
    init = [f"(atLocation agent1 {mangle(start)})"]
    for rid, (rt, loc) in sorted(receps.items()):
        init += [
            f"(receptacleType {mangle(rid)} {rt}Type)",
            f"(receptacleAtLocation {mangle(rid)} {mangle(loc)})",
        ]
        if rt in c.OPENABLE_CLASS_SET:
            init.append(f"(openable {mangle(rid)})")
    for rt in rtype_list:
        init += [
            f"(canContain {rt}Type {ot}Type)" for ot in otypes if ot in c.VAL_RECEPTACLE_OBJECTS[rt]
        ]
    acts = c.VAL_ACTION_OBJECTS
    # the placed objects, then the lamps (none of the action or receptacle sets has lamps)
    things = [(oid, ot, rid, "pickupable") for oid, (ot, rid) in sorted(placed.items())]
    things += [(lid, "DeskLamp", rid, "toggleable") for lid, rid in sorted(lamps.items())]
    for oid, ot, rid, able in things:
        m = mangle(oid)
        init += [
            f"(objectType {m} {ot}Type)",
            f"(inReceptacle {m} {mangle(rid)})",
            f"(objectAtLocation {m} {mangle(receps[rid][1])})",
            f"({able} {m})",
        ]
        for key in ("Cleanable", "Heatable", "Coolable", "Sliceable"):
            if ot in acts[key]:
                init.append(f"({key.lower()} {m})")
        if ot in c.MOVABLE_RECEPTACLES_SET:
            init.append(f"(isReceptacleObject {m})")
    goal = glib.gdict[TASK_TYPES[task]]["pddl"].replace("#", "-")
    goal = goal.format(obj=otype, recep=parent, toggle=toggle, mrecep="")
    declared, facts = "\n  ".join(objs), "\n  ".join(init)
    problem = (
        f"(define (problem plan_{task}_{split}_{seed})\n(:domain alfred)\n(:objects\n  "
        f"{declared}\n)\n(:init\n  {facts}\n)\n{goal.strip()}\n"
    )
    template = rng.choice(glib.gdict[TASK_TYPES[task]]["templates"])
    goal_text = template.format(
        obj=otype.lower(), recep=parent.lower(), toggle=toggle.lower(), mrecep=""
    )
    traj = {
        "task_type": TASK_TYPES[task],
        "scene": {"floor_plan": f"FloorPlan{scene}", "scene_num": scene},
        "pddl_params": {
            "object_target": otype,
            "parent_target": parent,
            "mrecep_target": "",
            "toggle_target": toggle,
            "object_sliced": False,
        },
        "nightowl": {
            "generator": "nightowl.envs.alfworld_gen",
            "split": split,
            "seed": seed,
            "attempt": attempt,
        },
    }
    return problem, traj, goal_text


def _start_location(scene: int, rng: random.Random, avoid: set[str]) -> str:
    import numpy as np

    points = np.load(_layout_dir() / f"FloorPlan{scene}-layout.npy")
    for _ in range(50):
        x, z = points[rng.randrange(len(points))]
        loc = f"loc|{round(float(x) / 0.25)}|{round(float(z) / 0.25)}|{rng.randrange(4)}|30"
        if loc not in avoid:
            return loc
    return "loc|0|0|0|30"


def start_game(
    gamefile: str | Path, *, expert: str | None = "handcoded", rng_seed: str = ""
) -> SerialGame:
    """A TextWorld env on an ALFWorld game, wrapped as `AlfredTWEnv.init_env` wraps it.

    The wrappers are ALFWorld's own: `AlfredDemangler` (ids -> "mug 1"), `AlfredInfos`
    and `AlfredExpert` (``extra.expert_plan`` from the handcoded expert or the planner).
    ``expert=None`` leaves the expert wrapper out and requests no facts: the state then
    holds only what a player sees (the imitable expert's games).
    The handcoded expert's random choices (which object of a kind to take, a random
    admissible command when it is stuck) are seeded with ``rng_seed``, so that expert
    episodes replay exactly. The engine is not thread-safe (`nightowl.envs._tw_engine`):
    the game is a `SerialGame`, whose calls hold the engine lock and point the expert's
    module-global RNG at this game's own generator, so concurrent games neither break
    each other nor draw from each other's RNG.
    """
    import alfworld.agents.expert.handcoded_expert as handcoded
    import textworld
    from alfworld.agents.environment.alfred_tw_env import (
        AlfredDemangler,
        AlfredExpert,
        AlfredInfos,
    )

    rng = random.Random(rng_seed)

    def own_rng() -> None:
        handcoded.random = rng  # type: ignore[assignment]

    infos = textworld.EnvInfos(
        admissible_commands=True,
        won=True,
        facts=expert is not None,
        extras=["gamefile", "expert_plan"] if expert else ["gamefile"],
    )
    wrappers: list[Any] = [AlfredDemangler(shuffle=False), AlfredInfos]
    if expert:
        wrappers.append(AlfredExpert(expert_type=expert))
    with TEXTWORLD_ENGINE_LOCK:  # loading parses the domain and grammar
        env = textworld.start(str(gamefile), request_infos=infos, wrappers=wrappers)
    return SerialGame(env, enter=own_rng)


def play_expert(
    gamefile: str | Path, *, max_steps: int = 50, rng_seed: str = ""
) -> tuple[bool, list[str]]:
    """Play ALFWorld's handcoded expert on a game: (won within ``max_steps``, actions)."""
    env = start_game(gamefile, rng_seed=rng_seed)
    actions: list[str] = []
    try:
        state = env.reset()
        while not state["won"] and len(actions) < max_steps:
            plan = state["extra.expert_plan"] or []
            if not plan:
                break
            actions.append(plan[0])
            state, _, done = env.step(plan[0])
            if done:
                break
        return bool(state["won"]), actions
    except Exception:  # noqa: BLE001 - the handcoded expert raises on timeout/confusion
        return False, actions
    finally:
        env.close()


def game_dir(root: Path, task: str, split: str, seed: int) -> Path:
    """Where the game for (task, split, seed) lives under ``root``."""
    return root / TASK_TYPES[task] / split / str(seed)


def generate(
    root: Path, task: str, split: str, seed: int, *, max_attempts: int = 12, max_steps: int = 50
) -> Path:
    """Write (or find) the game for (task, split, seed); returns the ``game.tw-pddl`` path.

    A candidate is kept only if the PDDL planner finds a plan *and* ALFWorld's handcoded
    expert wins it within ``max_steps``; otherwise the next attempt number is drawn
    (deterministically), so the same seed always yields the same game. The number of
    attempts used is stored in ``traj_data.json`` (``nightowl.attempt``), which gives
    the raw acceptance rate the bench reports.

    Raises:
        RuntimeError: no candidate passed in ``max_attempts``.
    """
    folder = game_dir(root, task, split, seed)
    gamefile = folder / "game.tw-pddl"
    if gamefile.exists():
        return gamefile
    # One generator at a time in a process: the expert check runs the engine, and the
    # planner's child is forked, so no other thread may be inside the engine then.
    with TEXTWORLD_ENGINE_LOCK:
        if gamefile.exists():  # another thread generated it while this one waited
            return gamefile
        from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH

        domain = Path(ALFRED_PDDL_PATH).read_text()
        grammar_src = Path(ALFRED_TWL2_PATH).read_text()
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe.{os.getpid()}.tw-pddl"
        try:
            for attempt in range(max_attempts):
                problem, traj, goal_text = build_problem(task, split, seed, attempt)
                grammar = grammar_src.replace("UNKNOWN GOAL", goal_text)
                game = {
                    "pddl_domain": domain,
                    "grammar": grammar,
                    "pddl_problem": problem,
                    "solvable": False,
                    "walkthrough": None,
                }
                probe.write_text(json.dumps(game))
                # the handcoded expert reads traj_data.json next to the game file
                (folder / "traj_data.json").write_text(json.dumps(traj, indent=1))
                plan = _plan(probe)
                if not plan:
                    continue
                # the expert's choices are seeded with the task id, as `AlfWorldEnv` seeds them
                won, actions = play_expert(
                    probe, max_steps=max_steps, rng_seed=f"alfworld/{task}/{split}/{seed}"
                )
                if not won:
                    continue
                game["solvable"], game["walkthrough"] = True, plan
                traj["nightowl"].update(planner_steps=len(plan), handcoded_steps=len(actions))
                (folder / "traj_data.json").write_text(json.dumps(traj, indent=1))
                probe.write_text(json.dumps(game))
                probe.replace(gamefile)  # atomic: concurrent generators never see half a file
                return gamefile
        finally:
            probe.unlink(missing_ok=True)
        raise RuntimeError(
            f"no solvable alfworld game for {task}/{split}/{seed} in {max_attempts} attempts"
        )


def _plan(gamefile: Path, timeout: float = PLANNER_TIMEOUT_S) -> list[str] | None:
    """The planner's walkthrough for a candidate game, or None (unsolvable or too slow).

    Fast Downward runs in-process (ctypes) and can search for minutes on a crowded
    candidate, so it runs in a forked child that is killed after ``timeout`` seconds.
    """
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_plan_child, args=(str(gamefile), sender), daemon=True)
    proc.start()
    sender.close()
    plan = None
    try:
        if receiver.poll(timeout):
            plan = receiver.recv()
    except (EOFError, OSError):
        plan = None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        receiver.close()
    return plan or None


def _plan_child(gamefile: str, sender: Any) -> None:
    import textworld
    from textworld.envs import PddlEnv

    env = PddlEnv(textworld.EnvInfos(policy_commands=True))
    try:
        env.load(gamefile)
        sender.send(list(env.reset()["policy_commands"] or []))
    except Exception:  # noqa: BLE001 - the planner rejects a bad candidate by raising
        sender.send(None)
    finally:
        env.close()

"""ICD step-accuracy matrix: does the embedded student pick the expert's action?

For each environment family (the 8 TextWorld-Express games, the 4 TextWorld challenges,
a few short ScienceWorld tasks; ALFWorld and AppWorld when their extras are installed):

1. the oracle plays ``--train`` train tasks; its won episodes become demos in a
   throw-away demo memory (SQLite + FAISS in a temp dir, MiniLM embeddings), exactly as
   `nightowl demo` stores them (steps with observation, action and valid actions);
2. the oracle plays ``--dev`` dev tasks; at each state on its path the demos are
   retrieved as the agent loop retrieves them (goal, observation, last 3 steps,
   ``k_episodes``/``window``, own task excluded), the student's prompt is built per
   prompt variant with `PromptBuilder.build` (what `StudentTier.prompt` calls) and every
   valid action is scored once with the real student (SmolLM2-135M in-process, float32),
   ``score_continuations(prompt, [" action\\n", ...])`` as the tier's scoring path does;
   the content-free prompt is scored too (calibrated scoring);
3. per family and variant: top-1 agreement with the expert without and with demos, per
   scoring method (sum, mean, calibrated, calibrated-mean), the margin (top-1 minus
   top-2 score) on right vs wrong states, and how often the nearest demo step's action
   agrees with the expert / the student.

Walks (oracle trajectories) and scored states are cached under ``--cache`` so a rerun
with other variants or analyses costs only the new model calls. ``--quick`` (default)
fits a few minutes on a loaded 2-core machine; ``--full`` uses more tasks and variants.

``--expert NAME`` passes ``expert=NAME`` to every environment (train walks, hence the
demos, and dev walks): ``imitable`` scores agreement with the experts that act on the
text only (nightowl/envs/imitable_*.py); families whose environment has no such option
are skipped. Cache keys include the expert.

Usage:
    python bench/icd_matrix.py                       # quick, all installed families
    python bench/icd_matrix.py --only twx/coin,tw/cooking --variants listed,plain
    python bench/icd_matrix.py --full --sweep        # + retrieval window sweep
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nightowl.distill.moves import is_move, without_walk_back  # noqa: E402
from nightowl.distill.parser import normalize_action  # noqa: E402
from nightowl.distill.prompt import PromptBuilder  # noqa: E402
from nightowl.distill.scoring import action_continuations, rank_scores  # noqa: E402
from nightowl.distill.signals import demo_hint  # noqa: E402

console = Console(width=170)

SCIWORLD_SHORT = ("lifespan-longest-lived", "identify-life-stages-1", "find-living-thing",
                  "find-plant", "lifespan-shortest-lived")

#: prompt variants: name -> PromptBuilder options
VARIANTS: dict[str, dict[str, Any]] = {
    # the prompt before issue 13: the current step lists valid actions, demos do not
    "listed": {"valid_actions_in": "current"},
    # current step in the demos' format; validity enforced by scoring only
    "plain": {"valid_actions_in": "none"},
    # plain, and every observation (demo, history, current) cut to the same length
    "same": {"valid_actions_in": "none", "demo_obs_chars": 240, "history_obs_chars": 240,
             "obs_chars": 240},
    # valid actions listed the same way in demo steps and the current step
    "both": {"valid_actions_in": "both"},
    # plain with 4 history steps in the current block (default 2)
    "hist4": {"valid_actions_in": "none", "history": 4},
    # plain with up to 4 demo windows (default 2)
    "demos4": {"valid_actions_in": "none", "max_demos": 4},
    # hist4, and the 12 actions before those 4 steps listed in one line
    "log12": {"valid_actions_in": "none", "history": 4, "earlier_actions": 12},
    # demos shown with the current goal's values (other object, other receptacle)
    "adapt": {"valid_actions_in": "none", "adapt_values": True},
}
SCORINGS = ("sum", "mean", "calibrated", "calibrated-mean")
#: margin thresholds whose acceptance coverage/precision is reported
MARGINS = (0.5, 1.0, 2.0, 4.0)
#: bonus added to the score of the nearest demo step's action (a kNN prior on the ranking)
HINT_BONUS = (0.5, 1.0, 2.0, 4.0)
#: retrieval settings (k_episodes, window) tried by --sweep
SWEEP = ((1, 1), (1, 3), (2, 1), (2, 3), (3, 2))


def machine() -> dict[str, Any]:
    """CPU model and load, written next to every number."""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in subprocess.run(
                ["lscpu"], capture_output=True, text=True
            ).stdout.splitlines()
            if line.startswith("Model name")
        )
    except (StopIteration, OSError):
        cpu = platform.processor() or "?"
    return {"cpu": cpu, "cores": os.cpu_count(), "loadavg": list(os.getloadavg()),
            "threads": os.environ.get("NIGHTOWL_THREADS", "1")}


# ----------------------------------------------------------------------------- families
def families(only: list[str] | None, quick: bool) -> list[tuple[str, str, str | None]]:
    """(env, game, reason-skipped-or-None) for every family."""
    from nightowl.envs.registry import env_class, is_installed, make_env

    out: list[tuple[str, str, str | None]] = []
    for env in ("twx", "tw", "sciworld", "alfworld", "appworld"):
        if not is_installed(env):
            out.append((env, "*", "extra not installed"))
            continue
        if env == "appworld":  # its actions are Python code: nothing to rank
            if not only or "appworld" in only or any(o.startswith("appworld/") for o in only):
                out.append((env, "*", "actions are free-form Python code, with no valid-action "
                                      "list to rank: step accuracy does not apply"))
            continue
        if env == "sciworld":
            games: tuple[str, ...] = SCIWORLD_SHORT[:3] if quick else SCIWORLD_SHORT
        else:  # ALFWorld lists its games per instance (official ones when installed)
            games = tuple(env_class(env).games)
            if not games:
                inst = make_env(env)
                games, _ = tuple(inst.games), inst.close()
        for g in games:
            if only and f"{env}/{g}" not in only and env not in only:
                continue
            out.append((env, g, None))
    if only:  # the order asked for (cheap families first when time is short)
        order = list(only)

        def pos(f: tuple[str, str, str | None]) -> int:
            name = f"{f[0]}/{f[1]}"
            return order.index(name) if name in order else (
                order.index(f[0]) if f[0] in order else len(order))

        out.sort(key=pos)
    return out


def takes_expert(env_name: str) -> bool:
    """Whether the environment's constructor has an ``expert=`` option."""
    import inspect

    from nightowl.envs.registry import env_class

    return "expert" in inspect.signature(env_class(env_name).__init__).parameters


def expert_options(expert: str) -> dict[str, Any]:
    """``--expert`` as constructor options: ``"imitable,notes=search"`` ->
    ``{"expert": "imitable", "notes": "search"}`` (``""``: none)."""
    from nightowl.envs.registry import split_env_spec

    return split_env_spec(f"env:expert={expert}")[1] if expert else {}


def spread(n_total: int, n: int) -> list[int]:
    """``n`` state indices spread evenly over an episode of ``n_total`` (all if fewer)."""
    if n_total <= n:
        return list(range(n_total))
    return sorted({int(round(x)) for x in np.linspace(0, n_total - 1, n)})


# ----------------------------------------------------------------------------- oracle walks
def walk(env: Any, task_id: str, max_steps: int) -> dict[str, Any]:
    """The oracle's trajectory on one task: goal, states (obs, valid, expert action), won."""
    obs = env.reset(task_id)
    goal, text, valid = obs.goal, obs.text, obs.valid_actions
    steps: list[dict[str, Any]] = []
    won = False
    for i in range(max_steps):
        act = env.expert_action()
        if not act:
            break
        steps.append({"idx": i, "observation": text, "action": act,
                      "valid_actions": list(valid) if valid else None})
        res = env.step(act)
        text, valid = res.text, res.valid_actions
        if res.done:
            won = bool(res.won)
            break
    return {"task_id": task_id, "goal": goal, "steps": steps, "won": won}


def cached_walks(env_name: str, game: str, split: str, n: int, max_steps: int,
                 cache: Path, expert: str = "") -> list[dict[str, Any]]:
    """Oracle walks of the first ``n`` tasks of a split (cached as JSON).

    ``expert``: passed as ``expert=`` to the environment ("" = its default expert).
    """
    from nightowl.envs.registry import make_env, select_tasks

    tag = f"-{expert}" if expert else ""
    path = cache / f"walks-{env_name}-{game}-{split}-{n}-{max_steps}{tag}.json"
    if path.exists():
        return json.loads(path.read_text())
    ids = select_tasks(env_name, split, n, game=game)
    env = make_env(env_name, **expert_options(expert))
    try:
        walks = [walk(env, t, max_steps) for t in ids]
    finally:
        env.close()
    path.write_text(json.dumps(walks))
    return walks


def demo_memory(walks: list[dict[str, Any]], env_name: str, embedder: Any) -> Any:
    """A throw-away demo memory holding the won walks (as `add_demos` stores them)."""
    from nightowl.ledger import Ledger
    from nightowl.memory.store import DemoMemory, MemorySettings
    from nightowl.storage import open_db

    d = Path(tempfile.mkdtemp(prefix="icd-matrix-"))
    db = open_db(url=f"sqlite:///{d}/m.db")
    ledger = Ledger(db)
    run = ledger.start_run("icd-matrix-demos", "collect", {})
    mem = DemoMemory(db, embedder, d / "idx", settings=MemorySettings(refresh_interval_s=None))
    for w in walks:
        if not w["won"] or not w["steps"]:
            continue
        eid = ledger.start_episode(run, w["task_id"], env_name, "train")
        mem.add_episode(eid, w["goal"], w["steps"], env=env_name, task_id=w["task_id"])
    mem.flush()
    return mem


# ----------------------------------------------------------------------------- scoring
async def warm_prefix(model: Any, prompt: str) -> None:
    """Prefill the prompt up to its current step's ``Goal:`` once.

    The backend's prefix cache then serves the real prompt and the content-free prompt
    (which share instructions + demos) without prefilling the demos twice. Bench-only
    speed-up: it does not change any score.
    """
    cut = prompt.rfind("\n\nGoal:")
    if cut > 0:
        await model.score_continuations(prompt[: cut + len("\n\nGoal:")], [" x"])


async def score_family(
    model: Any, mem: Any, dev: list[dict[str, Any]], variants: list[str],
    retrievals: list[tuple[int, int]], max_states: int, cache: Path, key: str,
) -> list[dict[str, Any]]:
    """Score every dev state under every (retrieval, variant, demos on/off)."""
    path = cache / f"states-{key}.json"
    done: dict[str, dict[str, Any]] = {}
    if path.exists():
        for r in json.loads(path.read_text()):
            done[r["id"]] = r
    out: list[dict[str, Any]] = []
    for w in dev:
        hist: list[tuple[str, str]] = []
        keep = set(spread(len(w["steps"]), max_states))
        for st in w["steps"]:
            valid = st["valid_actions"]
            obs = st["observation"]
            if valid and st["idx"] in keep:
                acts = list(valid)
                expert = normalize_action(st["action"])
                norm = [normalize_action(a) for a in acts]
                conts = action_continuations(acts)
                for k_ep, win in retrievals:
                    demos = mem.retrieve(w["goal"], obs, hist[-3:], k_episodes=k_ep, k_steps=2,
                                         window=win, exclude_task_ids=(w["task_id"],))
                    hint = demo_hint(demos, obs, acts)
                    for var in variants:
                        b = PromptBuilder(**VARIANTS[var])
                        for with_demos in (False, True):
                            if not with_demos and (k_ep, win) != retrievals[0]:
                                continue  # the no-demo prompt does not depend on retrieval
                            ds = demos if with_demos else ()
                            prompt = b.build(goal=w["goal"], observation=obs, history=hist,
                                             valid_actions=acts, demos=ds)
                            rid = hashlib.sha1(
                                (prompt + "\x00" + "\x01".join(acts)).encode()).hexdigest()[:16]
                            rec = done.get(rid)
                            if rec is None:
                                await warm_prefix(model, prompt)
                                sc = await model.score_continuations(prompt, conts)
                                # content-free scores only where calibration is in question
                                cf = (await model.score_continuations(b.content_free(ds), conts)
                                      ).logprobs if with_demos else sc.logprobs
                                rec = {"id": rid, "raw": list(sc.logprobs),
                                       "tokens": list(sc.token_counts), "cf": list(cf),
                                       "prompt_tokens": model.count_tokens(prompt)}
                                done[rid] = rec
                            out.append({
                                "id": rid, "task_id": w["task_id"], "step": st["idx"],
                                "variant": var, "demos": with_demos, "k_episodes": k_ep,
                                "window": win, "actions": acts,
                                "expert_i": norm.index(expert) if expert in norm else -1,
                                "hint": hint.action if hint else None,
                                "n_demos": len(ds),
                                "previous": hist[-1][1] if hist else None,
                            })
            hist.append((obs, st["action"]))
        path.write_text(json.dumps(list(done.values())))
    for o in out:
        o.update({k: done[o["id"]][k] for k in ("raw", "tokens", "cf", "prompt_tokens")})
    return out


# ----------------------------------------------------------------------------- analysis
def move_choice(s: dict[str, Any]) -> bool:
    """A navigation choice: the expert moves and two or more moves are valid.

    Where the expert is an oracle that knows the map (TextWorld walkthroughs, TWX gold
    paths), such a state's right answer is often not in the prompt at all (which exit
    leads to the coin or the kitchen); a student without the map can at best guess.
    """
    ex = s["expert_i"]
    return (ex >= 0 and is_move(s["actions"][ex])
            and sum(is_move(a) for a in s["actions"]) >= 2)


def _split_top1(states: list[dict[str, Any]], right: list[bool]) -> dict[str, Any]:
    """Top-1 on navigation choices vs every other state, and chance on the former.

    ``right[i]``: whether the student's top-1 on ``states[i]`` is the expert's.
    """
    nav = [move_choice(s) for s in states]
    out: dict[str, Any] = {}
    for name, want in (("move_choice", True), ("other", False)):
        sel = [ok for ok, n in zip(right, nav, strict=True) if n == want]
        out[name] = {"states": len(sel), "top1": sum(sel) / len(sel) if sel else None}
    mc = [s for s, n in zip(states, nav, strict=True) if n]
    out["move_choice"]["chance"] = (
        float(np.mean([1 / sum(is_move(a) for a in s["actions"]) for s in mc])) if mc else None)
    return out


def walk_back_top1(states: list[dict[str, Any]], method: str) -> dict[str, Any]:
    """Top-1 when the move back through the exit just used is left out of the ranking.

    The student tier's default (`nightowl.distill.moves.without_walk_back`): that move
    is dropped while another compass move is valid. Also counts the states where the
    rule applies, where the student's own top-1 walked back, and where the expert did.
    """
    oks: list[bool] = []
    applies = student_back = expert_back = 0
    for s in states:
        v = np.array(rank_scores(s["raw"], s["tokens"], method, s["cf"]))
        keep = set(without_walk_back(s["actions"], s.get("previous")))
        dropped = [i for i, a in enumerate(s["actions"]) if a not in keep]
        if dropped:
            applies += 1
            student_back += int(int(np.argmax(v)) in dropped)
            expert_back += int(s["expert_i"] in dropped)
            v[dropped] = -np.inf
        oks.append(int(np.argmax(v)) == s["expert_i"])
    n = len(states)
    return {"top1": sum(oks) / n if n else 0.0, "by_state_kind": _split_top1(states, oks),
            "states_applied": applies, "student_top1_walked_back": student_back,
            "expert_walked_back": expert_back}


def metrics(states: list[dict[str, Any]], method: str) -> dict[str, Any]:
    """Top-1 agreement and margins (right vs wrong) for one scoring method."""
    right, margins_r, margins_w, hint_ok, hint_agree, hint_n = 0, [], [], 0, 0, 0
    agree_right = 0
    accepts: dict[str, list[int]] = {}  # signal -> [accepted, accepted and right]
    oks: list[bool] = []  # per state: top-1 is the expert's
    for s in states:
        v = np.array(rank_scores(s["raw"], s["tokens"], method, s["cf"]))
        order = np.argsort(-v)
        top = int(order[0])
        m = float(v[order[0]] - v[order[1]]) if len(v) > 1 else 99.0
        ok = top == s["expert_i"]
        oks.append(ok)
        right += ok
        (margins_r if ok else margins_w).append(m)
        agree = False
        if s["hint"] is not None:
            hint_n += 1
            hn = normalize_action(s["hint"])
            ex = s["expert_i"]
            hint_ok += int(ex >= 0 and hn == normalize_action(s["actions"][ex]))
            agree = hn == normalize_action(s["actions"][top])
            hint_agree += int(agree)
            agree_right += int(agree and ok)
        # coverage and precision of one-pass acceptance signals on these states
        for name, acc in (("demo-agree", agree),
                          *((f"margin>={t:g}", m >= t) for t in MARGINS),
                          *((f"demo and margin>={t:g}", agree and m >= t) for t in MARGINS),
                          *((f"demo or margin>={t:g}", agree or m >= t) for t in MARGINS)):
            a = accepts.setdefault(name, [0, 0])
            a[0] += int(acc)
            a[1] += int(acc and ok)

    def q(xs: list[float]) -> list[float] | None:
        return [round(float(x), 2) for x in np.percentile(xs, [10, 50, 90])] if xs else None

    n = len(states)
    back = walk_back_top1(states, method)
    # top-1 when the nearest demo step's action gets a bonus (demo prior on the ranking)
    hinted: dict[str, float] = {}
    for b in HINT_BONUS:
        ok_n = 0
        for s in states:
            v = np.array(rank_scores(s["raw"], s["tokens"], method, s["cf"]))
            if s["hint"] is not None:
                hn = normalize_action(s["hint"])
                for i, a in enumerate(s["actions"]):
                    if normalize_action(a) == hn:
                        v[i] += b
            ok_n += int(int(np.argmax(v)) == s["expert_i"])
        hinted[f"{b:g}"] = ok_n / n if n else 0.0
    return {"states": n, "top1": right / n if n else 0.0, "top1_hint_bonus": hinted,
            "by_state_kind": _split_top1(states, oks), "walk_back": back,
            "margin_right_p10_50_90": q(margins_r), "margin_wrong_p10_50_90": q(margins_w),
            "demo_hint_states": hint_n, "demo_hint_is_expert": hint_ok / hint_n if hint_n else None,
            "demo_hint_is_student_top1": hint_agree / hint_n if hint_n else None,
            "signals": {k: {"coverage": a / n if n else 0.0,
                            "precision": (r / a) if a else None}
                        for k, (a, r) in accepts.items()}}


def analyse(states: list[dict[str, Any]], retrieval: tuple[int, int]) -> dict[str, Any]:
    """Per (variant, demos) x scoring method metrics at one retrieval setting."""
    res: dict[str, Any] = {}
    for s_var in sorted({s["variant"] for s in states}):
        for with_demos in (False, True):
            sel = [s for s in states if s["variant"] == s_var and s["demos"] == with_demos
                   and (not with_demos or (s["k_episodes"], s["window"]) == retrieval)]
            if sel:
                res[f"{s_var}|{'demos' if with_demos else 'none'}"] = {
                    m: metrics(sel, m) for m in SCORINGS}
    return res


# ----------------------------------------------------------------------------- main
async def run(args: argparse.Namespace) -> dict[str, Any]:
    from nightowl.config import load_settings
    from nightowl.llm.registry import build_backend
    from nightowl.memory.embedder import build_embedder

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    only = list(args.only.split(",")) if args.only else None
    settings = load_settings(home=cache / "home")
    spec = settings.model(settings.student_model)
    models = dict(settings.models)
    models[settings.student_model] = spec.model_copy(
        update={"params": {**spec.params, "dtype": args.dtype}})
    settings = settings.model_copy(update={"models": models})
    model = build_backend(settings.student_model, settings)
    embedder = build_embedder(None)
    variants = args.variants.split(",")
    retrievals = [(args.k_episodes, args.window)] + (
        [r for r in SWEEP if r != (args.k_episodes, args.window)] if args.sweep else [])
    report: dict[str, Any] = {"machine_start": machine(), "options": vars(args),
                              "student": f"{settings.student_model} ({args.dtype})",
                              "expert": args.expert or "default",
                              "families": {}, "skipped": {}}
    for env_name, game, skip in families(only, args.quick):
        fam = f"{env_name}/{game}"
        if skip:
            console.print(f"[yellow]skip {fam}: {skip}[/]")
            report["skipped"][fam] = skip
            continue
        if args.expert and not takes_expert(env_name):
            console.print(f"[yellow]skip {fam}: no expert= option[/]")
            report["skipped"][fam] = f"{env_name} has no expert= option"
            continue
        t0 = time.perf_counter()
        n_dev = args.dev_sciworld if env_name == "sciworld" else args.dev
        try:
            train = cached_walks(env_name, game, "train", args.train, args.max_steps, cache,
                                 args.expert)
            dev = cached_walks(env_name, game, "dev", n_dev, args.max_steps, cache, args.expert)
        except Exception as exc:  # noqa: BLE001 - one broken family must not stop the table
            console.print(f"[red]skip {fam}: {type(exc).__name__}: {str(exc)[:160]}[/]")
            report["skipped"][fam] = f"{type(exc).__name__}: {str(exc)[:160]}"
            continue
        mem = demo_memory(train, env_name, embedder)
        won = sum(w["won"] for w in train)
        max_states = args.max_states_sciworld if env_name == "sciworld" else args.max_states
        key = f"{env_name}-{game}-{args.train}-{n_dev}-{args.max_steps}"
        if args.dtype != "float32":  # scores depend on the dtype; walks do not
            key += f"-{args.dtype}"
        if args.expert:  # other walks, other states
            key += f"-{args.expert}"
        states = await score_family(model, mem, dev, variants, retrievals, max_states, cache, key)
        mem.close()
        fr: dict[str, Any] = {"demos": won, "train_tasks": len(train),
                              "dev_tasks": [w["task_id"] for w in dev],
                              "dev_won_by_oracle": sum(w["won"] for w in dev),
                              "by_retrieval": {}}
        for r in retrievals:
            fr["by_retrieval"][f"k{r[0]}w{r[1]}"] = analyse(states, r)
        fr["default"] = fr["by_retrieval"][f"k{retrievals[0][0]}w{retrievals[0][1]}"]
        fr["wall_s"] = round(time.perf_counter() - t0, 1)
        fr["load_after"] = list(os.getloadavg())
        report["families"][fam] = fr
        n = next(iter(fr["default"].values()))["sum"]["states"] if fr["default"] else 0
        console.print(f"{fam}: {won} demos, {n} dev states, {fr['wall_s']:.0f} s, "
                      + ", ".join(f"{k} {v['sum']['top1']:.0%}" for k, v in fr["default"].items()))
    report["machine_end"] = machine()
    return report


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def print_tables(report: dict[str, Any]) -> None:
    """Top-1 per family: variants x demos (sum scoring), best scoring, margins."""
    fams = report["families"]
    if not fams:
        return
    cols = sorted({k for f in fams.values() for k in f["default"]})
    t = Table(title=f"student top-1 = expert (sum scoring) — {report['student']}, "
                    f"load {report['machine_start']['loadavg'][0]:.1f}, "
                    f"{report['machine_start']['cpu']}")
    t.add_column("family")
    t.add_column("states", justify="right")
    for c in cols:
        t.add_column(c.replace("|", " "), justify="right")
    t.add_column("best (variant, scoring)", justify="right")
    for name, f in fams.items():
        d = f["default"]
        n = next(iter(d.values()))["sum"]["states"] if d else 0
        best = max(((k, m, v[m]["top1"]) for k, v in d.items() if k.endswith("demos")
                    for m in SCORINGS), key=lambda x: x[2], default=None)
        t.add_row(name, str(n), *[f"{d[c]['sum']['top1']:.0%}" if c in d else "-" for c in cols],
                  f"{best[2]:.0%} {best[0].split('|')[0]} {best[1]}" if best else "-")
    console.print(t)
    t2 = Table(title="with demos: top-1 by scoring method / margin p50 right vs wrong (sum) / "
                     "nearest-demo action = expert")
    t2.add_column("family")
    t2.add_column("variant")
    for m in SCORINGS:
        t2.add_column(m, justify="right")
    t2.add_column("margin p50 right", justify="right")
    t2.add_column("margin p50 wrong", justify="right")
    t2.add_column("demo hint = expert", justify="right")
    for name, f in fams.items():
        for k, v in f["default"].items():
            if not k.endswith("demos"):
                continue
            s = v["sum"]
            mr = s["margin_right_p10_50_90"]
            mw = s["margin_wrong_p10_50_90"]
            h = s["demo_hint_is_expert"]
            t2.add_row(name, k.split("|")[0], *[f"{v[m]['top1']:.0%}" for m in SCORINGS],
                       f"{mr[1]:.2f}" if mr else "-", f"{mw[1]:.2f}" if mw else "-",
                       f"{h:.0%}" if h is not None else "-")
    console.print(t2)
    t4 = Table(title="acceptance signals with demos (variant plain, sum scoring): "
                     "coverage = share of states accepted / precision = accepted and right")
    t4.add_column("family")
    shown = ("demo-agree", "margin>=1", "margin>=2", "margin>=4", "demo and margin>=1",
             "demo or margin>=4")
    for c in shown:
        t4.add_column(c, justify="right")
    for name, f in fams.items():
        cell = f["default"].get("plain|demos")
        if not cell:
            continue
        sig = cell["sum"]["signals"]
        t4.add_row(name, *[
            f"{sig[c]['coverage']:.0%} / "
            + (f"{sig[c]['precision']:.0%}" if sig[c]["precision"] is not None else "-")
            for c in shown])
    console.print(t4)
    t5 = Table(title="with demos (variant plain): top-1 when the nearest demo step's action "
                     "gets a score bonus (sum / mean scoring)")
    t5.add_column("family")
    t5.add_column("no bonus", justify="right")
    for b in HINT_BONUS:
        t5.add_column(f"+{b:g}", justify="right")
    for name, f in fams.items():
        cell = f["default"].get("plain|demos")
        if not cell or "top1_hint_bonus" not in cell["sum"]:
            continue
        t5.add_row(name, f"{cell['sum']['top1']:.0%} / {cell['mean']['top1']:.0%}", *[
            f"{cell['sum']['top1_hint_bonus'][f'{b:g}']:.0%} / "
            f"{cell['mean']['top1_hint_bonus'][f'{b:g}']:.0%}" for b in HINT_BONUS])
    console.print(t5)
    t6 = Table(title="with demos (variant plain, mean scoring): top-1 on navigation choices "
                     "(the expert moves, 2+ moves valid) vs all other states")
    t7 = Table(title="with demos (variant plain, mean scoring): top-1 when the move back "
                     "through the exit just used is left out (the student tier's default)")
    for c in ("family", "nav. states", "nav. top-1", "nav. chance", "other states",
              "other top-1"):
        t6.add_column(c, justify="right")
    for c in ("family", "states", "rule applies", "student walked back", "expert walked back",
              "top-1 as scored", "top-1 no walk-back", "nav. top-1 as scored",
              "nav. top-1 no walk-back"):
        t7.add_column(c, justify="right")
    for name, f in fams.items():
        m = (f["default"].get("plain|demos") or {}).get("mean")
        if not m or "by_state_kind" not in m:
            continue
        mv, ot = m["by_state_kind"]["move_choice"], m["by_state_kind"]["other"]
        t6.add_row(name, str(mv["states"]), _pct(mv["top1"]), _pct(mv["chance"]),
                   str(ot["states"]), _pct(ot["top1"]))
        wb = m.get("walk_back")
        if wb:
            t7.add_row(name, str(m["states"]), str(wb["states_applied"]),
                       str(wb["student_top1_walked_back"]), str(wb["expert_walked_back"]),
                       _pct(m["top1"]), _pct(wb["top1"]), _pct(mv["top1"]),
                       _pct(wb["by_state_kind"]["move_choice"]["top1"]))
    console.print(t6)
    console.print(t7)
    if any(len(f["by_retrieval"]) > 1 for f in fams.values()):
        t3 = Table(title="retrieval sweep: top-1 with demos (variant plain if run, sum)")
        t3.add_column("family")
        keys = sorted({k for f in fams.values() for k in f["by_retrieval"]})
        for k in keys:
            t3.add_column(k, justify="right")
        for name, f in fams.items():
            row = []
            for k in keys:
                a = f["by_retrieval"].get(k, {})
                cell = a.get("plain|demos") or next(
                    (v for kk, v in a.items() if kk.endswith("demos")), None)
                row.append(f"{cell['sum']['top1']:.0%}" if cell else "-")
            t3.add_row(name, *row)
        console.print(t3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", dest="quick", action="store_false",
                    help="more tasks, all variants, all ScienceWorld picks")
    ap.set_defaults(quick=True)
    ap.add_argument("--only", default="",
                    help="comma list of families (twx/coin) or envs (twx) to run")
    ap.add_argument("--variants", default=None, help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--train", type=int, default=None, help="train tasks (oracle demos)")
    ap.add_argument("--dev", type=int, default=None, help="dev tasks per family")
    ap.add_argument("--dev-sciworld", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=30)
    ap.add_argument("--max-states", type=int, default=6,
                    help="dev states scored per task (spread over the episode)")
    ap.add_argument("--max-states-sciworld", type=int, default=4)
    ap.add_argument("--k-episodes", type=int, default=2)
    ap.add_argument("--window", type=int, default=3)
    ap.add_argument("--sweep", action="store_true", help="also try other retrieval windows")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--expert", default="",
                    help="expert= for every environment, train (demos) and dev walks "
                         "(e.g. imitable; '' = each environment's default); more "
                         "constructor options may follow: imitable,notes=search")
    ap.add_argument("--merge", nargs="+", type=Path, default=None,
                    help="print and write the union of earlier reports (no model calls)")
    ap.add_argument("--cache", default=str(ROOT / ".nightowl" / "icd_matrix"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "icd_matrix.json")
    args = ap.parse_args()
    if args.variants is None:
        args.variants = "listed,plain" if args.quick else ",".join(VARIANTS)
    if args.train is None:
        args.train = 8 if args.quick else 10
    if args.dev is None:
        args.dev = 2 if args.quick else 3
    bad = [v for v in args.variants.split(",") if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variant(s) {bad}; known: {', '.join(VARIANTS)}")
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        report = {**parts[0], "families": {}, "skipped": {},
                  "merged_from": [str(p) for p in args.merge]}
        for part in parts:
            report["families"].update(part["families"])
            report["skipped"].update(part.get("skipped", {}))
        report["machine_end"] = parts[-1]["machine_end"]
        print_tables(report)
        args.out.write_text(json.dumps(report, indent=1))
        console.print(f"wrote {args.out}")
        return
    t0 = time.perf_counter()
    report = asyncio.run(run(args))
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    print_tables(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report["options"] = {k: (str(v) if isinstance(v, Path) else v)
                         for k, v in report["options"].items()}
    args.out.write_text(json.dumps(report, indent=1))
    console.print(f"wrote {args.out} ({report['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()

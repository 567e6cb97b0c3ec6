r"""`nightowl calibrate`: choose the cascade's acceptance rule on the dev split.

Method (one scoring pass per dev state, then exact/Monte-Carlo simulation):

1. The oracle plays each dev task; at every state on its path the student's prompt is
   built exactly as in the cascade (retrieved demos, bounded history, valid actions) and
   the student scores every valid action once: log p(" action\\n" | prompt). That is the
   distribution the constrained student samples from (``choices=`` renormalises these
   scores with the temperature), so voting rules can be simulated without sampling the
   model again.
2. For each candidate rule -- unanimity / majority / sequential with N samples at each
   temperature, logprob-margin thresholds, agreement with the nearest demo step's action
   (``demo-agree``) alone, and with a margin (``margin+demo:T``: both;
   ``margin|demo:T``: either) -- and each state: the probability of
   accepting, of accepting a wrong action (not the expert's), and the expected number of
   samples drawn (exact for unanimity and margin, Monte Carlo for majority/sequential).
3. Predicted episode success = mean over dev episodes of prod(1 - P(wrong accept)) along
   the path (a wrong accepted action is counted as fatal: conservative); predicted cost
   per episode = student calls + escalations x the oracle teacher's bill, with the real
   token counts and prices.
4. Teacher-only is a candidate too (predicted success 1: the oracle is the reference;
   cost: the teacher's bill at every state). The cheapest candidate whose predicted
   success >= target is recommended. When that is teacher-only, the student cannot pay
   on this family: every student rule either misses the target or costs more, and the
   report says so (`recommend`).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from nightowl.config import Settings
from nightowl.distill.parser import normalize_action
from nightowl.distill.prompt import PromptBuilder
from nightowl.distill.scoring import score_actions
from nightowl.distill.signals import demo_hint

#: rules decided from one scoring pass (deterministic per state)
SCORE_RULES: tuple[str, ...] = ("margin", "demo", "margin+demo", "margin|demo")


class CalibrateOptions(BaseModel):
    """Knobs of `nightowl calibrate`."""

    env: str
    game: str | None = None
    split: str = "dev"
    tasks: int = Field(6, ge=1)
    target: float = Field(0.8, ge=0, le=1)
    temperatures: list[float] = Field(default_factory=lambda: [0.3, 0.5, 0.7])
    ns: list[int] = Field(default_factory=lambda: [1, 2, 3, 5])
    taus: list[float] = Field(default_factory=lambda: [0.6, 1.0])
    margins: list[float] = Field(default_factory=lambda: [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    max_steps: int = 40
    k_episodes: int = 2
    window: int = 2
    mc_draws: int = 4000
    seed: int = 0


class StateRecord(BaseModel):
    """One dev state: the student's scores and the expert's action."""

    task_id: str
    step: int
    actions: list[str]
    logprobs: list[float]
    expert: str
    prompt_tokens: int
    choice_tokens: float
    teacher_cost: float
    #: the nearest retrieved demo step's action mapped to this state's valid actions
    demo_action: str | None = None


async def collect_states(settings: Settings, opts: CalibrateOptions, wb: Any) -> list[StateRecord]:
    """Walk the oracle's path on dev tasks, scoring the valid actions at every state."""
    from nightowl.agent.runner import select_tasks
    from nightowl.envs.registry import make_env

    student = wb.student_backend()
    tprices = settings.model(settings.teacher_price_model).prices
    builder = PromptBuilder()
    ids = select_tasks(opts.env, opts.split, opts.tasks, game=opts.game)
    env = make_env(opts.env)
    memory = wb.memory
    out: list[StateRecord] = []
    try:
        for tid in ids:
            obs = await asyncio.to_thread(env.reset, tid)
            goal, text, valid = obs.goal, obs.text, obs.valid_actions
            hist: list[tuple[str, str]] = []
            for step in range(opts.max_steps):
                expert = await asyncio.to_thread(env.expert_action)
                if not expert:
                    break
                if valid:
                    demos = await asyncio.to_thread(
                        memory.retrieve, goal, text, hist[-2:], k_episodes=opts.k_episodes,
                        k_steps=2, window=opts.window, exclude_task_ids=(tid,),
                    )
                    prompt = builder.build(
                        goal=goal, observation=text, history=hist, valid_actions=valid, demos=demos
                    )
                    # ranked as the student tier ranks them (builder.scoring)
                    scored = await score_actions(
                        student, prompt, list(valid), method=builder.scoring,
                        content_free_prompt=builder.content_free(demos),
                    )
                    hint = demo_hint(demos, text, valid)
                    tprompt = builder.for_teacher().build(
                        goal=goal, observation=text, history=hist, valid_actions=valid
                    )
                    tp = student.count_tokens(tprompt)
                    out.append(
                        StateRecord(
                            task_id=tid,
                            step=step,
                            actions=list(valid),
                            logprobs=list(scored.scores),
                            expert=expert,
                            prompt_tokens=student.count_tokens(prompt),
                            choice_tokens=float(np.mean(scored.token_counts)),
                            teacher_cost=tprices.cost(tp, 0, settings.oracle_output_tokens),
                            demo_action=hint.action if hint else None,
                        )
                    )
                res = await asyncio.to_thread(env.step, expert)
                hist.append((text, expert))
                text, valid = res.text, res.valid_actions
                if res.done:
                    break
    finally:
        env.close()
    return out


def _probs(logps: np.ndarray, temperature: float) -> np.ndarray:
    z = logps / max(temperature, 1e-6)
    z = z - z.max()
    p = np.exp(z)
    return p / p.sum()


def simulate_state(
    rec: StateRecord, rule: str, n: int, tau: float, temperature: float, margin: float,
    rng: np.random.Generator, draws: int,
) -> tuple[float, float, float]:
    """(P(accept), P(accept a wrong action), expected samples) for one state."""
    norm = [normalize_action(a) for a in rec.actions]
    lp = np.array(rec.logprobs, dtype=np.float64)
    exp_i = norm.index(normalize_action(rec.expert)) if normalize_action(rec.expert) in norm else -1
    if rule == "teacher":
        return 0.0, 0.0, 0.0
    if rule in SCORE_RULES:
        order = np.argsort(-lp)
        m = lp[order[0]] - lp[order[1]] if len(lp) > 1 else math.inf
        sure = bool(m >= margin)
        demo = normalize_action(rec.demo_action) if rec.demo_action else None
        agree = demo is not None and demo == norm[int(order[0])]
        ok = {"margin": sure, "demo": agree, "margin+demo": agree and sure,
              "margin|demo": agree or sure}[rule]
        acc = float(ok)
        wrong = acc * float(order[0] != exp_i)
        return acc, wrong, 1.0
    p = _probs(lp, temperature)
    need = math.ceil(tau * n - 1e-9)
    if rule == "unanimity" or (need == n and rule != "sequential"):
        acc = float(np.sum(p**n))
        right = float(p[exp_i] ** n) if exp_i >= 0 else 0.0
        return acc, acc - right, float(n)
    picks = rng.choice(len(p), size=(draws, n), p=p)
    acc_n = wrong_n = 0
    samples = 0.0
    for row in picks:
        counts: dict[int, int] = {}
        decided = False
        for j, a in enumerate(row, start=1):
            counts[a] = counts.get(a, 0) + 1
            top_a, top = max(counts.items(), key=lambda kv: kv[1])
            if rule == "sequential":
                if top >= need:
                    acc_n += 1
                    wrong_n += int(top_a != exp_i)
                    samples += j
                    decided = True
                    break
                if top + (n - j) < need:
                    samples += j
                    decided = True
                    break
        if not decided:
            samples += n
            top_a, top = max(counts.items(), key=lambda kv: kv[1])
            if top >= need:
                acc_n += 1
                wrong_n += int(top_a != exp_i)
    return acc_n / draws, wrong_n / draws, samples / draws


def evaluate_rules(
    states: list[StateRecord], opts: CalibrateOptions, student_prices: Any
) -> list[dict[str, Any]]:
    """Predicted success and cost per episode for every candidate rule."""
    rng = np.random.default_rng(opts.seed)
    cands: list[tuple[str, int, float, float, float]] = []
    for t in opts.temperatures:
        for n in opts.ns:
            cands.append(("unanimity", n, 1.0, t, 0.0))
            for tau in opts.taus:
                if tau < 1.0 and n >= 3:
                    cands.append(("majority", n, tau, t, 0.0))
            if n >= 2:
                for tau in opts.taus:
                    cands.append(("sequential", n, tau, t, 0.0))
    for m in opts.margins:
        cands.append(("margin", 1, 1.0, 0.0, m))
    if any(s.demo_action for s in states):
        cands.append(("demo", 1, 1.0, 0.0, 0.0))
        for m in opts.margins:
            cands.append(("margin+demo", 1, 1.0, 0.0, m))
            cands.append(("margin|demo", 1, 1.0, 0.0, m))
    cands.append(("teacher", 0, 1.0, 0.0, 0.0))
    by_task: dict[str, list[StateRecord]] = {}
    for s in states:
        by_task.setdefault(s.task_id, []).append(s)
    rows = []
    for rule, n, tau, t, m in cands:
        succ, cost, acc_steps, samples, steps = [], [], 0.0, 0.0, 0
        for recs in by_task.values():
            ok = 1.0
            c = 0.0
            for r in recs:
                a, w, drawn = simulate_state(r, rule, n, tau, t, m, rng, opts.mc_draws // 4)
                ok *= 1.0 - w
                calls = 1.0 if rule in ("unanimity", "majority", *SCORE_RULES) else drawn
                if rule == "teacher":
                    stud = 0.0
                elif rule in SCORE_RULES:
                    stud = student_prices.cost(
                        r.prompt_tokens + int(r.choice_tokens * len(r.actions)), 0, 0
                    )
                else:
                    stud = student_prices.cost(
                        int(r.prompt_tokens * calls), 0, int(r.choice_tokens * drawn)
                    )
                c += stud + (1 - a) * r.teacher_cost
                acc_steps += a
                samples += drawn
                steps += 1
            succ.append(ok)
            cost.append(c)
        name, spec = _rule_names(rule, n, tau, t, m)
        rows.append(
            {
                "rule": name,
                "spec": spec,
                "temperature": t,
                "predicted_success": float(np.mean(succ)) if succ else 0.0,
                "predicted_cost_per_episode": float(np.mean(cost)) if cost else 0.0,
                "student_acceptance": acc_steps / steps if steps else 0.0,
                "samples_per_step": samples / steps if steps else 0.0,
            }
        )
    return rows


def _rule_names(rule: str, n: int, tau: float, t: float, m: float) -> tuple[str, str]:
    """(table name, ``--rule`` spec) of a candidate."""
    if rule == "teacher":
        return "teacher only", "teacher"
    if rule == "margin":
        return f"margin>={m:g}", f"margin:{m:g}"
    if rule == "demo":
        return "demo-agree", "demo-agree"
    if rule in ("margin+demo", "margin|demo"):
        word = "and" if rule == "margin+demo" else "or"
        return f"demo {word} margin>={m:g}", f"{rule}:{m:g}"
    tail = f":{tau:g}" if rule != "unanimity" else ""
    return f"{rule}:{n}{tail} @T={t:g}", f"{rule}:{n}{tail}"


def choose(rows: list[dict[str, Any]], target: float) -> tuple[dict[str, Any], bool]:
    """Cheapest rule meeting the target (or the most successful one).

    With the teacher-only row present (`evaluate_rules` adds it) the target is always
    met; `recommend` says whether the choice is a student rule.
    """
    ok = [r for r in rows if r["predicted_success"] >= target]
    if ok:
        return min(ok, key=lambda r: r["predicted_cost_per_episode"]), True
    best = max(rows, key=lambda r: (r["predicted_success"], -r["predicted_cost_per_episode"]))
    return best, False


def recommend(rows: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """The choice with a verdict: does the student pay here, and by how much?

    Returns a dict with ``chosen`` (a row), ``student_pays`` (a student rule meets the
    target and is cheaper than teacher-only), ``teacher_cost_per_episode``,
    ``saving`` (teacher-only cost / chosen cost) and a one-line ``verdict``.
    """
    best, met = choose(rows, target)
    teacher = next((r for r in rows if r["spec"] == "teacher"), None)
    tcost = teacher["predicted_cost_per_episode"] if teacher else math.inf
    pays = met and best["spec"] != "teacher" and best["predicted_cost_per_episode"] < tcost
    cost = best["predicted_cost_per_episode"]
    saving = tcost / cost if cost > 0 and math.isfinite(tcost) else math.inf
    if pays:
        verdict = (f"student pays: {best['rule']} meets {target:.0%} (predicted "
                   f"{best['predicted_success']:.0%}) at {saving:.2f}x lower cost than "
                   "teacher-only")
    else:
        students = [r for r in rows if r["spec"] != "teacher"]
        top = max(students, key=lambda r: r["predicted_success"]) if students else None
        best_s = (f"best student rule {top['rule']} predicts {top['predicted_success']:.0%}"
                  if top else "no student rule")
        verdict = (f"student cannot pay at {target:.0%}: {best_s}; "
                   "recommended: teacher only (--ladder teacher)")
    return {"chosen": best, "target_met": met, "student_pays": pays,
            "teacher_cost_per_episode": tcost, "saving": saving, "verdict": verdict}


async def run_calibration(
    settings: Settings, opts: CalibrateOptions, console: Console | None = None
) -> dict[str, Any]:
    """Collect dev states, simulate every candidate rule, print and return the choice."""
    from nightowl.agent.runner import Workbench

    console = console or Console()
    t0 = time.perf_counter()
    wb = Workbench.open(settings)
    states = await collect_states(settings, opts, wb)
    if not states:
        from nightowl.errors import ConfigError

        raise ConfigError(f"no dev states with valid actions for {opts.env}: cannot calibrate")
    sp = settings.model(settings.student_model).prices
    rows = evaluate_rules(states, opts, sp)
    rec = recommend(rows, opts.target)
    best, met = rec["chosen"], rec["target_met"]
    top1 = float(np.mean([
        normalize_action(s.actions[int(np.argmax(s.logprobs))]) == normalize_action(s.expert)
        for s in states
    ]))
    t = Table(title=f"calibration on {opts.env} {opts.split} ({len(states)} states, "
                    f"student top-1 = expert {top1:.0%})")
    for col in ("rule", "pred. success", "pred. cost/ep", "student accepts", "samples/step"):
        t.add_column(col, justify="right")
    for r in sorted(rows, key=lambda r: r["predicted_cost_per_episode"]):
        mark = " *" if r is best else ""
        t.add_row(
            r["rule"] + mark, f"{r['predicted_success']:.2f}",
            f"${r['predicted_cost_per_episode']:.5f}", f"{r['student_acceptance']:.2f}",
            f"{r['samples_per_step']:.2f}",
        )
    console.print(t)
    console.print(rec["verdict"])
    if rec["student_pays"]:
        console.print(f"use --rule {best['spec']} --temperature {best['temperature']:g}")
    wb.close()
    return {
        "options": opts.model_dump(),
        "states": len(states),
        "student_top1_agreement": top1,
        "candidates": rows,
        "chosen": best,
        "target_met": met,
        "student_pays": rec["student_pays"],
        "verdict": rec["verdict"],
        "wall_s": time.perf_counter() - t0,
    }

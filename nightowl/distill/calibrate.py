r"""Calibration math: simulate acceptance rules on scored dev states, choose the cheapest.

The orchestration (walking dev tasks, scoring states) is `nightowl.app.calibrate`.

Method (one scoring pass per dev state, then exact/Monte-Carlo simulation):

1. The oracle plays each dev task; at every state on its path the student's prompt is
   built exactly as in the cascade (retrieved demos, bounded history, valid actions) and
   the student scores every valid action once: log p(" action\\n" | prompt). That is the
   distribution the constrained student samples from (``choices=`` renormalises these
   scores with the temperature), so voting rules can be simulated without sampling the
   model again.
2. For each candidate rule -- unanimity / majority / sequential with N samples at each
   temperature, and logprob-margin thresholds -- and each state: the probability of
   accepting, of accepting a wrong action (not the expert's), and the expected number of
   samples drawn (exact for unanimity and margin, Monte Carlo for majority/sequential).
3. Predicted episode success = mean over dev episodes of prod(1 - P(wrong accept)) along
   the path (a wrong accepted action is counted as fatal: conservative); predicted cost
   per episode = student calls + escalations x the oracle teacher's bill, with the real
   token counts and prices.
4. The cheapest rule whose predicted success >= target is recommended (if none reaches
   it, the most successful one, and the report says so).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from nightowl.distill.parser import normalize_action


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
    if rule == "margin":
        order = np.argsort(-lp)
        m = lp[order[0]] - lp[order[1]] if len(lp) > 1 else math.inf
        acc = float(m >= margin)
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
                calls = 1.0 if rule in ("unanimity", "majority", "margin") else drawn
                if rule == "margin":
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
        name = (
            f"margin>={m:g}" if rule == "margin"
            else f"{rule}:{n}" + (f":{tau:g}" if rule != "unanimity" else "") + f" @T={t:g}"
        )
        spec = (
            f"margin:{m:g}" if rule == "margin"
            else f"{rule}:{n}" + (f":{tau:g}" if rule != "unanimity" else "")
        )
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


def choose(rows: list[dict[str, Any]], target: float) -> tuple[dict[str, Any], bool]:
    """Cheapest rule meeting the target (or the most successful one)."""
    ok = [r for r in rows if r["predicted_success"] >= target]
    if ok:
        return min(ok, key=lambda r: r["predicted_cost_per_episode"]), True
    best = max(rows, key=lambda r: (r["predicted_success"], -r["predicted_cost_per_episode"]))
    return best, False

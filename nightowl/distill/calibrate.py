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
5. Dev rollouts (``verify`` > 0): the open-loop prediction cannot see that a wrong
   action is often recoverable (walk back, look again) nor that it lengthens the
   episode. So rules on the predicted cost/success `frontier` are played end to end on
   the same dev tasks with the real ladder, next to teacher-only -- the cheapest first
   (with the student exploring instead of repeating an action in the same state; if
   that loses dev episodes, wrong moves are fatal on this family and it is replayed,
   and the rest played, with repeats escalated to the teacher: `repeat_policy`),
   then the open-loop choice, then a bisection between them, then the rules just above
   the cheapest one that kept success (`next_probe`, at most ``verify`` rules) -- and
   the choice is made on those measured successes and costs (`recommend_measured`).
   A student rule is recommended only when it reaches ``target`` x teacher-only's dev
   success *and* saves enough on dev (`required_saving`): at least ``min_saving`` x
   (a smaller saving is within the noise of a few dev episodes), and enough that its
   cost of pass stays at or below teacher-only's even at the lower ``confidence``
   bound of its dev success. Three won dev episodes say little: at 80% confidence the
   rule's success may be as low as 58%, so it must be >= 1.71x cheaper; eight won
   episodes need 1.22x. The recommendation must not cost more than teacher-only where
   the student cannot pay.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from scipy.stats import beta

from nightowl.distill.acceptance import AcceptanceRule
from nightowl.distill.rules import RULES, parse_rule


class CalibrateOptions(BaseModel):
    """Knobs of `nightowl calibrate`."""

    env: str
    game: str | None = None
    split: str = "dev"
    tasks: int = Field(6, ge=1)
    #: evidence floor: more dev tasks are walked (up to ``max_tasks``) until at least this
    #: many states are scored; 3 tasks of a 2-step game are 6 states, too few to see a
    #: 1-in-10 fatal mistake
    min_states: int = Field(20, ge=0)
    max_tasks: int = Field(24, ge=1)
    target: float = Field(0.8, ge=0, le=1)
    temperatures: list[float] = Field(default_factory=lambda: [0.3, 0.5, 0.7])
    ns: list[int] = Field(default_factory=lambda: [1, 2, 3, 5])
    taus: list[float] = Field(default_factory=lambda: [0.6, 1.0])
    margins: list[float] = Field(default_factory=lambda: [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    max_steps: int = 40
    #: demo retrieval; None: the prompt builder's (what runs use)
    k_episodes: int | None = None
    window: int | None = None
    mc_draws: int = 4000
    seed: int = 0
    #: candidates played end to end on the dev tasks (0: choose on the prediction alone)
    verify: int = Field(4, ge=0)
    #: a student rule must be this many times cheaper than teacher-only on dev
    min_saving: float = Field(1.2, ge=1.0)
    #: ... and cheaper by enough to cover the success it may lose: its cost of pass at
    #: this one-sided lower confidence bound of its dev success must not exceed
    #: teacher-only's (`required_saving`; 0: judge the observed success only)
    confidence: float = Field(0.8, ge=0.0, lt=1.0)
    #: step budget of a dev rollout (as the runs being calibrated for); None: the
    #: environment's own default, as `nightowl run` uses
    rollout_max_steps: int | None = Field(None, ge=1)
    #: dev episodes played at once in a rollout
    concurrency: int = Field(2, ge=1)
    #: the dev tasks to walk (None: the split's first ``tasks``..``max_tasks`` of ``game``)
    task_ids: list[str] | None = None
    #: states without valid actions (free text, code): student samples drawn per state,
    #: at the first of ``temperatures``, to estimate which answers it gives (0: skip them)
    free_text_samples: int = Field(8, ge=0, le=64)


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
    #: summed log-probabilities, what constrained sampling draws from (softmax(raw / T));
    #: ``logprobs`` are the ranking scores (`PromptBuilder.scoring`, e.g. per-token mean)
    #: that score rules use. None: sample from ``logprobs`` too.
    sample_logprobs: list[float] | None = None
    #: valid actions the student tier would not consider here (the walk back,
    #: `nightowl.distill.moves.without_walk_back`), so not scored
    left_out: list[str] = []
    #: a state without valid actions (free text or code): ``actions`` are the distinct
    #: answers of ``free_text_samples`` student samples (by `canonical_action`) and
    #: ``sample_logprobs`` are T * log(share) at the sampling temperature T, so voting
    #: rules simulated at T draw answers in the shares the student gave them. Score
    #: rules do not apply (there is nothing to score).
    free_text: bool = False


def simulate_state(
    rec: StateRecord, rule: AcceptanceRule | str | None, temperature: float,
    rng: np.random.Generator, draws: int,
) -> tuple[float, float, float]:
    """(P(accept), P(accept a wrong action), expected samples) for one state.

    ``rule``: a rule, a ``--rule`` spec, or None / "teacher" (teacher-only: 0, 0, 0).
    """
    if rule is None or rule == "teacher":
        return 0.0, 0.0, 0.0
    rule = parse_rule(rule) if isinstance(rule, str) else rule
    return rule.simulate(rec, rng, draws, temperature)


def candidates(
    states: list[StateRecord], opts: CalibrateOptions
) -> list[tuple[AcceptanceRule | None, float]]:
    """(rule, temperature) of every candidate, in `RULES` order; None is teacher-only.

    Sampling rules at every temperature and N of ``opts``, then score rules (not where
    dev states are free text: there is nothing to score).
    """
    out: list[tuple[AcceptanceRule | None, float]] = [
        (r, t) for t in opts.temperatures for n in opts.ns for rule in RULES
        if not rule.uses_scores for r in rule.candidates(opts, states, n)
    ]
    if not any(s.free_text for s in states):  # score rules need valid actions to score
        out += [(r, 0.0) for rule in RULES if rule.uses_scores
                for r in rule.candidates(opts, states, 1)]
    return [*out, (None, 0.0)]


def evaluate_rules(
    states: list[StateRecord], opts: CalibrateOptions, student_prices: Any
) -> list[dict[str, Any]]:
    """Predicted success and cost per episode for every candidate rule."""
    rng = np.random.default_rng(opts.seed)
    by_task: dict[str, list[StateRecord]] = {}
    for s in states:
        by_task.setdefault(s.task_id, []).append(s)
    rows = []
    steps = len(states)  # every state is in one task's episode
    for rule, t in candidates(states, opts):
        succ, cost, acc_steps, samples = [], [], 0.0, 0.0
        for recs in by_task.values():
            ok = 1.0
            c = 0.0
            for r in recs:
                a, w, drawn = simulate_state(r, rule, t, rng, opts.mc_draws // 4)
                ok *= 1.0 - w
                stud = 0.0 if rule is None else rule.student_cost(r, drawn, student_prices)
                c += stud + (1 - a) * r.teacher_cost
                acc_steps += a
                samples += drawn
            succ.append(ok)
            cost.append(c)
        rows.append(
            {
                "rule": "teacher only" if rule is None else rule.label(t),
                "spec": "teacher" if rule is None else rule.spec(),
                "temperature": t,
                "predicted_success": float(np.mean(succ)) if succ else 0.0,
                "predicted_cost_per_episode": float(np.mean(cost)) if cost else 0.0,
                "student_acceptance": acc_steps / steps if steps else 0.0,
                "samples_per_step": samples / steps if steps else 0.0,
            }
        )
    return rows


def recommend(
    rows: list[dict[str, Any]], target: float, min_saving: float = 1.0
) -> dict[str, Any]:
    """The choice with a verdict: does the student pay here, and by how much?

    Returns a dict with ``chosen`` (a row), ``student_pays`` (a student rule meets the
    target and is at least ``min_saving`` x cheaper than teacher-only; otherwise the
    choice is teacher-only), ``teacher_cost_per_episode``, ``saving`` (teacher-only cost
    / chosen cost) and a one-line ``verdict``.

    The choice is the cheapest rule meeting the target, else the most successful one
    (with the teacher-only row present, as `evaluate_rules` adds it, the target is
    always met).
    """
    ok = [r for r in rows if r["predicted_success"] >= target]
    met = bool(ok)
    best = (min(ok, key=lambda r: r["predicted_cost_per_episode"]) if ok else
            max(rows, key=lambda r: (r["predicted_success"], -r["predicted_cost_per_episode"])))
    teacher = next((r for r in rows if r["spec"] == "teacher"), None)
    tcost = teacher["predicted_cost_per_episode"] if teacher else math.inf
    pays = (met and best["spec"] != "teacher"
            and best["predicted_cost_per_episode"] * min_saving <= tcost)
    if not pays and teacher is not None:
        best, met = teacher, True
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


def frontier(rows: list[dict[str, Any]], min_saving: float) -> list[dict[str, Any]]:
    """Student rules worth playing on dev, cheapest first.

    Only rules predicted to cost less than teacher-only / ``min_saving`` can pay; of
    those only the frontier is kept: a rule is on it when every cheaper rule predicts a
    lower success. Along the frontier, cost and predicted success both rise.
    """
    teacher = next((r for r in rows if r["spec"] == "teacher"), None)
    limit = teacher["predicted_cost_per_episode"] / min_saving if teacher else math.inf
    pool: list[dict[str, Any]] = []
    for r in sorted((r for r in rows if r["spec"] != "teacher"
                     and r["predicted_cost_per_episode"] <= limit),
                    key=lambda r: (r["predicted_cost_per_episode"], -r["predicted_success"])):
        if not pool or r["predicted_success"] > pool[-1]["predicted_success"] + 1e-9:
            pool.append(r)
    return pool


def next_probe(pool: list[dict[str, Any]], chosen: dict[str, Any],
               passed: dict[int, bool]) -> int | None:
    """The frontier index to play next on dev, or None when nothing is left worth playing.

    ``passed`` maps the indices played so far to whether the rule kept success (and
    saved enough). Plays the cheapest rule first, then the open-loop ``chosen`` rule (or
    the frontier's end), then bisects between the dearest failing and the cheapest
    passing rule: the cheapest passing rule is found in about 2 + log2(len(pool))
    rollouts when success rises along the frontier. Then it offers the frontier rules
    just above the cheapest passing one: a more careful rule can cost less when
    measured, because the student's wrong moves lengthen episodes (the caller's
    rollout budget decides how many are played). Nothing passes: None.
    """
    if not pool:
        return None
    last = len(pool) - 1
    if 0 not in passed:
        return 0
    ok = sorted(i for i, v in passed.items() if v)
    if not passed[0]:
        hi = next((i for i, r in enumerate(pool) if r is chosen), last)
        if hi not in passed:
            return hi
        if not ok:
            return last if last not in passed else None
        lo = max(i for i, v in passed.items() if not v and i < ok[0])
        mid = (lo + ok[0]) // 2
        if mid != lo and mid not in passed:
            return mid
    return next((j for j in range(ok[0] + 1, len(pool)) if j not in passed), None)


def keeps_success(row: dict[str, Any], teacher: dict[str, Any], target: float) -> bool:
    """Whether a rule played on dev won >= ``target`` x teacher-only's dev success."""
    return bool(row["dev_success"] >= target * teacher["dev_success"] - 1e-9)


def repeat_policy(first: dict[str, Any], teacher: dict[str, Any], target: float) -> str:
    """The student's repeat policy for the rest of calibration, from its first dev rollout.

    The first rule is played with ``repeats="explore"`` (the student tries an action
    it has not taken in that state instead of asking the teacher). If it kept success,
    wrong moves on this family can be undone and exploring stays; if it lost dev
    episodes, a wrong move is fatal here and repeats go to the teacher
    (``"escalate"``) from then on, starting with a replay of that first rule.
    """
    return "explore" if keeps_success(first, teacher, target) else "escalate"


def dev_saving(row: dict[str, Any], teacher: dict[str, Any]) -> float:
    """How many times cheaper than teacher-only a rule was on dev (inf when it cost 0)."""
    cost = row["dev_cost_per_episode"]
    return teacher["dev_cost_per_episode"] / cost if cost else math.inf


def success_lower_bound(successes: int, episodes: int, confidence: float) -> float:
    """One-sided Clopper-Pearson lower bound of a success rate.

    Seen ``successes`` in ``episodes``, the true rate is at least this with probability
    ``confidence`` (0: the observed rate).
    """
    if episodes <= 0 or successes <= 0:
        return 0.0
    if confidence <= 0:
        return successes / episodes
    return float(beta.ppf(1.0 - confidence, successes, episodes - successes + 1))


def required_saving(
    row: dict[str, Any], teacher: dict[str, Any], min_saving: float, confidence: float
) -> float:
    """How many times cheaper than teacher-only a rule played on dev must be to pay.

    At least ``min_saving``; with ``confidence`` > 0 also teacher-only's dev success
    over the rule's lower bound (`success_lower_bound` of its ``dev_successes`` /
    ``dev_episodes``): then its cost of pass (cost per episode / success) is no more
    than teacher-only's even if its success is as low as the bound. Infinite when the
    bound is 0 (no dev episode won).
    """
    if confidence <= 0:
        return min_saving
    low = success_lower_bound(int(row["dev_successes"]), int(row["dev_episodes"]), confidence)
    return max(min_saving, teacher["dev_success"] / low) if low > 0 else math.inf


def keeps_success_and_saves(
    row: dict[str, Any], teacher: dict[str, Any], target: float, min_saving: float,
    confidence: float = 0.0,
) -> bool:
    """Whether a rule played on dev keeps success and saves enough.

    Keeps success: its dev success is >= ``target`` x teacher-only's. Saves enough: its
    dev cost is <= teacher-only's dev cost / `required_saving`.
    """
    need = required_saving(row, teacher, min_saving, confidence)
    return bool(keeps_success(row, teacher, target)
                and row["dev_cost_per_episode"] * need <= teacher["dev_cost_per_episode"])


def _played(row: dict[str, Any]) -> str:
    """A dev row's rule, with its repeat policy when it was played with one."""
    return f"{row['rule']} (repeats: {row['repeats']})" if row.get("repeats") else row["rule"]


def recommend_measured(
    measured: list[dict[str, Any]], teacher: dict[str, Any], target: float, min_saving: float,
    confidence: float = 0.0,
) -> dict[str, Any]:
    """The choice among rules played on dev (``dev_success``, ``dev_cost_per_episode``).

    ``teacher`` is teacher-only's dev row. A student rule qualifies when its dev success
    is >= ``target`` x teacher-only's and its dev cost <= teacher-only's /
    `required_saving` (``min_saving``, raised by ``confidence`` where few dev episodes
    were won); the cheapest qualifying rule is chosen, else teacher-only ("the student
    cannot pay"). Returns the same keys as `recommend`.
    """
    tcost = teacher["dev_cost_per_episode"]
    ok = [m for m in measured
          if keeps_success_and_saves(m, teacher, target, min_saving, confidence)]
    if ok:
        best = min(ok, key=lambda m: m["dev_cost_per_episode"])
        saving = dev_saving(best, teacher)
        verdict = (f"student pays: {_played(best)} won {best['dev_success']:.0%} of dev "
                   f"episodes (teacher-only {teacher['dev_success']:.0%}) at {saving:.2f}x "
                   "lower cost")
        return {"chosen": best, "target_met": True, "student_pays": True,
                "teacher_cost_per_episode": tcost, "saving": saving, "verdict": verdict}

    def why(m: dict[str, Any]) -> str:
        need = required_saving(m, teacher, min_saving, confidence)
        return (f"{_played(m)}: {m['dev_success']:.0%} at {dev_saving(m, teacher):.2f}x "
                f"(needs {need:.2f}x)")

    bar = f">= {min_saving:g}x saving" + (
        f", covering its success at {confidence:.0%} confidence," if confidence > 0 else "")
    tried = "; ".join(why(m) for m in measured) or (
        "no student rule predicted to save enough to try")
    verdict = (f"student cannot pay at {target:.0%} of teacher-only success and {bar} on dev "
               f"({tried}); recommended: teacher only (--ladder teacher)")
    return {"chosen": teacher, "target_met": True, "student_pays": False,
            "teacher_cost_per_episode": tcost, "saving": 1.0, "verdict": verdict}

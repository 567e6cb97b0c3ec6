"""Use case: `nightowl calibrate` -- choose the cascade's acceptance rule on the dev split.

The oracle plays each dev task; at every state on its path the student scores every
valid action once with the prompt the cascade would build; then
`nightowl.distill.calibrate` simulates every candidate rule on those scores and picks
the cheapest one that meets the target (see its docstring for the method). With
``verify`` > 0 a few candidates are then played end to end on the same dev tasks, next
to teacher-only, and the choice is made on those measured episodes.

The student (name and dtype) is resolved once for the dev walk
(`nightowl.app.plan.resolve_student`); each dev rollout is a run with its own plan for
that same student. A rollout's step budget is ``opts.rollout_max_steps`` where the
caller set it, else the environment's default, as the runs being calibrated for get.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from nightowl.agent.budget import EpisodeBudget
from nightowl.agent.presets import preset_for_rule
from nightowl.agent.state import LoopConfig
from nightowl.agent.tiers import RepeatPolicy
from nightowl.app.events import Message, PhaseAdvanced, PhaseStarted, ProgressSink, ignore
from nightowl.app.plan import RunSpec, StudentChoice, resolve_student, student_prompt
from nightowl.app.runs import run_tasks
from nightowl.distill.calibrate import (
    CalibrateOptions,
    StateRecord,
    evaluate_rules,
    frontier,
    keeps_success_and_saves,
    next_probe,
    recommend,
    recommend_measured,
    repeat_policy,
)
from nightowl.distill.moves import without_walk_back
from nightowl.distill.parser import canonical_action, parse_action
from nightowl.distill.prompt import PromptBuilder
from nightowl.distill.scoring import score_actions
from nightowl.distill.signals import demo_hint
from nightowl.envs.registry import make_env, select_tasks
from nightowl.errors import ConfigError
from nightowl.llm.base import GenerationRequest
from nightowl.llm.machine import ScoringMachine, scoring_machine

if TYPE_CHECKING:
    from nightowl.app.root import Nightowl


class CalibrationReport(BaseModel):
    """What `calibrate` found: every candidate rule's prediction and the choice."""

    options: CalibrateOptions
    states: int
    #: the dev tasks walked and played (``tasks``, more where ``min_states`` asked)
    dev_task_ids: list[str] = []
    student_top1_agreement: float
    candidates: list[dict[str, Any]]
    chosen: dict[str, Any]
    target_met: bool
    student_pays: bool
    verdict: str
    wall_s: float
    #: the open-loop choice (on the scored states alone)
    predicted_choice: dict[str, Any] | None = None
    #: teacher-only and the candidates played end to end on dev (empty with verify=0)
    rollouts: list[dict[str, Any]] = []
    #: the student's dtype, CPU, torch and scoring path the dev scores were made with
    machine: ScoringMachine | None = None


async def collect_states(
    app: Nightowl, opts: CalibrateOptions, *, progress: ProgressSink | None = None,
    student: StudentChoice | None = None,
) -> tuple[list[StateRecord], list[str]]:
    """Walk the oracle's path on dev tasks, scoring the valid actions at every state.

    The student's candidates there are the student tier's: without the move back
    through the exit just used while another is open (`without_walk_back`, the tier's
    default ``backtrack="avoid"``).

    Walks ``opts.tasks`` tasks, then more (up to ``opts.max_tasks``) until at least
    ``opts.min_states`` states are scored. Returns (states, the dev task ids walked).
    ``student`` is the student that scores (None: resolved here, the settings' one).
    """
    sink = progress or ignore
    settings = app.settings
    choice = student or resolve_student(settings)
    model = choice.backend(app)
    tprices = settings.model(settings.teacher_price_model).prices
    # the dev tasks it may walk, in order: ``tasks``, then up to ``max_tasks``
    ids = list(opts.task_ids) if opts.task_ids else select_tasks(
        opts.env, opts.split, max(opts.tasks, opts.max_tasks if opts.min_states else opts.tasks),
        game=opts.game)
    env = make_env(opts.env)
    builder = student_prompt(opts.env, k_episodes=opts.k_episodes, window=opts.window)
    loop = LoopConfig()  # the loop's retrieval: its history length and k_steps
    calibrated = builder.scoring.startswith("calibrated")  # needs a content-free prompt too
    memory = app.memory
    out: list[StateRecord] = []
    walked: list[str] = []
    key = "calibrate"
    sink(PhaseStarted(key=key, label=f"score dev states ({opts.env})",
                      total=min(len(ids), opts.tasks)))
    try:
        for tid in ids:
            if len(walked) >= opts.tasks and len(out) >= opts.min_states:
                break
            if len(walked) == opts.tasks:  # the evidence floor: a second bar
                key = "calibrate-more"
                sink(PhaseStarted(key=key, label=f"more dev tasks ({len(out)} states < "
                                  f"--min-states {opts.min_states})",
                                  total=len(ids) - len(walked)))
            walked.append(tid)
            obs = await asyncio.to_thread(env.reset, tid)
            goal, text, valid = obs.goal, obs.text, obs.valid_actions
            hist: list[tuple[str, str]] = []
            for step in range(opts.max_steps):
                expert = await asyncio.to_thread(env.expert_action)
                if not expert:
                    break
                if valid or opts.free_text_samples:
                    shown = valid or None  # the actions the prompts list (None: free text)
                    demos = await asyncio.to_thread(
                        memory.retrieve, goal, text, hist[-loop.history:],
                        k_episodes=builder.k_episodes, k_steps=loop.k_steps,
                        window=builder.window, exclude_task_ids=(tid,),
                    )
                    prompt = builder.build(
                        goal=goal, observation=text, history=hist, valid_actions=shown, demos=demos
                    )
                    tp = model.count_tokens(builder.for_teacher().build(
                        goal=goal, observation=text, history=hist, valid_actions=shown))
                    teacher_cost = tprices.cost(tp, 0, settings.oracle_output_tokens)
                if valid:
                    # the student tier's candidates (its default backtrack="avoid"),
                    # ranked as it ranks them (builder.scoring)
                    cands = without_walk_back(valid, hist[-1][1] if hist else None)
                    scored = await score_actions(
                        model, prompt, list(cands), method=builder.scoring,
                        content_free_prompt=(
                            builder.content_free(demos) if calibrated else None
                        ),
                    )
                    hint = demo_hint(demos, text, cands)
                    out.append(
                        StateRecord(
                            task_id=tid,
                            step=step,
                            actions=list(cands),
                            logprobs=list(scored.scores),
                            expert=expert,
                            prompt_tokens=model.count_tokens(prompt),
                            choice_tokens=float(np.mean(scored.token_counts)),
                            teacher_cost=teacher_cost,
                            demo_action=hint.action if hint else None,
                            sample_logprobs=list(scored.raw),
                            left_out=[a for a in valid if a not in cands],
                        )
                    )
                elif opts.free_text_samples:
                    out.append(await free_text_state(model, builder, prompt, tid, step, expert,
                                                     opts, teacher_cost=teacher_cost))
                res = await asyncio.to_thread(env.step, expert)
                hist.append((text, expert))
                text, valid = res.text, res.valid_actions
                if res.done:
                    break
            sink(PhaseAdvanced(key=key, note=f"{len(out)} states"))
    finally:
        env.close()
    return out, walked


async def free_text_state(
    model: Any, builder: PromptBuilder, prompt: str, task_id: str, step: int, expert: str,
    opts: CalibrateOptions, *, teacher_cost: float,
) -> StateRecord:
    """A dev state without valid actions: which answers the student gives, in what shares.

    Draws ``opts.free_text_samples`` answers as the student tier does (same stop and
    token cap, seeded by task and step) at the first of ``opts.temperatures`` and
    groups them by `canonical_action` (code: by syntax tree).
    """
    temp = opts.temperatures[0]
    req = GenerationRequest(prompt=prompt, n=opts.free_text_samples,
                            max_tokens=builder.sample_max_tokens, temperature=temp,
                            stop=builder.sample_stop, seed=zlib.crc32(f"{task_id}|{step}".encode()))
    res = await model.generate(req)
    answers = [parse_action(text, None).action for text in res.texts]
    shares = Counter(canonical_action(a) for a in answers if a is not None)
    n = float(len(res.texts)) or 1.0
    actions = list(shares) or [""]
    # an answer given by no sample keeps a tiny share (one in a thousand draws)
    lps = [temp * float(np.log(max(shares.get(a, 0.0) / n, 1e-3))) for a in actions]
    completion = res.usage.completion_tokens / n if res.usage.completion_tokens else 0.0
    return StateRecord(
        task_id=task_id, step=step, actions=actions, logprobs=lps, sample_logprobs=lps,
        expert=expert, prompt_tokens=model.count_tokens(prompt), choice_tokens=completion,
        teacher_cost=teacher_cost, free_text=True,
    )


def _dev_row(rule: str, spec: str, temperature: float, summary: Any,
             repeats: str | None = None) -> dict[str, Any]:
    """A rule's measured dev episodes (from a run summary)."""
    return {
        "rule": rule, "spec": spec, "temperature": temperature, "repeats": repeats,
        "run_id": summary.run_id,
        "dev_episodes": summary.episodes, "dev_successes": summary.successes,
        "dev_success": summary.success_rate, "dev_cost_per_episode": summary.cost_per_episode,
        "dev_teacher_share": summary.teacher_share,
        "dev_steps_per_episode": summary.steps_per_episode,
        # the step budget the rollout's plan gave it (absent from a summary without config)
        "dev_max_steps": (getattr(summary, "config", None) or {}).get("budget", {}).get(
            "max_steps"),
    }


async def play_on_dev(
    app: Nightowl, opts: CalibrateOptions, pool: list[dict[str, Any]],
    chosen: dict[str, Any], ids: list[str], *, progress: ProgressSink | None = None,
    student: StudentChoice | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Teacher-only, then frontier rules chosen by `next_probe`, end to end on dev.

    At most ``opts.verify`` student rules are played, the first with the student
    exploring on repeats; if that loses dev episodes it is replayed, and the others
    played, with repeats escalated (`repeat_policy`; one rollout more). Returns
    (teacher-only's dev row, one dev row per rollout, cheapest rule first; each row
    says its ``repeats``). Each is a ledger run of kind ``calibrate``; escalations are
    not stored as demos (dev stays out of memory). ``student`` plays every rollout
    (None: the settings' student).
    """
    sink = progress or ignore
    # the environment's default budget unless the caller set one
    budget = (EpisodeBudget(max_steps=opts.rollout_max_steps)
              if opts.rollout_max_steps is not None else EpisodeBudget())

    def spec(name: str, preset: str, rule: str | None, temperature: float,
             repeats: RepeatPolicy = "explore") -> RunSpec:
        return RunSpec(name=f"calibrate {opts.env}/{opts.game or '*'} {name}", env=opts.env,
                       split=opts.split, task_ids=ids, ladder=preset, rule=rule,
                       temperature=temperature, repeats=repeats, budget=budget, kind="calibrate",
                       store_escalations=False, concurrency=opts.concurrency,
                       k_episodes=opts.k_episodes, window=opts.window,
                       student=student.name if student else None,
                       student_dtype=student.dtype if student else None)

    t = await run_tasks(app, spec("teacher", "teacher", None, 0.0), progress=sink)
    teacher = _dev_row("teacher only", "teacher", 0.0, t)
    played: dict[int, bool] = {}
    rows: dict[int, dict[str, Any]] = {}
    dropped: list[dict[str, Any]] = []  # the first rule explored, when that lost episodes
    policy: RepeatPolicy = "explore"

    async def play(c: dict[str, Any], repeats: RepeatPolicy) -> dict[str, Any]:
        n = len(played) + len(dropped) + 1
        sink(Message(text=f"dev rollout {n}: {c['rule']} (repeats: {repeats})"))
        s = await run_tasks(app, spec(c["spec"], preset_for_rule(c["spec"]), c["spec"],
                                      c["temperature"], repeats), progress=sink)
        return {**c, **_dev_row(c["rule"], c["spec"], c["temperature"], s, repeats)}

    while len(played) < opts.verify and (i := next_probe(pool, chosen, played)) is not None:
        row = await play(pool[i], policy)
        if not played and not dropped and repeat_policy(row, teacher, opts.target) != policy:
            policy = "escalate"  # a wrong move is fatal here: the teacher decides repeats
            dropped.append(row)
            row = await play(pool[i], policy)
        rows[i] = row
        played[i] = keeps_success_and_saves(rows[i], teacher, opts.target, opts.min_saving,
                                             opts.confidence)
    return teacher, dropped + [rows[i] for i in sorted(rows)]


async def calibrate(
    app: Nightowl, opts: CalibrateOptions, *, progress: ProgressSink | None = None,
    student_dtype: str | None = None,
) -> CalibrationReport:
    """Collect dev states, simulate every candidate rule, verify the best on dev, choose.

    ``student_dtype`` is the in-process student's dtype (``--student-dtype``; None: the
    registry's); the report's ``machine`` records the one it scored in.
    """
    t0 = time.perf_counter()
    student = resolve_student(app.settings, None, student_dtype)
    states, ids = await collect_states(app, opts, progress=progress, student=student)
    if not states:
        raise ConfigError(f"no dev states with valid actions for {opts.env}: cannot calibrate")
    rows = evaluate_rules(states, opts, app.prices(student.name))
    rec = recommend(rows, opts.target, opts.min_saving)
    predicted = rec["chosen"]
    played: list[dict[str, Any]] = []
    pool = frontier(rows, opts.min_saving) if opts.verify > 0 else []
    if pool:
        teacher, measured = await play_on_dev(app, opts, pool, predicted, ids,
                                             progress=progress, student=student)
        played = [teacher, *measured]
        if teacher["dev_max_steps"]:  # what the rollouts' plans gave them (env's, unless set)
            opts = opts.model_copy(update={"rollout_max_steps": teacher["dev_max_steps"]})
        rec = recommend_measured(measured, teacher, opts.target, opts.min_saving,
                                 opts.confidence)
    elif opts.verify > 0:
        rec = {**rec, "verdict": rec["verdict"] + " (no student rule predicted to save "
               f">= {opts.min_saving:g}x: nothing played on dev)"}
    top1 = float(np.mean([
        canonical_action(s.actions[int(np.argmax(s.logprobs))]) == canonical_action(s.expert)
        for s in states
    ]))
    return CalibrationReport(
        options=opts,
        states=len(states),
        dev_task_ids=ids,
        student_top1_agreement=top1,
        candidates=rows,
        chosen=rec["chosen"],
        target_met=rec["target_met"],
        student_pays=rec["student_pays"],
        verdict=rec["verdict"],
        wall_s=time.perf_counter() - t0,
        predicted_choice=predicted,
        rollouts=played,
        machine=scoring_machine(student.backend(app)),
    )

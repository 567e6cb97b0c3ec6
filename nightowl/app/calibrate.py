"""Use case: `nightowl calibrate` -- choose the cascade's acceptance rule on the dev split.

The oracle plays each dev task; at every state on its path the student scores every
valid action once with the prompt the cascade would build; then
`nightowl.distill.calibrate` simulates every candidate rule on those scores and picks
the cheapest one that meets the target (see its docstring for the method).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from nightowl.app.events import PhaseAdvanced, PhaseStarted, ProgressSink, ignore
from nightowl.distill.calibrate import (
    CalibrateOptions,
    StateRecord,
    evaluate_rules,
    recommend,
)
from nightowl.distill.parser import normalize_action
from nightowl.distill.prompt import PromptBuilder
from nightowl.distill.scoring import score_actions
from nightowl.distill.signals import demo_hint
from nightowl.envs.registry import make_env, select_tasks
from nightowl.errors import ConfigError

if TYPE_CHECKING:
    from nightowl.app.root import Nightowl


class CalibrationReport(BaseModel):
    """What `calibrate` found: every candidate rule's prediction and the choice."""

    options: CalibrateOptions
    states: int
    student_top1_agreement: float
    candidates: list[dict[str, Any]]
    chosen: dict[str, Any]
    target_met: bool
    student_pays: bool
    verdict: str
    wall_s: float


async def collect_states(
    app: Nightowl, opts: CalibrateOptions, *, progress: ProgressSink | None = None
) -> list[StateRecord]:
    """Walk the oracle's path on dev tasks, scoring the valid actions at every state."""
    sink = progress or ignore
    settings = app.settings
    student = app.student_backend()
    tprices = settings.model(settings.teacher_price_model).prices
    builder = PromptBuilder()
    calibrated = builder.scoring.startswith("calibrated")  # needs a content-free prompt too
    ids = select_tasks(opts.env, opts.split, opts.tasks, game=opts.game)
    env = make_env(opts.env)
    memory = app.memory
    out: list[StateRecord] = []
    sink(PhaseStarted(key="calibrate", label=f"score dev states ({opts.env})", total=len(ids)))
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
                        content_free_prompt=(
                            builder.content_free(demos) if calibrated else None
                        ),
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
            sink(PhaseAdvanced(key="calibrate", note=f"{len(out)} states"))
    finally:
        env.close()
    return out


async def calibrate(
    app: Nightowl, opts: CalibrateOptions, *, progress: ProgressSink | None = None
) -> CalibrationReport:
    """Collect dev states, simulate every candidate rule, and choose one."""
    t0 = time.perf_counter()
    states = await collect_states(app, opts, progress=progress)
    if not states:
        raise ConfigError(f"no dev states with valid actions for {opts.env}: cannot calibrate")
    rows = evaluate_rules(states, opts, app.prices(app.student))
    rec = recommend(rows, opts.target)
    top1 = float(np.mean([
        normalize_action(s.actions[int(np.argmax(s.logprobs))]) == normalize_action(s.expert)
        for s in states
    ]))
    return CalibrationReport(
        options=opts,
        states=len(states),
        student_top1_agreement=top1,
        candidates=rows,
        chosen=rec["chosen"],
        target_met=rec["target_met"],
        student_pays=rec["student_pays"],
        verdict=rec["verdict"],
        wall_s=time.perf_counter() - t0,
    )

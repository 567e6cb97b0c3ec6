import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from nightowl.agent.acceptance import Unanimity
from nightowl.agent.budget import EpisodeBudget
from nightowl.agent.graph import AgentGraph, LoopConfig
from nightowl.agent.ladder import Ladder
from nightowl.agent.state import results_teacher_share
from nightowl.agent.tiers import OracleTier, StudentTier
from nightowl.config import FRONTIER_PRICES, SMALL_HOSTED_PRICES
from nightowl.envs.registry import make_env
from nightowl.ledger import MeteredModel
from nightowl.llm.scripted import FunctionModel
from nightowl.memory.embedder import HashingEmbedder
from nightowl.memory.store import DemoMemory

from ._resume_child import run as child_run


class Tok:
    def count_tokens(self, text):
        return len(text.split())


def graph(ledger, run_id, student_fn, *, memory=None, saver=None, max_steps=25, rule=None, **loop):
    student = MeteredModel(
        FunctionModel(student_fn), ledger, SMALL_HOSTED_PRICES, run_id=run_id, role="student"
    )
    ladder = Ladder(
        [
            StudentTier(student, prices=SMALL_HOSTED_PRICES, rule=rule or Unanimity(3)),
            OracleTier(ledger=ledger, prices=FRONTIER_PRICES, tokenizer=Tok()),
        ]
    )
    return AgentGraph(
        ladder=ladder,
        env_factory=lambda: make_env("twx"),
        ledger=ledger,
        memory=memory,
        config=LoopConfig(budget=EpisodeBudget(max_steps=max_steps), **loop),
        checkpointer=saver,
        env_name="twx",
    )


async def test_end_to_end_with_oracle_and_memory(ledger, tmp_path, twx_coin_tasks):
    mem = DemoMemory(ledger.db, HashingEmbedder(), tmp_path / "idx")
    run = ledger.start_run("e2e", "test", {})
    # a garbage-talking student: every step escalates to the oracle, which wins
    g = graph(ledger, run, lambda req: "qqq zzz", memory=mem, store_escalations=True)
    res = await g.run_many(
        run_id=run, task_ids=twx_coin_tasks["test"][:3], split="test", concurrency=3
    )
    assert all(r.success for r in res)
    assert all(r.stats["steps_teacher"] == r.steps for r in res)
    rep = ledger.run_report(run)
    assert rep.successes == 3 and rep.roles["teacher"].calls == sum(r.steps for r in res)
    # the one teacher share: teacher-acted steps / env steps, same in ledger and results
    assert rep.env_steps == sum(r.steps for r in res) and rep.teacher_share == 1.0
    assert results_teacher_share(res) == 1.0
    # steps were recorded and successful escalated episodes became demos
    assert mem.stats().demos == 3
    steps = mem.episode_steps(res[0].episode_id)
    assert len(steps) == res[0].steps and steps[0].actor == "oracle"
    # now with demos in memory, retrieval feeds the prompt
    run2 = ledger.start_run("e2e2", "test", {})
    seen = []

    def student(req):
        seen.append(req.prompt)
        return "qqq"

    g2 = graph(ledger, run2, student, memory=mem)
    r = await g2.run_episode(run_id=run2, task_id=twx_coin_tasks["test"][3], split="test")
    assert r.success and seen and seen[0].count("Goal:") >= 2


async def test_empty_memory_and_no_teacher_budget(ledger, tmp_path, twx_coin_tasks):
    mem = DemoMemory(ledger.db, HashingEmbedder(), tmp_path / "idx")
    run = ledger.start_run("b", "test", {})
    g = graph(ledger, run, lambda req: "qqq", memory=mem)
    g.config.budget = EpisodeBudget(max_steps=5, max_teacher_calls=1)
    r = await g.run_episode(run_id=run, task_id=twx_coin_tasks["test"][1], split="test")
    assert r.budget["used"].get("teacher_calls", 0) <= 1
    assert r.budget["used"]["steps"] <= 5
    assert r.reason  # ended with a recorded reason


async def test_student_acts_when_unanimous(ledger, twx_coin_tasks):
    run = ledger.start_run("s", "test", {})
    g = graph(ledger, run, lambda req: sorted(req.choices)[0], max_steps=4)
    r = await g.run_episode(run_id=run, task_id=twx_coin_tasks["test"][0], split="test")
    assert r.stats["steps_student"] == r.steps == 4 and r.stats["teacher_calls"] == 0
    assert r.stats["student_samples"] == 12 and r.reason.startswith("budget: steps")
    rep = ledger.run_report(run)
    assert (rep.env_steps, rep.teacher_steps, rep.teacher_share) == (4, 0, 0.0)
    # one transaction per node: every call and step is on disk once the episode ends
    assert len(ledger.model_calls(run)) == 4 and rep.tool_calls == 4


async def test_resume_in_process_skips_finished(ledger, tmp_path, twx_coin_tasks):
    run = ledger.start_run("r", "test", {})
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "ck.sqlite")) as saver:
        g = graph(ledger, run, lambda req: "qqq", saver=saver)
        r1 = await g.run_episode(run_id=run, task_id=twx_coin_tasks["test"][0], split="test")
        n_calls = len(ledger.model_calls(run))
        r2 = await g.run_episode(run_id=run, task_id=twx_coin_tasks["test"][0], split="test")
    assert r2.resumed and r2.success == r1.success and len(ledger.model_calls(run)) == n_calls


async def test_kill_and_resume_does_not_rebill(tmp_path, twx_coin_tasks):
    from nightowl.ledger import Ledger
    from nightowl.storage import open_db

    run_id = "feedc0de" * 4
    task = twx_coin_tasks["test"][0]
    child = Path(__file__).with_name("_resume_child.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen(
        [sys.executable, str(child), str(tmp_path), run_id, task, "0.4"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    ledger = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(0.2)
            if (tmp_path / "n.db").exists():
                ledger = ledger or Ledger(open_db(url=f"sqlite:///{tmp_path}/n.db"))
                try:
                    if ledger.run_exists(run_id) and len(ledger.model_calls(run_id)) >= 3:
                        break
                except Exception:
                    pass
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    before = ledger.model_calls(run_id)
    assert 3 <= len(before) < 8
    res = await child_run(tmp_path, run_id, task, 0.0)
    assert res["resumed"] and res["steps"] == 8
    calls = ledger.model_calls(run_id)
    per_step = Counter(c.step for c in calls)
    assert set(per_step) == set(range(8))
    # only the step that was in flight when killed may have been billed twice
    assert sum(n - 1 for n in per_step.values()) <= 1
    # every billed call of a finished step is still there, once
    for c in before:
        assert per_step[c.step] >= 1


async def test_repeat_guard_sees_the_whole_episode(ledger, tmp_path, twx_coin_tasks):
    """A student cycling "look around" / "inventory" with a 1-step history: the
    episode-wide visited keys make the repeat escalate to the oracle."""
    from nightowl.agent.state import visit_key

    run = ledger.start_run("cycle", "test", {})
    turn = iter(["look around", "inventory"] * 20)
    student = MeteredModel(FunctionModel(lambda req: next(turn)), ledger, SMALL_HOSTED_PRICES,
                           run_id=run, role="student")
    ladder = Ladder([
        StudentTier(student, prices=SMALL_HOSTED_PRICES, rule=Unanimity(1), avoid_repeats=True),
        OracleTier(ledger=ledger, prices=FRONTIER_PRICES, tokenizer=Tok()),
    ])
    g = AgentGraph(ladder=ladder, env_factory=lambda: make_env("twx"), ledger=ledger,
                   memory=DemoMemory(ledger.db, HashingEmbedder(), tmp_path / "idx"),
                   config=LoopConfig(budget=EpisodeBudget(max_steps=8), history=1),
                   env_name="twx")
    r = await g.run_episode(run_id=run, task_id=twx_coin_tasks["test"][0], split="test")
    assert r.stats["steps_teacher"] >= 1
    steps = g.memory.episode_steps(r.episode_id)
    keys = [visit_key(s.observation, s.action) for s in steps if s.actor == "student"]
    assert len(keys) == len(set(keys))  # the student never repeated itself in a state

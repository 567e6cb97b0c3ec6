import math
import os
import subprocess
import sys
import textwrap
import threading

import pytest
from sqlalchemy import func, select

from nightowl.config import Prices
from nightowl.errors import UnknownNameError
from nightowl.ledger import (
    Ledger,
    ModelCall,
    ToolCall,
    break_even_episodes,
    cost_of_pass,
)
from nightowl.llm.base import Usage

PRICES = Prices(input=2.5, cached_input=1.25, output=10.0)  # USD / 1M tokens


def _count(db, table, run_id) -> int:  # type: ignore[no-untyped-def]
    with db.session() as s:
        return s.execute(select(func.count()).where(table.run_id == run_id)).scalar_one()


def test_cost_math_is_exact_with_cached_tokens(db):
    ledger = Ledger(db)
    run = ledger.start_run("cost", "eval", {"k": 1})
    usage = Usage(prompt_tokens=1000, cached_prompt_tokens=400, completion_tokens=200)
    # 600 uncached * 2.5 + 400 cached * 1.25 + 200 out * 10 = 4000 per 1M tokens
    cost = ledger.record_model_call(
        run_id=run, role="student", model="m", usage=usage, latency_s=0.5, prices=PRICES
    )
    assert cost == 4000 / 1_000_000
    [row] = ledger.model_calls(run)
    assert row.cost_usd == cost
    assert (row.prompt_tokens, row.cached_prompt_tokens, row.completion_tokens) == (1000, 400, 200)
    assert row.ok and row.kind == "generate" and row.role == "student"
    report = ledger.run_report(run)
    assert report.model_cost == cost
    assert report.roles["student"].cached_prompt_tokens == 400


def test_run_report_aggregates(db):
    ledger = Ledger(db)
    run = ledger.start_run("agg", "eval", {"model": "smollm2", "seed": 1})
    eps = [ledger.start_episode(run, f"tw/g/dev/{i}", "tw", "dev") for i in range(4)]
    free = Prices()
    one_per_token = Prices(input=1_000_000, output=1_000_000)  # $1 per token: easy sums
    for i, eid in enumerate(eps):
        for step in range(3):
            ledger.record_model_call(
                run_id=run, episode_id=eid, step=step, role="student", model="small",
                usage=Usage(prompt_tokens=1), latency_s=0.25, prices=one_per_token,
            )
        if i == 0:
            ledger.record_model_call(
                run_id=run, episode_id=eid, step=1, role="teacher", model="big",
                usage=Usage(prompt_tokens=2, completion_tokens=2), latency_s=1.0,
                prices=one_per_token,
            )
        ledger.record_model_call(  # scoring calls are not acting calls
            run_id=run, episode_id=eid, step=0, role="student", model="small",
            usage=Usage(prompt_tokens=5), latency_s=0.0, prices=free, kind="score",
        )
        ledger.record_tool_call(run_id=run, episode_id=eid, step=0, tool="env.step",
                                latency_s=0.01, cost=0.5)
        ledger.finish_episode(eid, success=i < 2, score=1.0 if i < 2 else 0.0, n_steps=3,
                              reason="won" if i < 2 else "max steps")
    ledger.record_model_call(  # run-level (outside any episode): a sleep-time pass
        run_id=run, role="sleep", model="small", usage=Usage(completion_tokens=2),
        latency_s=0.1, prices=one_per_token,
    )
    r = ledger.run_report(run)
    assert (r.n_episodes, r.n_finished, r.successes) == (4, 4, 2)
    assert r.success_rate == 0.5
    assert r.model_cost == 4 * 3 + 4 + 2
    assert r.tool_cost == 2.0
    assert r.total_cost == 20.0
    assert r.overhead_cost == 2.0
    assert r.cost_per_episode == 5.0
    assert r.cost_of_pass == 10.0
    assert (r.teacher_calls, r.acting_calls) == (1, 13)
    assert r.teacher_call_share == 1 / 13
    assert r.calls_per_role == {"sleep": 1, "student": 16, "teacher": 1}
    assert r.roles["student"].score_calls == 4
    assert r.roles["student"].generate_calls == 12
    assert r.cost_per_role == {"sleep": 2.0, "student": 12.0, "teacher": 4.0}
    assert r.tokens_per_role["teacher"] == 4
    assert r.models == {"big": 4.0, "small": 14.0}
    assert r.model_calls == 18 and r.tool_calls == 4 and r.failed_model_calls == 0
    assert r.wall_time_s >= 0
    costs = ledger.episode_costs(run)
    assert [c.episode_id for c in costs] == eps
    assert costs[0].cost_usd == 3 + 4 + 0.5
    assert costs[0].teacher_calls == 1 and costs[0].student_calls == 3
    assert costs[1].cost_usd == 3.5
    assert [c.success for c in costs] == [True, True, False, False]
    assert ledger.get_run(run).config == {"model": "smollm2", "seed": 1}
    assert '"cost_of_pass":10.0' in r.model_dump_json()


def test_cost_of_pass_is_infinite_at_zero_success(db):
    ledger = Ledger(db)
    run = ledger.start_run("fail", "eval")
    assert math.isinf(ledger.run_report(run).cost_of_pass)  # no episodes at all
    eid = ledger.start_episode(run, "t/1", "tw", "test")
    ledger.record_model_call(run_id=run, episode_id=eid, role="student", model="m",
                             usage=Usage(prompt_tokens=10), latency_s=0.1, prices=PRICES)
    ledger.finish_episode(eid, success=False, score=0.0, n_steps=1, reason="gave up")
    r = ledger.run_report(run)
    assert r.success_rate == 0.0 and r.total_cost > 0
    assert math.isinf(r.cost_of_pass)
    assert r.teacher_call_share == 0.0
    assert "Infinity" in r.model_dump_json()
    assert cost_of_pass(1.0, 0.0) == math.inf
    assert cost_of_pass(1.0, 0.25) == 4.0


def test_break_even_formula():
    assert break_even_episodes(10.0, 0.75, 0.25) == 20.0
    assert Ledger.break_even_episodes(3.0, 2.0, 0.5) == 2.0
    assert break_even_episodes(0.0, 1.0, 0.5) == 0.0
    assert math.isinf(break_even_episodes(10.0, 0.5, 0.5))
    assert math.isinf(break_even_episodes(10.0, 0.25, 0.5))


def test_unknown_ids_are_clear_errors(db):
    ledger = Ledger(db)
    with pytest.raises(UnknownNameError, match="unknown run 'nope'"):
        ledger.run_report("nope")
    with pytest.raises(UnknownNameError, match="run"):
        ledger.episode_costs("nope")
    with pytest.raises(UnknownNameError, match="episode"):
        ledger.finish_episode("nope", success=True)
    with pytest.raises(UnknownNameError, match="run"):
        ledger.start_episode("nope", "t/1")
    with pytest.raises(UnknownNameError, match="run"):
        ledger.record_model_call(run_id="nope", role="student", model="m", usage=Usage(),
                                 latency_s=0.0, prices=PRICES)
    run = ledger.start_run("r", "eval")
    with pytest.raises(UnknownNameError, match="episode"):
        ledger.record_tool_call(run_id=run, episode_id="nope", tool="x", latency_s=0.0)
    assert ledger.run_report(run).n_episodes == 0  # nothing half-written


def test_resolve_prefix_list_and_delete(db):
    ledger = Ledger(db)
    a = ledger.start_run("first", "collect")
    b = ledger.start_run("second", "eval")
    assert ledger.resolve_run_id(a) == a
    assert ledger.resolve_run_id(a[:8].upper()) == a
    custom = ledger.start_run("custom", "eval", run_id="My-Run")
    assert ledger.resolve_run_id("My-Run") == custom
    with pytest.raises(UnknownNameError):
        ledger.resolve_run_id("zz")
    runs = ledger.list_runs()
    assert [r.run_id for r in runs][:3] == [custom, b, a]
    assert [r.run_id for r in ledger.list_runs(kind="collect")] == [a]
    eid = ledger.start_episode(b, "t/1")
    ledger.record_model_call(run_id=b, episode_id=eid, role="student", model="m",
                             usage=Usage(prompt_tokens=3), latency_s=0.0, prices=PRICES)
    ledger.record_tool_call(run_id=b, episode_id=eid, tool="env", latency_s=0.0)
    ledger.delete_run(b)
    assert not ledger.run_exists(b) and ledger.run_exists(a)
    assert _count(db, ModelCall, b) == 0 and _count(db, ToolCall, b) == 0


def test_threads_write_concurrently(db):
    ledger = Ledger(db)
    run = ledger.start_run("threads", "eval")
    eid = ledger.start_episode(run, "t/1")
    n_threads, per_thread = 8, 25
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(per_thread):
                ledger.record_model_call(
                    run_id=run, episode_id=eid, step=i, role="student", model=f"m{t}",
                    usage=Usage(prompt_tokens=1, completion_tokens=1), latency_s=0.0,
                    prices=Prices(input=1_000_000, output=1_000_000),
                )
                ledger.record_tool_call(run_id=run, episode_id=eid, step=i, tool="env",
                                        latency_s=0.0, cost=1.0)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    r = ledger.run_report(run)
    assert r.model_calls == n_threads * per_thread
    assert r.tool_calls == n_threads * per_thread
    assert r.total_cost == 3.0 * n_threads * per_thread


WRITER = textwrap.dedent(
    """
    import sys
    from nightowl.config import Prices
    from nightowl.ledger import Ledger
    from nightowl.llm.base import Usage
    from nightowl.storage import open_db

    url, run, eid, tag, n = sys.argv[1:6]
    ledger = Ledger(open_db(url=url))  # both processes migrate the empty database at once
    run = run if run != "-" else ledger.start_run(tag, "eval")
    for i in range(int(n)):
        ledger.record_model_call(
            run_id=run, episode_id=None if eid == "-" else eid, step=i, role="student",
            model=tag, usage=Usage(prompt_tokens=1), latency_s=0.0,
            prices=Prices(input=1_000_000),
        )
    print(run)
    """
)


def test_two_processes_write_concurrently(db_url):
    """Two processes open an empty database at once (both migrate) and write; nothing lost."""
    n = 60
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, db_url, "-", "-", f"p{k}", str(n)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
        )
        for k in range(2)
    ]
    runs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        runs.append(out.strip().splitlines()[-1])
    from nightowl.storage import head_revisions, open_db

    db = open_db(url=db_url)
    assert db.current_revisions() == head_revisions()
    ledger = Ledger(db)
    for run in runs:
        r = ledger.run_report(run)
        assert r.model_calls == n
        assert r.total_cost == float(n)


def test_break_even_from_runs(sqlite_db):
    ledger = Ledger(sqlite_db)
    dollar = Prices(input=1_000_000)

    def run_with(name: str, per_episode: list[int], overhead: int = 0) -> str:
        run = ledger.start_run(name, "eval")
        for i, tokens in enumerate(per_episode):
            eid = ledger.start_episode(run, f"t/{i}")
            ledger.record_model_call(run_id=run, episode_id=eid, role="teacher", model="m",
                                     usage=Usage(prompt_tokens=tokens), latency_s=0, prices=dollar)
            ledger.finish_episode(eid, success=True)
        if overhead:
            ledger.record_model_call(run_id=run, role="sleep", model="m",
                                     usage=Usage(prompt_tokens=overhead), latency_s=0,
                                     prices=dollar)
        return run

    collect = run_with("collect", [5, 5, 5], overhead=15)  # total 30
    teacher = run_with("teacher-only", [4, 4])  # 4 per episode
    ours = run_with("ours", [1, 1, 1, 1])  # 1 per episode
    be = ledger.break_even(collect, teacher, ours)
    assert (be.collection_cost, be.saving_per_episode, be.episodes) == (30.0, 3.0, 10.0)
    assert math.isinf(ledger.break_even(collect, ours, teacher).episodes)

"""OpenTelemetry traces (nightowl/telemetry.py): the span tree of a real short run, the
GenAI attributes of model calls, and nothing installed or changed while tracing is off."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import ProxyTracerProvider

from nightowl import telemetry as tm
from nightowl.agent.budget import EpisodeBudget
from nightowl.app import Nightowl, RunSpec, run_tasks
from nightowl.config import ModelSpec, load_settings
from nightowl.envs.registry import select_tasks
from nightowl.memory.embedder import HashingEmbedder
from tests.agent.fakes import fake_student_env

ROOT = Path(__file__).resolve().parents[1]


def _settings(tmp_path):  # type: ignore[no-untyped-def]
    base = load_settings(home=tmp_path)
    models = dict(base.models)
    # samples disagree, so the cascade escalates every step to the oracle teacher
    models["fake"] = ModelSpec(backend="scripted",
                               params={"function": "tests.agent.fakes:cycling_choice"},
                               prices=base.models["smollm2"].prices)
    return load_settings(home=tmp_path, models=models, student_model="fake")


def _spec(name: str) -> RunSpec:
    ids = select_tasks("twx", "test", 1, game="coin")
    return RunSpec(name=name, env="twx", split="test", task_ids=ids, ladder="cascade",
                   concurrency=1, budget=EpisodeBudget(max_steps=3))


@pytest.fixture()
def exporter():  # type: ignore[no-untyped-def]
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    with tm.use_provider(provider):
        yield exp
    provider.shutdown()


async def test_span_tree_of_a_short_run(tmp_path, exporter):
    with Nightowl.open(_settings(tmp_path), embedder=HashingEmbedder()) as app:
        summary = await run_tasks(app, _spec("traced"))
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}

    def parent(s):  # type: ignore[no-untyped-def]
        return by_id.get(s.parent.span_id) if s.parent else None

    (run,) = [s for s in spans if s.name == "nightowl.run"]
    (episode,) = [s for s in spans if s.name == "nightowl.episode"]
    steps = [s for s in spans if s.name == "nightowl.step"]
    assert run.parent is None and parent(episode) is run
    assert len({s.context.trace_id for s in spans}) == 1  # one trace per run
    assert run.attributes[tm.RUN_ID] == summary.run_id
    assert episode.attributes[tm.EPISODE_ID] == summary.episodes_detail[0]["episode_id"]
    n = int(summary.steps_per_episode)
    assert len(steps) == n >= 1 and all(parent(s) is episode for s in steps)
    assert sorted(s.attributes[tm.STEP] for s in steps) == list(range(n))
    # the reset is an environment call of the episode; each step has its own env step
    (reset,) = [s for s in spans if s.name == "execute_tool twx.reset"]
    assert parent(reset) is episode
    for st in steps:
        kids = [s for s in spans if parent(s) is st]
        names = sorted(k.name for k in kids)
        assert "execute_tool twx.step" in names, names
        models = [k for k in kids if k.attributes.get(tm.GEN_AI_OPERATION_NAME) != "execute_tool"]
        assert {k.attributes[tm.TIER] for k in models} == {"student", "teacher"}
        assert st.attributes[tm.TIER] == "teacher"  # the tier that accepted
        assert st.attributes[tm.ACCEPTANCE_VERDICT] == "accepted"
        assert st.attributes[tm.ESCALATIONS] == 1 and st.attributes[tm.DEMOS_RETRIEVED] == 0
        assert st.attributes[tm.COST_USD] > 0
    calls = [s for s in spans if tm.GEN_AI_REQUEST_MODEL in (s.attributes or {})]
    student = [s for s in calls if s.attributes[tm.TIER] == "student"]
    teacher = [s for s in calls if s.attributes[tm.TIER] == "teacher"]
    assert student and teacher
    for s in student:
        a = s.attributes
        assert a[tm.GEN_AI_OPERATION_NAME] in ("chat", "text_completion", "score")
        assert a[tm.GEN_AI_PROVIDER_NAME] == "nightowl.scripted"
        assert a[tm.GEN_AI_USAGE_INPUT_TOKENS] > 0 and tm.GEN_AI_USAGE_OUTPUT_TOKENS in a
        assert s.kind == trace.SpanKind.CLIENT and a[tm.STEP] in range(n)
    for s in teacher:
        a = s.attributes
        assert a[tm.GEN_AI_REQUEST_MODEL] == "oracle:twx" and a[tm.COST_USD] > 0
        assert a[tm.GEN_AI_USAGE_OUTPUT_TOKENS] > 0
    # the spans' costs are the ledger's
    total = sum(s.attributes[tm.COST_USD] for s in calls)
    assert total == pytest.approx(summary.total_cost)
    assert run.attributes[tm.COST_USD] == pytest.approx(summary.total_cost)
    print("\n" + _tree(spans))


def _tree(spans) -> str:  # type: ignore[no-untyped-def]
    kids: dict = {}
    for s in spans:
        kids.setdefault(s.parent.span_id if s.parent else None, []).append(s)
    lines: list[str] = []

    def walk(pid, depth):  # type: ignore[no-untyped-def]
        for s in sorted(kids.get(pid, []), key=lambda s: s.start_time):
            lines.append("  " * depth + s.name)
            walk(s.context.span_id, depth + 1)

    walk(None, 0)
    return "\n".join(lines)


def test_semconv_names_match_the_semconv_package():
    gen_ai = pytest.importorskip("opentelemetry.semconv._incubating.attributes.gen_ai_attributes")
    for name in ("GEN_AI_OPERATION_NAME", "GEN_AI_PROVIDER_NAME", "GEN_AI_REQUEST_MODEL",
                 "GEN_AI_RESPONSE_MODEL", "GEN_AI_USAGE_INPUT_TOKENS",
                 "GEN_AI_USAGE_OUTPUT_TOKENS", "GEN_AI_TOOL_NAME"):
        assert getattr(tm, name) == getattr(gen_ai, name)


def test_traces_mode_is_off_unless_configured(tmp_path):
    s = load_settings(home=tmp_path)
    assert tm.traces_mode(s, {}) is None
    assert tm.traces_mode(s, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}) == "otlp"
    assert tm.traces_mode(s, {"OTEL_TRACES_EXPORTER": "otlp"}) == "otlp"
    assert tm.traces_mode(s, {"OTEL_TRACES_EXPORTER": "none",
                              "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}) is None
    assert tm.traces_mode(s, {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}) is None
    on = load_settings(home=tmp_path, traces="otlp")
    assert tm.traces_mode(on, {}) == "otlp"
    off = load_settings(home=tmp_path, traces="off")
    assert tm.traces_mode(off, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}) is None


def test_setup_installs_an_sdk_provider_only_when_configured(tmp_path):
    code = ("import sys; from opentelemetry import trace; from nightowl.config import "
            "load_settings; from nightowl.telemetry import setup_tracing; "
            "on = setup_tracing(load_settings(home=sys.argv[1], traces=sys.argv[2])); "
            "print(on, type(trace.get_tracer_provider()).__module__)")
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith(("OTEL_", "NIGHTOWL_"))}
    out = {}
    for mode in ("auto", "otlp"):
        res = subprocess.run([sys.executable, "-c", code, str(tmp_path), mode], env=env,
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        out[mode] = res.stdout.split()
    assert out["auto"] == ["False", "opentelemetry.trace"]  # the API's proxy: no SDK
    assert out["otlp"] == ["True", "opentelemetry.sdk.trace"]


@pytest.fixture
def fake_cli(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    from nightowl.config import get_settings

    fake_student_env(monkeypatch, tmp_path, db="j.db")
    for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
              "OTEL_TRACES_EXPORTER", "NIGHTOWL_TRACES"):
        monkeypatch.delenv(k, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _cli_run(monkeypatch, capsys) -> dict:  # type: ignore[no-untyped-def]
    from nightowl.cli.main import main

    monkeypatch.setattr(sys, "argv", ["nightowl", "run", "--env", "twx", "--game", "coin",
                                      "--tasks", "1", "--max-steps", "3", "--ladder",
                                      "teacher", "--json"])
    try:
        main()
    except SystemExit as exc:
        assert not exc.code
    out = json.loads(capsys.readouterr().out)
    for k in ("run_id", "wall_s", "overhead_ms_per_step"):
        out.pop(k)
    for ep in out["episodes_detail"]:
        ep.pop("episode_id")
    return out


def test_cli_run_output_unchanged_and_no_provider_when_off(fake_cli, monkeypatch, capsys):
    plain = _cli_run(monkeypatch, capsys)  # main() calls setup_tracing(): off here
    assert isinstance(trace.get_tracer_provider(), ProxyTracerProvider)
    assert not tm.tracer().start_span("x").is_recording()
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    with tm.use_provider(provider):
        traced = _cli_run(monkeypatch, capsys)
    assert traced == plain
    assert any(s.name == "nightowl.run" for s in exp.get_finished_spans())


@pytest.mark.parametrize("traced", [False, True])
async def test_overhead(tmp_path, traced):
    """Not an assertion on time (a shared machine): prints the wall time of the same run."""
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    with Nightowl.open(_settings(tmp_path), embedder=HashingEmbedder()) as app:
        await run_tasks(app, _spec("warm"))  # imports and caches out of the timing
        best = float("inf")
        for i in range(3):
            t0 = time.perf_counter()
            if traced:
                with tm.use_provider(provider):
                    await run_tasks(app, _spec(f"t{i}"))
            else:
                await run_tasks(app, _spec(f"t{i}"))
            best = min(best, time.perf_counter() - t0)
    print(f"\ntracing {'in-memory' if traced else 'off'}: best of 3 runs {best * 1000:.1f} ms,"
          f" {len(exp.get_finished_spans())} spans")
    assert bool(exp.get_finished_spans()) == traced

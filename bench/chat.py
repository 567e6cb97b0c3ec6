"""Chat assistant benchmark: multi-turn threads with gradeable answers, four arms.

Workload (small by default): Stateful-GSM threads from reasoning-gym's gsm_symbolic
(turn 1 gives the context and the first question; later turns ask further questions
about it, after an idle gap) plus repeated-question threads (the same questions asked
again in a new thread of the same tenant, where chat demos can help).

Arms: ``teacher`` (every turn to the teacher), ``cascade`` (student samples, agreement,
escalate), ``demos`` (cascade + tenant chat demos), ``sleep`` (cascade + demos +
per-thread sleep-time: after each turn the thread is rethought while idle, and the next
turn is prompted with c' plus the messages after it). The teacher is the oracle (gold
answers, billed at the teacher price model's rates) unless ``--teacher NAME`` names a
registry model. The student is the embedded SmolLM2 unless ``--student NAME`` names
another registry entry (e.g. an OpenAI-compatible endpoint configured in nightowl.toml).

Reports per arm: accuracy, cost per turn, teacher share, test-time prompt tokens per
turn, p50/p95 turn latency; writes JSON to bench/results/chat.json.

    python bench/chat.py --contexts 2 --queries 2 --arms teacher,cascade,demos,sleep
    python bench/chat.py --base-url http://127.0.0.1:8000/v1 --model smollm2  # any endpoint
    python bench/chat.py --load 200 --concurrency 16   # loopback load run of the server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nightowl.chat import Assistant, AssistantConfig  # noqa: E402
from nightowl.config import load_settings  # noqa: E402
from nightowl.sleeptime.gsm import is_correct, load_stateful_gsm  # noqa: E402
from nightowl.storage import open_db  # noqa: E402


@dataclass
class Turn:
    thread: str
    text: str
    answer: float


@dataclass
class ArmResult:
    arm: str
    turns: int = 0
    correct: int = 0
    cost: float = 0.0
    teacher: int = 0
    prompt_tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    sleep_cost: float = 0.0

    def row(self) -> dict[str, float | str]:
        lat = sorted(self.latencies) or [0.0]
        return {
            "arm": self.arm,
            "turns": self.turns,
            "accuracy": self.correct / max(self.turns, 1),
            "cost_per_turn_usd": (self.cost + self.sleep_cost) / max(self.turns, 1),
            "teacher_share": self.teacher / max(self.turns, 1),
            "prompt_tokens_per_turn": self.prompt_tokens / max(self.turns, 1),
            "p50_latency_s": statistics.median(lat),
            "p95_latency_s": lat[int(0.95 * (len(lat) - 1))],
        }


def workload(contexts: int, queries: int, repeats: int) -> list[list[Turn]]:
    """Threads of turns: GSM threads, then repeated-question threads."""
    threads: list[list[Turn]] = []
    for ci, ctx in enumerate(load_stateful_gsm(contexts, min_queries=max(queries, 3))):
        turns = []
        for qi, q in enumerate(ctx.queries[:queries]):
            text = f"{ctx.context}\n\n{q.text}" if qi == 0 else q.text
            turns.append(Turn(thread=f"gsm-{ci}", text=text, answer=q.answer))
        threads.append(turns)
    for ri in range(repeats):
        src = threads[ri % len(threads)]
        threads.append(
            [
                Turn(
                    thread=f"repeat-{ri}",
                    text=t.text if i == 0 else f"{src[0].text}\n\n{t.text}",
                    answer=t.answer,
                )
                for i, t in enumerate(src[:1])
            ]
        )
    return threads


async def run_arm(arm: str, threads: list[list[Turn]], args: argparse.Namespace) -> ArmResult:
    home = Path(tempfile.mkdtemp(prefix=f"bench-chat-{arm}-"))
    models = {}
    if args.base_url:
        # Any OpenAI-compatible endpoint as the student (an ad-hoc registry entry).
        models["endpoint"] = {
            "backend": "openai",
            "params": {"base_url": args.base_url, "model": args.model},
        }
    settings = load_settings(home=home, models=models) if models else load_settings(home=home)
    expected: dict[str, str] = {}
    config = AssistantConfig(
        student="endpoint" if args.base_url else args.student,
        teacher=args.teacher,
        n=args.n,
        tau=args.tau,
        max_tokens=args.max_tokens,
        demos=arm in ("demos", "sleep"),
        sleep=arm == "sleep",
        mode="teacher" if arm == "teacher" else "cascade",
        demo_min_score=0.7,
    )
    oracle = None if args.teacher else (lambda q: expected.get(q))
    assistant = Assistant.from_settings(
        settings, config, db=open_db(settings=settings), oracle=oracle
    )
    res = ArmResult(arm=arm)
    for turns in threads:
        for turn in turns:
            expected[turn.text] = f"The answer is {turn.answer:g}."
            started = time.perf_counter()
            reply = await assistant.chat(
                [{"role": "user", "content": turn.text}], thread=turn.thread
            )
            res.latencies.append(time.perf_counter() - started)
            res.turns += 1
            res.correct += is_correct(reply.text, turn.answer)
            res.cost += reply.cost_usd
            res.teacher += reply.tier != "student"
            res.prompt_tokens += reply.usage.prompt_tokens
            if arm == "sleep" and turn is not turns[-1]:
                # The idle gap between turns: think about the thread so far.
                rec = assistant.threads.open("default", turn.thread)
                learned = await assistant.sleeper.rethink_thread(rec.id)
                res.sleep_cost += learned.cost_usd if learned else 0.0
    return res


async def load_run(n: int, concurrency: int) -> dict[str, float]:
    """Start `nightowl serve` on a scripted fake student; fire n requests at concurrency."""
    import httpx

    home = Path(tempfile.mkdtemp(prefix="bench-chat-load-"))
    port = 18000 + os.getpid() % 1000
    env = {
        **os.environ,
        "NIGHTOWL_HOME": str(home),
        "NIGHTOWL_MODELS__FAKE__BACKEND": "scripted",
        "NIGHTOWL_MODELS__FAKE__PARAMS__DEFAULT": "The answer is 4.",
        "NIGHTOWL_MODELS__FAKE__PARAMS__DELAY_S": "0.05",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nightowl.cli.main",
            "serve",
            "--student",
            "fake",
            "--no-auth",
            "--no-demos",
            "--port",
            str(port),
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        body = {"messages": [{"role": "user", "content": "2+2?"}]}
        sem = asyncio.Semaphore(concurrency)
        codes: list[int] = []
        lat: list[float] = []
        async with httpx.AsyncClient(timeout=60) as client:

            async def one() -> None:
                async with sem:
                    t0 = time.perf_counter()
                    r = await client.post(f"{url}/v1/chat/completions", json=body)
                    codes.append(r.status_code)
                    if r.status_code == 200:
                        lat.append(time.perf_counter() - t0)

            await asyncio.gather(*[one() for _ in range(n)])
        lat.sort()
        return {
            "requests": n,
            "concurrency": concurrency,
            "ok": codes.count(200),
            "429": codes.count(429),
            "5xx": sum(c >= 500 for c in codes),
            "other": sum(c not in (200, 429) and c < 500 for c in codes),
            "p50_s": statistics.median(lat),
            "p95_s": lat[int(0.95 * (len(lat) - 1))],
        }
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contexts", type=int, default=2)
    p.add_argument("--queries", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--arms", default="teacher,cascade,demos,sleep")
    p.add_argument("--student", default=None)
    p.add_argument("--teacher", default=None)
    p.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint as student")
    p.add_argument("--model", default="smollm2", help="model name at --base-url")
    p.add_argument("--n", type=int, default=3)
    p.add_argument("--tau", type=float, default=0.67)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--load", type=int, default=0, help="run the load test with N requests")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--out", default="bench/results/chat.json")
    args = p.parse_args()
    meta = {"machine": platform.processor() or platform.machine(), "loadavg": os.getloadavg()}
    if args.load:
        out = asyncio.run(load_run(args.load, args.concurrency))
        print(json.dumps({**out, **meta}))
        return
    threads = workload(args.contexts, args.queries, args.repeats)
    rows = []
    for arm in args.arms.split(","):
        res = asyncio.run(run_arm(arm, threads, args))
        rows.append(res.row())
        print(json.dumps(rows[-1]), flush=True)
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(
            "| "
            + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values())
            + " |"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "args": vars(args), **meta}, indent=1))


if __name__ == "__main__":
    main()

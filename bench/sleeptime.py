"""Sleep-time compute on Stateful GSM: accuracy vs test-time tokens, cost vs queries/context.

For each GSM-Symbolic context (see `nightowl.sleeptime.gsm`): think ahead once (the
rethink loop writes c'), then answer every query at each test-time budget under each
condition: ``none`` (c only: ordinary test-time compute), ``with`` (c + c') and
``instead`` (c' only). Prints two tables and writes JSON:

1. accuracy and mean test-time tokens per (condition, budget);
2. cost per query vs queries per context: sleep-time tokens are billed at the model's
   (batch) price and amortised over Q queries; test-time tokens are billed at ``t``
   times that price (``--t``, 10 by default as in Lin et al., 2025). Q values above the
   number of measured queries per context reuse the measured mean per-query cost.

Runs on the embedded model by default (``--model smollm2``) or on any
OpenAI-compatible endpoint (``--base-url http://127.0.0.1:8000/v1 --model NAME``).

    python bench/sleeptime.py --contexts 4 --budgets low,mid,high
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from nightowl.config import ModelSpec, Prices, load_settings  # noqa: E402
from nightowl.sleeptime.answer import AnswerBudget  # noqa: E402
from nightowl.sleeptime.gsm import is_correct, load_stateful_gsm  # noqa: E402
from nightowl.sleeptime.idle import AlwaysIdle  # noqa: E402
from nightowl.sleeptime.service import SleepService  # noqa: E402
from nightowl.storage import open_db  # noqa: E402

#: bench budgets: same verbosity levels as `nightowl sleep ask`, smaller caps so the
#: embedded CPU model finishes in minutes (override with --max-tokens)
DEFAULT_CAPS = {"low": 16, "mid": 48, "high": 128}
INSTRUCTIONS = {
    "low": "Reply with only the final answer, no explanation.",
    "mid": "Think briefly (one or two lines), then answer.",
    "high": "Think step by step, then give the answer.",
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contexts", type=int, default=4)
    p.add_argument("--queries", type=int, default=3, help="queries per context (>= 3)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--budgets", default="low,mid,high")
    p.add_argument("--max-tokens", default="", help="caps, e.g. 16,48,128 (per budget)")
    p.add_argument("--conditions", default="none,with", help="none,with,instead")
    p.add_argument("--rounds", type=int, default=2, help="rethink rounds")
    p.add_argument("--round-tokens", type=int, default=128)
    p.add_argument("--drafts", type=int, default=1)
    p.add_argument("--t", type=float, default=10.0, help="test-time price multiplier")
    p.add_argument("--qpc", default="1,2,3,5,10", help="queries per context for the cost table")
    p.add_argument("--model", default="smollm2", help="registry name, or served model name")
    p.add_argument("--base-url", default="", help="OpenAI-compatible endpoint (else registry)")
    p.add_argument("--api-key-env", default="")
    p.add_argument("--price-in", type=float, default=None, help="USD / 1M input tokens")
    p.add_argument("--price-out", type=float, default=None, help="USD / 1M output tokens")
    p.add_argument("--out", default="bench/results/sleeptime.json")
    return p.parse_args()


def build_service(args: argparse.Namespace, home: Path) -> tuple[SleepService, str]:
    name = "bench-endpoint" if args.base_url else args.model
    sleep = {
        "model": name,
        "max_rounds": args.rounds,
        "round_max_tokens": args.round_tokens,
        "token_budget": args.rounds * args.round_tokens * max(args.drafts, 1) * 2,
        "drafts": args.drafts,
    }
    settings = load_settings(home=home, database_url=f"sqlite:///{home / 'bench.db'}", sleep=sleep)
    if args.base_url:
        params = {"base_url": args.base_url, "model": args.model}
        if args.api_key_env:
            params["api_key_env"] = args.api_key_env
        settings.models[name] = ModelSpec(backend="openai", params=params)
    spec = settings.model(name)
    prices = spec.prices
    if args.price_in is not None or args.price_out is not None:
        prices = Prices(
            input=args.price_in if args.price_in is not None else prices.input,
            output=args.price_out if args.price_out is not None else prices.output,
        )
    settings.models[name] = spec.model_copy(update={"prices": prices})
    svc = SleepService(settings, db=open_db(settings), probe=AlwaysIdle())
    return svc, name


async def run(args: argparse.Namespace) -> dict:
    console = Console()
    budget_names = [b for b in args.budgets.split(",") if b]
    caps = [int(x) for x in args.max_tokens.split(",")] if args.max_tokens else None
    budgets = [
        AnswerBudget(
            name=b,
            max_tokens=caps[i] if caps else DEFAULT_CAPS[b],
            instruction=INSTRUCTIONS[b],
        )
        for i, b in enumerate(budget_names)
    ]
    conditions = [c for c in args.conditions.split(",") if c]
    contexts = load_stateful_gsm(args.contexts, seed=args.seed, max_queries=args.queries)
    home = Path(tempfile.mkdtemp(prefix="nightowl-bench-sleep-"))
    svc, name = build_service(args, home)
    prices = svc.prices(name)
    config = svc.sleep.generator()
    ask_run = svc.ledger.start_run("bench sleeptime answers", "bench", vars(args))
    sleep_rows, answer_rows = [], []
    n_answers = sum(len(c.queries[: args.queries]) for c in contexts) * len(budgets)
    n_answers *= len(conditions)
    t0 = time.perf_counter()
    with Progress(console=console, transient=True) as bar:
        task_s = bar.add_task("sleep-time (rethink)", total=len(contexts))
        task_a = bar.add_task("test-time (answers)", total=n_answers)
        for gc in contexts:
            ctx = svc.store.add_context(gc.context, name=gc.id)
            started = time.perf_counter()
            outcome = await svc.learn(ctx.id, config)
            learned = svc.store.learned_for(ctx.id)[0]
            sleep_rows.append(
                {
                    "context": gc.id,
                    "rounds": outcome.rounds,
                    "stop_reason": outcome.stop_reason,
                    "prompt_tokens": learned.prompt_tokens,
                    "completion_tokens": learned.completion_tokens,
                    "cost_usd": learned.cost_usd,
                    "seconds": time.perf_counter() - started,
                    "learned_chars": len(learned.text),
                    "learned_text": learned.text,
                }
            )
            bar.advance(task_s)
            for qi, q in enumerate(gc.queries[: args.queries]):
                for b in budgets:
                    for cond in conditions:
                        res = await svc.ask(
                            ctx.id,
                            q.text,
                            budget=b,
                            mode="with" if cond == "none" else cond,
                            use_learned=cond != "none",
                            record=False,
                            run_id=ask_run,
                        )
                        answer_rows.append(
                            {
                                "context": gc.id,
                                "query": qi,
                                "kind": q.kind,
                                "budget": b.name,
                                "condition": cond,
                                "used_learned": res.used_learned,
                                "correct": is_correct(res.text, q.answer),
                                "expected": q.answer,
                                "reply": res.text[:300],
                                "prompt_tokens": res.prompt_tokens,
                                "completion_tokens": res.completion_tokens,
                                "cost_usd": res.cost_usd,
                            }
                        )
                        bar.advance(task_a)
    wall = time.perf_counter() - t0
    return summarise(
        args, console, name, prices, budgets, conditions, sleep_rows, answer_rows, wall
    )


def summarise(args, console, name, prices, budgets, conditions, sleep_rows, answer_rows, wall):  # type: ignore[no-untyped-def]
    def mean(xs: list[float]) -> float:
        return statistics.fmean(xs) if xs else 0.0

    acc_rows = []
    table = Table(title=f"Stateful GSM, {name}: accuracy vs test-time tokens")
    for col in ("condition", "budget", "max tok", "n", "accuracy", "completion tok", "prompt tok"):
        table.add_column(col, justify="right" if col not in ("condition", "budget") else "left")
    for cond in conditions:
        for b in budgets:
            rows = [r for r in answer_rows if r["condition"] == cond and r["budget"] == b.name]
            acc = mean([float(r["correct"]) for r in rows])
            comp = mean([r["completion_tokens"] for r in rows])
            prompt = mean([r["prompt_tokens"] for r in rows])
            acc_rows.append(
                {
                    "condition": cond,
                    "budget": b.name,
                    "max_tokens": b.max_tokens,
                    "n": len(rows),
                    "accuracy": acc,
                    "completion_tokens": comp,
                    "prompt_tokens": prompt,
                }
            )
            table.add_row(
                cond,
                b.name,
                str(b.max_tokens),
                str(len(rows)),
                f"{acc:.1%}",
                f"{comp:.1f}",
                f"{prompt:.1f}",
            )
    console.print(table)

    # cost per query vs queries per context
    qpcs = [int(x) for x in args.qpc.split(",") if x]
    sleep_cost = mean(
        [prices.cost(r["prompt_tokens"], 0, r["completion_tokens"]) for r in sleep_rows]
    )
    cost_rows = []
    ctable = Table(
        title=f"cost per query (USD x 1e6) vs queries per context; test-time at {args.t:g}x price"
    )
    ctable.add_column("condition")
    ctable.add_column("budget")
    for q in qpcs:
        ctable.add_column(f"Q={q}", justify="right")
    for cond in conditions:
        for b in budgets:
            rows = [r for r in answer_rows if r["condition"] == cond and r["budget"] == b.name]
            test = mean(
                [args.t * prices.cost(r["prompt_tokens"], 0, r["completion_tokens"]) for r in rows]
            )
            per_q = {q: test + (sleep_cost / q if cond != "none" else 0.0) for q in qpcs}
            cost_rows.append({"condition": cond, "budget": b.name, "cost_per_query": per_q})
            ctable.add_row(cond, b.name, *[f"{per_q[q] * 1e6:.1f}" for q in qpcs])
    console.print(ctable)
    sleep_tok = mean([r["completion_tokens"] for r in sleep_rows])
    console.print(
        f"sleep-time per context: {sleep_tok:.0f} completion + "
        f"{mean([r['prompt_tokens'] for r in sleep_rows]):.0f} prompt tokens, "
        f"{mean([r['seconds'] for r in sleep_rows]):.1f}s, ${sleep_cost:.6f} at batch price; "
        f"wall {wall:.0f}s"
    )
    return {
        "model": name,
        "args": vars(args),
        "prices_per_million": prices.model_dump(),
        "machine": {"platform": platform.platform(), "threads": os.environ.get("NIGHTOWL_THREADS")},
        "wall_s": wall,
        "accuracy": acc_rows,
        "cost_per_query": cost_rows,
        "sleep": sleep_rows,
        "answers": answer_rows,
    }


def main() -> None:
    args = parse_args()
    result = asyncio.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

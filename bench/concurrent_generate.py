"""Benchmark concurrent generations on the in-process backend: 1 vs 4 at once.

Four different prompts (greedy, unseeded, 24 new tokens each), sent to one
`TransformersBackend`:
- sequential: one after another (each alone: prefix-cached single-request path);
- 4 concurrent, batching on: the micro-batcher decodes them in one left-padded batch;
- 4 concurrent, batching off (``max_batch=1``): they queue behind the model lock.
Reps alternate the three arms so drifting machine load hits all of them.

Usage: NIGHTOWL_THREADS=1 python bench/concurrent_generate.py [--reps 2] [--out PATH]
Writes bench/results/concurrent_generate.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("NIGHTOWL_THREADS", "1"))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from nightowl.config import load_settings  # noqa: E402
from nightowl.llm.base import GenerationRequest  # noqa: E402
from nightowl.llm.dtype import cpu_model  # noqa: E402
from nightowl.llm.hf_weights import resolve_weights  # noqa: E402
from nightowl.llm.transformers import TransformersBackend  # noqa: E402

PROMPTS = (
    "Observation: You are in the kitchen. You see a fridge.\nThought:",
    "Observation: You are in the garden. A path leads west.\nThought:",
    "Observation: You are in the corridor. A door leads south.\nThought:",
    "Observation: You are in the pantry. There is a coin here.\nThought:",
)
NEW_TOKENS = 24


def requests() -> list[GenerationRequest]:
    return [GenerationRequest(prompt=p, max_tokens=NEW_TOKENS) for p in PROMPTS]


async def sequential(b: TransformersBackend) -> tuple[float, int]:
    t = time.perf_counter()
    toks = 0
    for r in requests():
        toks += (await b.generate(r)).usage.completion_tokens
    return time.perf_counter() - t, toks


async def concurrent(b: TransformersBackend) -> tuple[float, int]:
    t = time.perf_counter()
    results = await asyncio.gather(*(b.generate(r) for r in requests()))
    return time.perf_counter() - t, sum(r.usage.completion_tokens for r in results)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "concurrent_generate.json")
    )
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    threads = int(os.environ.get("NIGHTOWL_THREADS", "1"))
    directory, gguf = resolve_weights(dict(load_settings().model("smollm2").params))

    def build(max_batch: int) -> TransformersBackend:
        return TransformersBackend(
            name="smollm2", directory=directory, gguf_file=gguf, dtype="float32",
            threads=threads, max_batch=max_batch,
        ).load()  # fmt: skip

    batched, unbatched = build(8), build(1)  # same weights, loaded once
    load_start = os.getloadavg()
    await sequential(batched)  # warm-up
    arms: dict[str, list[tuple[float, int]]] = {"sequential": [], "4 concurrent, batched": [],
                                                "4 concurrent, batching off": []}  # fmt: skip
    for _ in range(args.reps):
        arms["sequential"].append(await sequential(batched))
        arms["4 concurrent, batched"].append(await concurrent(batched))
        arms["4 concurrent, batching off"].append(await concurrent(unbatched))
    res = {
        "machine": {"cpu": cpu_model(), "threads": threads, "torch": torch.__version__,
                    "loadavg_start": load_start, "loadavg_end": os.getloadavg()},  # fmt: skip
        "new_tokens": NEW_TOKENS,
        "batch_sizes": batched.batch_sizes,
        "arms": {
            k: {"p50_s": statistics.median(s for s, _ in v), "tokens": v[0][1], "raw": v}
            for k, v in arms.items()
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    m = res["machine"]
    load = f"load {m['loadavg_start'][0]:.1f} → {m['loadavg_end'][0]:.1f}"
    t = Table(
        title=f"4 generations x {NEW_TOKENS} tokens, smollm2 fp32, {threads} thread(s), "
        f"{m['cpu']} ({load})"
    )
    for col in ("arm", "wall p50", "gen tok/s", "vs sequential"):
        t.add_column(col, justify="right" if col != "arm" else "left")
    base = res["arms"]["sequential"]["p50_s"]
    for k, v in res["arms"].items():
        t.add_row(k, f"{v['p50_s']:.2f} s", f"{v['tokens'] / v['p50_s']:.1f}",
                  f"{base / v['p50_s']:.2f}x")  # fmt: skip
    Console().print(t)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""Do cold, prefix-cached, batched and one-at-a-time scores agree? Old paths vs new, per dtype.

For each dtype (float32, and bfloat16 -- emulated where the CPU has no native bf16, so
slower but the same arithmetic), the student scores 5 actions after a ~110-token agent
prompt through every path the backend has, and the table reports the largest gap to the
cold batched score, side by side for:

- ``old``: reuse a cached prefix at any token, rows unpadded (nightowl before the fix);
- ``new``: prompts prefilled in `PREFILL_BLOCK`-token blocks at fixed positions, a cached
  prefix reused up to its last whole block, rows padded to `ROW_MULTIPLE` in reduced
  precision (nightowl.llm._prefix_cache, nightowl.llm._hf_scoring).

Also the gap to a plain one-pass forward over prompt + action (a differently shaped
computation: in bf16 it differs by bf16 rounding alone), and the time of a cold and a
next-step scoring call on each path. Prints a table and writes bench/results/score_paths.json.

Usage: NIGHTOWL_THREADS=1 python bench/score_paths.py [--dtypes float32,bfloat16] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from nightowl.config import load_settings  # noqa: E402
from nightowl.llm import _hf_scoring, _prefix_cache  # noqa: E402
from nightowl.llm.dtype import NATIVE_BF16_FLAGS, cpu_flags, cpu_model  # noqa: E402
from nightowl.llm.hf_weights import resolve_weights  # noqa: E402
from nightowl.llm.transformers import TransformersBackend  # noqa: E402

HEAD = (
    "You are an agent in a text game. Choose the next action.\n\nExample:\n"
    "Goal: find the coin.\nObservation: You are in the kitchen. A door leads north.\n"
    "Action: go north\nObservation: You are in the hallway.\nAction: take coin\n\n"
)
BASE = HEAD + "Goal: find the coin.\nObservation: You are in the kitchen.\nAction: go north\n"
GROWN = BASE + "Observation: You are in the pantry. There is a shelf and a door east.\nAction:"
NEXT = GROWN + " go east\nObservation: You are in the garden. A path leads west.\nAction:"
ACTIONS = [" go south\n", " take coin\n", " go east\n", " open the wooden door\n", " look\n"]


def score(b: TransformersBackend, p: list[int], cs: list[list[int]], *, old: bool,
          chunk: int | None = None) -> list[float]:
    loaded = b._loaded()
    _prefix_cache.PREFILL_BLOCK = 1 if old else NEW_BLOCK
    try:
        with loaded.lock:
            per_token, _ = _hf_scoring.score_batched(
                loaded.model, loaded.cache_kw, loaded.prefixes, p, cs, b._pad_id,
                chunk_tokens=chunk, row_multiple=1 if old else loaded.row_multiple,
                batch_rows=True if old else loaded.batch_rows,
            )  # fmt: skip
    finally:
        _prefix_cache.PREFILL_BLOCK = NEW_BLOCK
    return [sum(t) for t in per_token]


def plain(b: TransformersBackend, p: list[int], c: list[int]) -> float:
    with b.lock, torch.inference_mode():
        logits = b.model(input_ids=torch.tensor([p + c])).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    return sum(logp[len(p) + i - 1, t].item() for i, t in enumerate(c))


def gaps(b: TransformersBackend, old: bool) -> dict[str, float]:
    clear = b._loaded().prefixes.clear
    p, base = b.encode(GROWN), b.encode(BASE)
    cs = [b.encode(a) for a in ACTIONS]
    clear()
    cold = score(b, p, cs, old=old)
    paths: dict[str, list[float]] = {}
    clear()
    score(b, base, [cs[0]], old=old)
    paths["prefix-cached"] = score(b, p, cs, old=old)
    clear()
    paths["one at a time"] = [score(b, p, [c], old=old)[0] for c in cs]
    clear()
    paths["in pairs"] = score(b, p, cs[:2], old=old) + score(b, p, cs[2:], old=old)
    paths["plain forward"] = [plain(b, p, c) for c in cs]
    return {k: max(abs(x - y) for x, y in zip(cold, v, strict=True)) for k, v in paths.items()}


def timings(b: TransformersBackend, old: bool, reps: int) -> dict[str, float]:
    clear = b._loaded().prefixes.clear
    cs = [b.encode(a) for a in ACTIONS]
    p, nxt = b.encode(GROWN), b.encode(NEXT)
    cold_s, next_s = [], []
    for _ in range(reps):
        clear()
        t = time.perf_counter()
        score(b, p, cs, old=old)
        cold_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        score(b, nxt, cs, old=old)
        next_s.append(time.perf_counter() - t)
    return {"cold_s": statistics.median(cold_s), "next_step_s": statistics.median(next_s)}


NEW_BLOCK = _prefix_cache.PREFILL_BLOCK


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="bench/results/score_paths.json")
    args = ap.parse_args()
    threads = int(os.environ.get("NIGHTOWL_THREADS", "1"))
    directory, gguf = resolve_weights(dict(load_settings().model("smollm2").params))
    flags = sorted(set(NATIVE_BF16_FLAGS) & cpu_flags())
    machine = {"cpu": cpu_model(), "native_bf16_flags": flags, "threads": threads,
               "torch": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability(),
               "load_1min": os.getloadavg()[0]}
    rows = []
    for dtype in args.dtypes.split(","):
        b = TransformersBackend(name=f"smollm2-{dtype}", directory=directory, gguf_file=gguf,
                                dtype=dtype, threads=threads).load()
        for old in (True, False):
            row = {"dtype": dtype, "paths": "old" if old else "new", **gaps(b, old),
                   **timings(b, old, args.reps)}
            row["batch_rows"] = b._loaded().batch_rows
            rows.append(row)
            print(json.dumps(row), flush=True)
    t = Table(title=f"score paths vs cold batched (max |gap| nats, 5 actions) -- {machine['cpu']}"
                    f" {machine['capability']}, bf16 flags {flags or 'none'}, {threads} thread(s),"
                    f" load {machine['load_1min']:.1f}")
    for col in ("dtype", "paths", "cached", "1-by-1", "pairs", "plain fwd", "cold s", "next s"):
        t.add_column(col, justify="right" if col not in ("dtype", "paths") else "left")
    for r in rows:
        t.add_row(r["dtype"], r["paths"], f"{r['prefix-cached']:.2g}", f"{r['one at a time']:.2g}",
                  f"{r['in pairs']:.2g}", f"{r['plain forward']:.3f}", f"{r['cold_s']:.2f}",
                  f"{r['next_step_s']:.2f}")
    Console(width=100).print(t)
    Path(args.out).write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

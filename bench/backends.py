"""Benchmark the embedded model backend (SmolLM2-135M-Instruct, transformers on CPU).

Measures, in one process and one run:
- load time (GGUF de-quantization, or the converted safetensors copy when cached);
- prompt tok/s: one prefill forward over a ~500-token prompt (median of 3);
- generation tok/s: greedy decoding of exactly 64 new tokens (median of 2);
- n=4 samples in one batched `generate` call vs 4 sequential n=1 calls (same prompt,
  same max_tokens, temperature 0.8), alternated twice, with the wall-time ratio;
- float32 vs bfloat16: prefill and decode speed, and how far bfloat16 moves the
  log-probabilities used for exact choice scoring.

Usage: NIGHTOWL_THREADS=1 python bench/backends.py [--no-dtype-compare] [--out PATH]
Writes bench/results/backends.json and prints a rich table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
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
from nightowl.llm.base import ChatMessage, GenerationRequest  # noqa: E402
from nightowl.llm.hf_weights import converted_dir, resolve_weights  # noqa: E402
from nightowl.llm.transformers import TransformersBackend  # noqa: E402

PASSAGE = (
    "The kitchen has a wooden table with a red apple, a knife and a cookbook on it. "
    "To the north is a corridor; the fridge in the corner is closed. "
)
SAMPLING_PROMPT = (
    "You are in a small kitchen. There is a closed fridge, a table with an apple and a "
    "knife, and a door to the north. Your goal is to cook a simple meal. "
    "Describe, step by step, what you would do first and why."
)


def median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def prefill_and_decode(backend: TransformersBackend) -> dict[str, float]:
    tok, model = backend.tokenizer, backend.model
    ids = tok(PASSAGE * 40, add_special_tokens=False)["input_ids"][:500]
    x = torch.tensor([ids])
    short = torch.tensor(
        [tok("Once upon a time, in a small village,", add_special_tokens=False)["input_ids"]]
    )
    with backend.lock, torch.inference_mode():
        model(x[:, :32])  # warm-up
        prefill_s = median_time(lambda: model(x), 3)

        def decode() -> None:
            model.generate(
                input_ids=short, attention_mask=torch.ones_like(short), max_new_tokens=64,
                min_new_tokens=64, do_sample=False, pad_token_id=tok.eos_token_id,
            )  # fmt: skip

        model.generate(input_ids=short, max_new_tokens=4, do_sample=False,
                       pad_token_id=tok.eos_token_id)  # fmt: skip
        prefill_short = median_time(lambda: model(short), 3)
        decode_s = median_time(decode, 2)
    return {
        "prefill_tokens": len(ids),
        "prefill_s": prefill_s,
        "prompt_tok_s": len(ids) / prefill_s,
        "decode_new_tokens": 64,
        "decode_s": decode_s,
        "gen_tok_s": 64 / max(decode_s - prefill_short, 1e-9),
    }


async def batched_vs_sequential(backend: TransformersBackend, max_tokens: int) -> dict:
    msgs = (ChatMessage(role="user", content=SAMPLING_PROMPT),)

    def req(n: int, seed: int) -> GenerationRequest:
        return GenerationRequest(
            messages=msgs, n=n, max_tokens=max_tokens, temperature=0.8, seed=seed
        )

    await backend.generate(req(1, 0))  # warm-up
    batched, sequential = [], []
    for rep in range(2):  # alternate so drifting machine load hits both arms
        t = time.perf_counter()
        r = await backend.generate(req(4, 100 + rep))
        batched.append((time.perf_counter() - t, r.usage.completion_tokens))
        t = time.perf_counter()
        toks = 0
        for i in range(4):
            r = await backend.generate(req(1, 200 + 10 * rep + i))
            toks += r.usage.completion_tokens
        sequential.append((time.perf_counter() - t, toks))
    b_s = statistics.median(s for s, _ in batched)
    s_s = statistics.median(s for s, _ in sequential)
    b_tok = statistics.median(t for _, t in batched)
    s_tok = statistics.median(t for _, t in sequential)
    return {
        "prompt_tokens": r.usage.prompt_tokens,
        "max_tokens": max_tokens,
        "batched_n4_s": b_s,
        "sequential_4x1_s": s_s,
        "speedup": s_s / b_s,
        "batched_completion_tokens": b_tok,
        "sequential_completion_tokens": s_tok,
        "batched_tok_s": b_tok / b_s,
        "sequential_tok_s": s_tok / s_s,
        "runs": {"batched": batched, "sequential": sequential},
    }


async def logprob_drift(a: TransformersBackend, b: TransformersBackend) -> dict:
    prompt = "Observation: You are in the kitchen. You see a closed fridge and a table.\nAction:"
    conts = [" open fridge", " go north", " take apple from table", " look", " inventory",
             " examine table", " close fridge", " eat apple"]  # fmt: skip
    sa = await a.score_continuations(prompt, conts)
    sb = await b.score_continuations(prompt, conts)
    diffs = [abs(x - y) for x, y in zip(sa.logprobs, sb.logprobs, strict=True)]
    rank_a = sorted(range(len(conts)), key=lambda i: -sa.logprobs[i])
    rank_b = sorted(range(len(conts)), key=lambda i: -sb.logprobs[i])
    margin = lambda s: sorted(s, reverse=True)[0] - sorted(s, reverse=True)[1]  # noqa: E731
    return {
        "max_abs_diff_nats": max(diffs),
        "mean_abs_diff_nats": statistics.mean(diffs),
        "same_argmax": rank_a[0] == rank_b[0],
        "same_ranking": rank_a == rank_b,
        "margin_float32": margin(sa.logprobs),
        "margin_bfloat16": margin(sb.logprobs),
    }


def build(dtype: str, threads: int) -> TransformersBackend:
    spec = load_settings().model("smollm2")
    directory, gguf_file = resolve_weights(dict(spec.params))
    return TransformersBackend(
        name=f"smollm2-{dtype}", directory=directory, gguf_file=gguf_file, dtype=dtype,
        threads=threads,
    ).load()  # fmt: skip


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "backends.json"))
    ap.add_argument("--max-tokens", type=int, default=48, help="for the n=4 comparison")
    ap.add_argument("--no-dtype-compare", action="store_true")
    args = ap.parse_args()
    threads = int(os.environ.get("NIGHTOWL_THREADS", "1"))
    spec = load_settings().model("smollm2")
    directory, gguf_file = resolve_weights(dict(spec.params))
    conv = converted_dir(directory, gguf_file) if gguf_file else None
    load_source = "converted safetensors cache" if conv and conv.exists() else "GGUF (de-quantized)"

    fp32 = build("float32", threads)
    res: dict = {
        "model": "smollm2 (SmolLM2-135M-Instruct Q4_1 GGUF, transformers)",
        "machine": {
            "cpus": os.cpu_count(),
            "threads": threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "loadavg_start": os.getloadavg(),
        },
        "load": {"seconds": fp32.load_s, "source": load_source},
        "float32": prefill_and_decode(fp32),
    }
    res["n4"] = await batched_vs_sequential(fp32, args.max_tokens)
    if not args.no_dtype_compare:
        bf16 = build("bfloat16", threads)
        res["bfloat16"] = prefill_and_decode(bf16)
        res["bfloat16"]["load_s"] = bf16.load_s
        res["bfloat16_vs_float32_scores"] = await logprob_drift(fp32, bf16)
    res["machine"]["loadavg_end"] = os.getloadavg()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")

    f, n4 = res["float32"], res["n4"]
    t = Table(title=f"embedded backend: smollm2, {threads} thread(s), float32")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row(f"load ({load_source})", f"{res['load']['seconds']:.1f} s")
    t.add_row(f"prompt tok/s (prefill {f['prefill_tokens']} tokens)", f"{f['prompt_tok_s']:.0f}")
    t.add_row("generation tok/s (greedy, 64 new tokens)", f"{f['gen_tok_s']:.1f}")
    t.add_row(
        f"n=4 batched, one call ({n4['max_tokens']} max tokens, T=0.8)",
        f"{n4['batched_n4_s']:.2f} s ({n4['batched_completion_tokens']:.0f} tok)",
    )
    t.add_row(
        "4 sequential n=1 calls (same prompt, max tokens)",
        f"{n4['sequential_4x1_s']:.2f} s ({n4['sequential_completion_tokens']:.0f} tok)",
    )
    t.add_row("sequential / batched wall time", f"{n4['speedup']:.2f}x")
    t.add_row(
        "throughput batched vs sequential",
        f"{n4['batched_tok_s']:.1f} vs {n4['sequential_tok_s']:.1f} tok/s",
    )
    if "bfloat16" in res:
        b, d = res["bfloat16"], res["bfloat16_vs_float32_scores"]
        t.add_row("bfloat16 prompt tok/s", f"{b['prompt_tok_s']:.0f}")
        t.add_row("bfloat16 generation tok/s", f"{b['gen_tok_s']:.1f}")
        t.add_row(
            "bfloat16 choice-score drift (max / mean |Δ log p|)",
            f"{d['max_abs_diff_nats']:.3f} / {d['mean_abs_diff_nats']:.3f} nats",
        )
        t.add_row(
            "bfloat16 same argmax / same ranking", f"{d['same_argmax']} / {d['same_ranking']}"
        )
    t.add_row("load average start → end", f"{res['machine']['loadavg_start'][0]:.1f} → "
              f"{res['machine']['loadavg_end'][0]:.1f}")  # fmt: skip
    Console().print(t)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

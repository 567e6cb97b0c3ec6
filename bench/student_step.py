"""Benchmark the embedded student step (SmolLM2-135M, transformers on CPU), fp32 vs bf16.

One student step of the demo = one ``choices=`` call over the valid actions after a
~230-token prompt (instructions, one retrieved demo, the current observation). Measured
side by side in one process, the two dtypes interleaved rep by rep so drifting machine
load hits both alike:

- prefill rate: one plain forward over the whole prompt (prompt tokens / second);
- generation rate: greedy decoding of 32 new tokens after a short prompt;
- student step, cold: prefix cache empty, all actions scored in one batched forward;
- student step, next step: the prefix cache holds the previous step's prompt, which
  shares the instructions and demo but not the observation (what an episode does);
- one-at-a-time baseline (first rep only): each action scored by its own forward over
  prompt+action;
- the prefill bound: prompt tokens / prefill rate (a step cannot be faster than reading
  its prompt once, unless a prefix is reused);
- how far bf16 moves the action log-probabilities.

Usage: NIGHTOWL_THREADS=1 python bench/student_step.py [--reps 5] [--out PATH]
Writes bench/results/student_step.json and prints a table.
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
from nightowl.llm.base import GenerationRequest  # noqa: E402
from nightowl.llm.dtype import choose_dtype, cpu_flags, cpu_model  # noqa: E402
from nightowl.llm.hf_weights import resolve_weights  # noqa: E402
from nightowl.llm.transformers import TransformersBackend  # noqa: E402

INSTRUCTIONS = (
    "You are an agent playing a text adventure. Each turn you see an observation and "
    "the valid actions; reply with exactly one action from the list, nothing else. "
    "Explore rooms you have not seen, pick up the coin as soon as you see it."
)
DEMO = (
    "Example of a successful game:\nGoal: find the coin and take it.\n"
    "Observation: You are in the kitchen. You see a closed fridge, an oven and a table. "
    "There is an open door leading north and a closed wooden door leading east.\n"
    "Action: open door to east\nObservation: You open the wooden door. It leads to the "
    "pantry.\nAction: move east\nObservation: You are in the pantry. You see a shelf. "
    "On the floor there is a coin.\nAction: take coin\nObservation: You take the coin. "
    "You win!"
)
OBSERVATIONS = (
    "You are in the corridor. There is a closed door leading south and an open door "
    "leading west. A painting hangs on the wall.",
    "You are in the garden. A gravel path leads west and a hedge blocks the east. "
    "There is a bench here and a watering can next to it.",
    "You are in the laundry room. You see a washing machine and a basket of clothes. "
    "An open door leads north.",
)
ACTIONS = ("move north", "move west", "open door to south", "look around", "inventory")


def step_prompt(observation: str) -> str:
    """A student-step prompt shaped like `PromptBuilder.build` with one demo."""
    acts = ", ".join(sorted(ACTIONS))
    return (
        f"{INSTRUCTIONS}\n\n{DEMO}\n\nGoal: find the coin and take it.\n"
        f"Observation: {observation}\nValid actions: {acts}\nAction:"
    )


def step_request(observation: str) -> GenerationRequest:
    """The student tier's call: choices over the valid actions, 3 votes at T=0.5."""
    return GenerationRequest(
        prompt=step_prompt(observation),
        choices=tuple(f" {a}" for a in ACTIONS),
        stop=("\n",),
        n=3,
        temperature=0.5,
        seed=0,
    )


def timed(fn) -> float:  # noqa: ANN001 - any thunk
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def prefill_s(b: TransformersBackend, ids: list[int]) -> float:
    with b.lock, torch.inference_mode():
        return timed(lambda: b.model(input_ids=torch.tensor([ids])))


def decode_s(b: TransformersBackend, new: int = 32) -> float:
    short = torch.tensor([b.encode("Once upon a time, in a small village,")])
    with b.lock, torch.inference_mode():
        return timed(
            lambda: b.model.generate(
                input_ids=short, attention_mask=torch.ones_like(short), max_new_tokens=new,
                min_new_tokens=new, do_sample=False, pad_token_id=b.tokenizer.eos_token_id,
            )  # fmt: skip
        )


def one_at_a_time_s(b: TransformersBackend, ids: list[int]) -> float:
    """Each action through its own plain forward over prompt + action (no reuse)."""
    conts = [b.encode(f" {a}\n") for a in ACTIONS]

    def run() -> None:
        for c in conts:
            b.model(input_ids=torch.tensor([ids + c]))

    with b.lock, torch.inference_mode():
        return timed(run)


async def step_s(b: TransformersBackend, observation: str, *, cold: bool) -> float:
    if cold:
        b.clear_prefix_cache()
    t = time.perf_counter()
    r = await b.generate(step_request(observation))
    elapsed = time.perf_counter() - t
    if not cold:
        assert r.usage.cached_prompt_tokens > 0, "the next step missed the prefix cache"
    return elapsed


async def drift(a: TransformersBackend, b: TransformersBackend) -> dict[str, float | bool]:
    prompt = step_prompt(OBSERVATIONS[0])
    conts = [f" {x}\n" for x in ACTIONS]
    sa = await a.score_continuations(prompt, conts)
    sb = await b.score_continuations(prompt, conts)
    diffs = [abs(x - y) for x, y in zip(sa.logprobs, sb.logprobs, strict=True)]
    rank = lambda s: sorted(range(len(s)), key=lambda i: -s[i])  # noqa: E731
    return {
        "max_abs_diff_nats": max(diffs),
        "same_ranking": rank(sa.logprobs) == rank(sb.logprobs),
    }


async def measure(dtypes: list[str], reps: int, threads: int) -> dict:
    spec = load_settings().model("smollm2")
    directory, gguf = resolve_weights(dict(spec.params))
    backends = {
        d: TransformersBackend(
            name=f"smollm2-{d}", directory=directory, gguf_file=gguf, dtype=d, threads=threads
        ).load()
        for d in dtypes
    }
    ids = next(iter(backends.values())).encode(step_prompt(OBSERVATIONS[0]))
    raw: dict[str, dict[str, list[float]]] = {
        d: {k: [] for k in ("prefill", "decode", "cold", "next", "single")} for d in dtypes
    }
    for b in backends.values():  # warm-up: first forwards allocate
        await step_s(b, OBSERVATIONS[0], cold=True)
    for rep in range(reps):
        for d, b in backends.items():
            r = raw[d]
            r["prefill"].append(prefill_s(b, ids))
            r["decode"].append(decode_s(b))
            r["cold"].append(await step_s(b, OBSERVATIONS[rep % 3], cold=True))
            # the cache now holds this step's prompt; the next step has another observation
            r["next"].append(await step_s(b, OBSERVATIONS[(rep + 1) % 3], cold=False))
            if rep == 0:  # the slow baseline once (bf16 takes minutes on a loaded AVX2 box)
                r["single"].append(one_at_a_time_s(b, ids))
    out: dict = {"prompt_tokens": len(ids), "actions": len(ACTIONS), "reps": reps, "dtypes": {}}
    for d in dtypes:
        med = {k: statistics.median(v) for k, v in raw[d].items()}
        prefill_rate = len(ids) / med["prefill"]
        prefill_short = len(backends[d].encode("Once upon a time, in a small village,"))
        out["dtypes"][d] = {
            "prompt_tok_s": prefill_rate,
            "gen_tok_s": 32 / med["decode"],
            "prefill_bound_s": len(ids) / prefill_rate,
            "step_cold_p50_s": med["cold"],
            "step_next_p50_s": med["next"],
            "one_at_a_time_p50_s": med["single"],
            "decode_prompt_tokens": prefill_short,
            "raw_s": raw[d],
        }
    if len(dtypes) == 2:
        out["bf16_drift"] = await drift(backends[dtypes[0]], backends[dtypes[1]])
    return out


def render(res: dict) -> Table:
    m = res["machine"]
    t = Table(
        title=f"student step: smollm2, {res['prompt_tokens']}-token prompt, "
        f"{res['actions']} actions, {m['threads']} thread(s), {m['cpu']} "
        f"(load {m['loadavg_start'][0]:.1f} → {m['loadavg_end'][0]:.1f})"
    )
    t.add_column("measure")
    for d in res["dtypes"]:
        t.add_column(d, justify="right")
    rows = [
        ("prompt tok/s (plain prefill)", "prompt_tok_s", "{:.0f}"),
        ("gen tok/s (greedy, 32 new)", "gen_tok_s", "{:.1f}"),
        ("prefill bound (prompt / prefill rate)", "prefill_bound_s", "{:.2f} s"),
        ("student step p50, cold cache (1 batched forward)", "step_cold_p50_s", "{:.2f} s"),
        ("student step p50, next step (demo prefix cached)", "step_next_p50_s", "{:.2f} s"),
        ("one action at a time, no reuse (1 run)", "one_at_a_time_p50_s", "{:.2f} s"),
    ]
    for label, key, fmt in rows:
        t.add_row(label, *(fmt.format(v[key]) for v in res["dtypes"].values()))
    return t


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "student_step.json"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    args = ap.parse_args()
    threads = int(os.environ.get("NIGHTOWL_THREADS", "1"))
    chosen, reason = choose_dtype()
    machine = {
        "cpu": cpu_model(),
        "native_bf16_flags": sorted({"amx_bf16", "avx512_bf16", "bf16"} & cpu_flags()),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "auto_dtype": chosen,
        "auto_reason": reason,
        "loadavg_start": os.getloadavg(),
    }
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    res = await measure(dtypes, args.reps, threads)
    machine["loadavg_end"] = os.getloadavg()
    res = {"machine": machine, **res}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    Console().print(render(res))
    print(f"auto dtype here: {chosen} ({reason})")
    if "bf16_drift" in res:
        d = res["bf16_drift"]
        print(f"bf16 moves action log-probs by up to {d['max_abs_diff_nats']:.3f} nats "
              f"(same ranking: {d['same_ranking']})")  # fmt: skip
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

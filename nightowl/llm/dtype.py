"""Which dtype the in-process model runs in: the one this machine measures faster.

bfloat16 halves the weights' memory traffic, but a CPU without native bf16 arithmetic
converts every operand to float32 and back, so bf16 is *slower* there. Measured with
`bench/student_step.py`: on a 2-core AMD EPYC with AVX2 only a student step took 23.0 s
p50 in bfloat16 vs 4.7 s in float32 (load ~9); on an EPYC with AVX512-BF16, 0.61 s vs
1.25 s. The CPU flags (AMX-BF16, AVX512-BF16, Arm BF16) predicted both, but a new CPU
or torch build may not follow them, so "auto" *measures*: on first use a short timed
probe (`measure_pair`: the student's own layer shape, ~0.2 s) runs a linear layer in
both dtypes, and bfloat16 is chosen only where it is at least `BF16_MARGIN` times
faster. The result is kept per CPU model, torch version and thread count in the model
cache (`dtype-probe.json` beside the converted weights), so later processes read it.
The reason string carries the measured pair and the flags.

bfloat16 moves action log-probabilities by up to ~0.1 nats against float32 (same
ranking, measured); margins calibrated in one dtype are flagged when applied in the
other (`nightowl.distill.calibrate`). An explicit dtype (``params.dtype`` of a registry
entry, ``--student-dtype``) always wins over "auto"; ``NIGHTOWL_DTYPE_PROBE=off``
falls back to the flags alone.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from nightowl.errors import ConfigError

#: /proc/cpuinfo flags that mean native bf16 arithmetic (x86: AMX, AVX512; Arm: BF16)
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")
AUTO = "auto"
KNOWN = (AUTO, "float32", "bfloat16", "float16")
#: bfloat16 must be at least this many times faster than float32 to be chosen
BF16_MARGIN = 1.25
#: seconds the probe spends timing each dtype (after one warm-up call)
PROBE_BUDGET_S = 0.08
PROBE_FILE = "dtype-probe.json"


@dataclass(frozen=True, kw_only=True)
class DtypeProbe:
    """One measurement: seconds per probe call in each dtype, on which machine."""

    float32_s: float
    bfloat16_s: float
    machine: str

    @property
    def speedup(self) -> float:
        """How many times faster bfloat16 ran than float32 (< 1: slower)."""
        return self.float32_s / self.bfloat16_s if self.bfloat16_s > 0 else 0.0


def _cpuinfo_fields(cpuinfo: str | None) -> list[tuple[str, str]]:
    """(lower-case key, value) of each ``key: value`` line of /proc/cpuinfo or ``cpuinfo``."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:  # not Linux: no flags, so "auto" stays on the safe float32
            cpuinfo = ""
    lines = [line.partition(":") for line in cpuinfo.splitlines()]
    return [(key.strip().lower(), value) for key, sep, value in lines if sep]


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU feature flags of this machine (x86 ``flags`` / Arm ``Features`` lines)."""
    wanted = [value for key, value in _cpuinfo_fields(cpuinfo) if key in ("flags", "features")]
    return frozenset(flag for value in wanted for flag in value.split())


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (as /proc/cpuinfo or platform report it)."""
    for key, value in _cpuinfo_fields(cpuinfo):
        if key in ("model name", "cpu model", "hardware"):
            return value.strip()
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def choose_dtype_for(flags: frozenset[str], capability: str) -> tuple[str, str]:
    """The dtype for a CPU with these flags and torch CPU capability, and why."""
    native = sorted(f for f in NATIVE_BF16_FLAGS if f in flags)
    if native:
        return "bfloat16", f"native bf16 on this CPU ({', '.join(native)}; torch {capability})"
    return (
        "float32",
        f"no native bf16 on this CPU (torch capability {capability}, no "
        "amx_bf16/avx512_bf16): bf16 would be emulated and slower",
    )


def probe_threads() -> int:
    """The thread count the model will run with (``NIGHTOWL_THREADS``, default 1)."""
    try:
        return max(1, int(os.environ.get("NIGHTOWL_THREADS", "1")))
    except ValueError:
        return 1


def machine_key(threads: int) -> str:
    """What a probe result is valid for: CPU model, torch version and capability, threads."""
    import torch

    cap = torch.backends.cpu.get_cpu_capability()
    native = ",".join(sorted(f for f in NATIVE_BF16_FLAGS if f in cpu_flags())) or "no bf16 flag"
    return f"{cpu_model()} ({native}) | torch {torch.__version__} {cap} | {threads} thread(s)"


def measure_pair(threads: int = 1, budget_s: float = PROBE_BUDGET_S) -> DtypeProbe:
    """Time one student-shaped linear layer (64 tokens, 576 -> 1536) in both dtypes."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    gen = torch.Generator().manual_seed(0)
    x32 = torch.randn(64, 576, generator=gen)
    w32 = torch.randn(1536, 576, generator=gen) * 0.05
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        per_call: dict[str, float] = {}
        with torch.inference_mode():
            for dt in (torch.float32, torch.bfloat16):
                x, w = x32.to(dt), w32.to(dt)
                F.linear(x, w)  # warm-up: kernel selection, first-touch
                calls, started = 0, time.perf_counter()
                while (elapsed := time.perf_counter() - started) < budget_s or calls < 3:
                    F.linear(x, w)
                    calls += 1
                per_call[str(dt).removeprefix("torch.")] = elapsed / calls
    finally:
        torch.set_num_threads(before)
    return DtypeProbe(
        float32_s=per_call["float32"],
        bfloat16_s=per_call["bfloat16"],
        machine=machine_key(threads),
    )


def choose_by_probe(probe: DtypeProbe, flags: frozenset[str]) -> tuple[str, str]:
    """The dtype a measured pair calls for, and a reason with both numbers and the flags."""
    native = sorted(f for f in NATIVE_BF16_FLAGS if f in flags)
    said = f"native bf16 flags: {', '.join(native)}" if native else "no native bf16 flag"
    pair = (
        f"probe: float32 {probe.float32_s * 1e3:.2f} ms, bfloat16 {probe.bfloat16_s * 1e3:.2f} "
        f"ms ({probe.speedup:.2f}x)"
    )
    if probe.speedup >= BF16_MARGIN:
        return "bfloat16", f"bf16 measured faster here ({pair}; {said})"
    return "float32", f"bf16 not faster here by {BF16_MARGIN}x ({pair}; {said})"


def cached_probe(threads: int) -> DtypeProbe:
    """This machine's probe, from the model cache or measured now (and stored)."""
    from nightowl.llm.hf_weights import model_cache_root

    key = machine_key(threads)
    root = model_cache_root()
    path = None if root is None else root / PROBE_FILE
    known: dict[str, dict[str, float]] = {}
    if path is not None and path.is_file():
        try:
            known = json.loads(path.read_text())
            hit = known.get(key)
            if hit:
                return DtypeProbe(
                    float32_s=float(hit["float32_s"]),
                    bfloat16_s=float(hit["bfloat16_s"]),
                    machine=key,
                )
        except (OSError, ValueError, TypeError, KeyError):
            known = {}  # a damaged file is measured again and rewritten
    probe = measure_pair(threads)
    if path is not None:
        known[key] = {"float32_s": probe.float32_s, "bfloat16_s": probe.bfloat16_s}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
            tmp.replace(path)
        except OSError:
            pass  # a read-only cache only costs the probe again next time
    return probe


@functools.cache
def choose_dtype() -> tuple[str, str]:
    """The dtype "auto" means on this machine, and a one-line reason (cached per process)."""
    import torch

    off = os.environ.get("NIGHTOWL_DTYPE_PROBE", "").strip().lower() in ("0", "off", "no")
    if off:
        return choose_dtype_for(cpu_flags(), torch.backends.cpu.get_cpu_capability())
    return choose_by_probe(cached_probe(probe_threads()), cpu_flags())


def resolve_dtype(requested: str | None) -> tuple[str, str]:
    """An explicit dtype as is ("set explicitly"), or "auto"/None via `choose_dtype`."""
    if requested is None or requested == AUTO:
        return choose_dtype()
    if requested not in KNOWN:
        raise ConfigError(f"unknown dtype {requested!r}; known: {', '.join(KNOWN)}")
    return requested, "set explicitly"


__all__ = [
    "AUTO",
    "BF16_MARGIN",
    "KNOWN",
    "NATIVE_BF16_FLAGS",
    "DtypeProbe",
    "cached_probe",
    "choose_by_probe",
    "choose_dtype",
    "choose_dtype_for",
    "cpu_flags",
    "cpu_model",
    "machine_key",
    "measure_pair",
    "resolve_dtype",
]

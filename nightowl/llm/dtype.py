"""Which dtype the in-process model runs in: the one this machine is fast at.

bfloat16 halves the weights' memory traffic, but a CPU without native bf16 arithmetic
converts every operand to float32 and back, so bf16 is *slower* there. Measured on a
2-core AMD EPYC (AVX2 only, torch 2.13, load ~9; bench/student_step.py): a student step
(5 actions after a 237-token prompt) took 23.0 s p50 in bfloat16 vs 4.7 s in float32,
prefill 9 vs 63 tokens/s. CPUs with
AMX-BF16 or AVX512-BF16 (Intel Sapphire Rapids and later, AMD Zen 4 and later) or the
Arm BF16 extension compute it natively. So "auto" picks bfloat16 only where one of
those flags is present, float32 otherwise; float32 also keeps the log-probabilities
exact against the reference weights (bf16 moves action scores by up to ~0.2 nats).

An explicit dtype (``params.dtype`` of a registry entry) always wins over "auto".
"""

from __future__ import annotations

import functools
from pathlib import Path

from nightowl.errors import ConfigError

#: /proc/cpuinfo flags that mean native bf16 arithmetic (x86: AMX, AVX512; Arm: BF16)
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")
AUTO = "auto"
KNOWN = (AUTO, "float32", "bfloat16", "float16")


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU feature flags of this machine (x86 ``flags`` / Arm ``Features`` lines)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:  # not Linux: no flags, so "auto" stays on the safe float32
            return frozenset()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return frozenset(flags)


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (as /proc/cpuinfo or platform report it)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("model name", "cpu model", "hardware"):
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


@functools.cache
def choose_dtype() -> tuple[str, str]:
    """The dtype "auto" means on this machine, and a one-line reason (cached per process)."""
    import torch

    return choose_dtype_for(cpu_flags(), torch.backends.cpu.get_cpu_capability())


def resolve_dtype(requested: str | None) -> tuple[str, str]:
    """An explicit dtype as is ("set explicitly"), or "auto"/None via `choose_dtype`."""
    if requested is None or requested == AUTO:
        return choose_dtype()
    if requested not in KNOWN:
        raise ConfigError(f"unknown dtype {requested!r}; known: {', '.join(KNOWN)}")
    return requested, "set explicitly"


__all__ = [
    "AUTO",
    "KNOWN",
    "NATIVE_BF16_FLAGS",
    "choose_dtype",
    "choose_dtype_for",
    "cpu_flags",
    "cpu_model",
    "resolve_dtype",
]

"""Where a model's scores come from: dtype, CPU, torch and scoring path, as one record.

Log-probability margins move between dtypes (bf16 vs float32: up to ~0.1 nats on an
action, same ranking) and, before block-aligned scoring, between scoring paths. So a
calibration records the machine its scores were made on (`ScoringMachine`), a run
records the machine it scores on, and `dtype_note` says in one line when a rule
calibrated under one dtype is applied under another.
"""

from __future__ import annotations

from pydantic import BaseModel

from nightowl.llm.base import ModelBackend


class ScoringMachine(BaseModel):
    """The numbers behind a model's scores: which model, dtype, CPU, torch, scoring path."""

    model: str
    backend: str
    dtype: str | None = None
    dtype_reason: str = ""
    cpu: str = ""
    torch: str = ""
    scoring_path: str = ""


def scoring_machine(backend: ModelBackend) -> ScoringMachine:
    """The record for ``backend`` (in-process: its dtype and path; served: the server's)."""
    from nightowl.llm.dtype import cpu_model
    from nightowl.llm.transformers import TransformersBackend

    name = getattr(backend, "name", type(backend).__name__)
    if not isinstance(backend, TransformersBackend):
        return ScoringMachine(
            model=name, backend=type(backend).__name__, scoring_path="the model server's"
        )
    import torch

    from nightowl.llm._hf_scoring import ROW_MULTIPLE
    from nightowl.llm._prefix_cache import PREFILL_BLOCK

    rows = "rows as they are" if backend.dtype == "float32" else f"rows padded to {ROW_MULTIPLE}"
    return ScoringMachine(
        model=name,
        backend="transformers",
        dtype=backend.dtype,
        dtype_reason=backend.dtype_reason,
        cpu=cpu_model(),
        torch=f"{torch.__version__} {torch.backends.cpu.get_cpu_capability()}",
        scoring_path=f"prefill blocks of {PREFILL_BLOCK}, {rows}",
    )


def dtype_note(calibrated: ScoringMachine, now: ScoringMachine) -> str | None:
    """One line when a rule calibrated under one dtype is applied under another, else None."""
    if calibrated.dtype is None or now.dtype is None or calibrated.dtype == now.dtype:
        return None
    return (
        f"calibrated with {calibrated.model} in {calibrated.dtype} on {calibrated.cpu or '?'}; "
        f"this run scores in {now.dtype} on {now.cpu or '?'}: log-prob margins move between "
        "dtypes (up to ~0.1 nats), so the calibrated threshold may not transfer"
    )


__all__ = ["ScoringMachine", "dtype_note", "scoring_machine"]

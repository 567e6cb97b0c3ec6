"""Run model-written code behind an operating-system boundary (see `runner` and docs/sandbox.md)."""

from nightowl.sandbox.runner import (
    SAFE_BUILTIN_NAMES,
    ActionResult,
    Limits,
    Refused,
    Sandbox,
    SandboxError,
    Session,
    check_code,
)

__all__ = [
    "SAFE_BUILTIN_NAMES",
    "ActionResult",
    "Limits",
    "Refused",
    "Sandbox",
    "SandboxError",
    "Session",
    "check_code",
]

"""The scheme of AppWorld scenario variants (`variants`): a variant and its split.

Shared by `variants` (simple_note, todoist; the catalogue) and `_variants_more` (venmo,
spotify). Stdlib only: it runs inside the AppWorld interpreter too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Check = Callable[[dict[str, Any], Any], tuple[bool, str]]
Setup = Callable[[dict[str, Any]], None]
#: variant index -> split
VARIANT_SPLITS = ("train", "train", "train", "dev", "test", "test")
PREFIX = "v-"


def split_of(variant: int) -> str:
    """The split of a variant index: 0-2 train, 3 dev, 4-5 test."""
    if not 0 <= variant < len(VARIANT_SPLITS):
        raise ValueError(f"variant index {variant} out of range 0..{len(VARIANT_SPLITS) - 1}")
    return VARIANT_SPLITS[variant]


@dataclass(frozen=True)
class Variant:
    """One variant before it becomes a `pack.PackTask` (the login step comes first)."""

    instruction: str
    steps: tuple[str, ...]
    check: Check
    setup: Setup | None = None

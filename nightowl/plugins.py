"""Extensions other installed packages register through entry points (metadata only).

Three groups: ``nightowl.envs`` (environments), ``nightowl.backends`` (model backend
kinds) and ``nightowl.presets`` (ladder presets). Each registry reads its group here and
imports a plugin only when that plugin is used.
"""

from __future__ import annotations

import importlib.metadata


def entry_point_targets(group: str) -> dict[str, str]:
    """Name -> ``"module:obj"`` of every entry point in ``group``; imports nothing."""
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=group)}


__all__ = ["entry_point_targets"]

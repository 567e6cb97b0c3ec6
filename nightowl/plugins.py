"""Extensions other installed packages register through entry points (metadata only).

Three groups: ``nightowl.envs`` (environments), ``nightowl.backends`` (model backend
kinds) and ``nightowl.presets`` (ladder presets). Each registry reads its group here and
imports a plugin only when that plugin is used.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any


def entry_point_targets(group: str) -> dict[str, str]:
    """Name -> ``"module:obj"`` of every entry point in ``group``; imports nothing."""
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=group)}


def load_target(target: str) -> Any:
    """The object a ``"module:obj"`` string names (imports the module).

    Raises:
        ImportError, AttributeError, ValueError: it cannot be imported.
    """
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


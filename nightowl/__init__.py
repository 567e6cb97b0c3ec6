"""nightowl: cheap LLM agents via in-context distillation, escalation and sleep-time compute.

The public API (imported lazily, so ``import nightowl`` stays cheap)::

    from nightowl import Nightowl, CollectRequest, RunSpec, select_tasks

    with Nightowl.open() as no:                       # settings from env / nightowl.toml
        no.collect(CollectRequest(env="twx", game="coin", tasks=10))
        ids = select_tasks("twx", "test", 5, game="coin")
        summary = no.run(RunSpec(name="cascade", env="twx", split="test", task_ids=ids))
        print(summary.success_rate, summary.cost_per_episode, no.report(summary.run_id))

Async code awaits `collect_demos` / `run_tasks` / `calibrate_rules` directly; sleep-time
compute is ``no.sleep`` (`SleepService`: ``add``/``learn``/``ask``). See README "Python API"
and ``examples/``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version as _v
from typing import TYPE_CHECKING, Any

__version__ = _v("nightowl")

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # composition root and use cases
    "Nightowl": "nightowl.app",
    "RunSpec": "nightowl.app",
    "RunSummary": "nightowl.app",
    "run_tasks": "nightowl.app",
    "CollectRequest": "nightowl.app",
    "CollectResult": "nightowl.app",
    "collect_demos": "nightowl.app",
    "CalibrateOptions": "nightowl.app",
    "CalibrationReport": "nightowl.app",
    "calibrate_rules": "nightowl.app",
    "ShowcaseOptions": "nightowl.app",
    "run_showcase": "nightowl.app",
    # configuration, budgets, tasks, ledger, errors
    "Settings": "nightowl.config",
    "load_settings": "nightowl.config",
    "get_settings": "nightowl.config",
    "EpisodeBudget": "nightowl.agent.budget",
    "select_tasks": "nightowl.envs.registry",
    "Ledger": "nightowl.ledger",
    "RunReport": "nightowl.ledger",
    "SleepService": "nightowl.sleeptime.service",
    # chat assistants
    "Assistant": "nightowl.chat",
    "AssistantConfig": "nightowl.chat",
    "ChatReply": "nightowl.chat",
    "NightowlError": "nightowl.errors",
    "UserError": "nightowl.errors",
}

__all__ = [
    "Assistant",
    "AssistantConfig",
    "CalibrateOptions",
    "CalibrationReport",
    "ChatReply",
    "CollectRequest",
    "CollectResult",
    "EpisodeBudget",
    "Ledger",
    "Nightowl",
    "NightowlError",
    "RunReport",
    "RunSpec",
    "RunSummary",
    "Settings",
    "ShowcaseOptions",
    "SleepService",
    "UserError",
    "__version__",
    "calibrate_rules",
    "collect_demos",
    "get_settings",
    "load_settings",
    "run_showcase",
    "run_tasks",
    "select_tasks",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nightowl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs
    from nightowl.agent.budget import EpisodeBudget
    from nightowl.app import (
        CalibrateOptions,
        CalibrationReport,
        CollectRequest,
        CollectResult,
        Nightowl,
        RunSpec,
        RunSummary,
        ShowcaseOptions,
        calibrate_rules,
        collect_demos,
        run_showcase,
        run_tasks,
    )
    from nightowl.chat import Assistant, AssistantConfig, ChatReply
    from nightowl.config import Settings, get_settings, load_settings
    from nightowl.envs.registry import select_tasks
    from nightowl.errors import NightowlError, UserError
    from nightowl.ledger import Ledger, RunReport
    from nightowl.sleeptime.service import SleepService

"""The environment registry: names -> adapter classes, imported lazily.

Adapters live one per module under `nightowl.envs`; importing one may start nothing
(JVMs start on first use) but may need an optional package. The registry is an
explicit dict so that `nightowl envs list`, the agent and the CLI all agree on what
exists, and so that a missing extra (alfworld, appworld) is reported as such rather
than as an import traceback.

Task ids are ``<env>/<game>/<split>/<seed>``, e.g. ``twx/coin/test/20003``.

Other packages add environments without editing this one, through the Python entry
point group ``nightowl.envs`` (as pytest plugins and Gymnasium environments do): in
their ``pyproject.toml``, ``[project.entry-points."nightowl.envs"]`` with
``toy = "toy_env_plugin:CounterEnv"`` makes ``--env toy`` work once the package is
installed (examples/toy_env_plugin). A built-in name always wins over a plugin's.

An environment name may carry constructor options after a colon, which is how a
command line picks them (``nightowl run --env alfworld:expert=imitable``):
``make_env("tw:expert=imitable,max_steps=30")`` is ``make_env("tw", expert="imitable",
max_steps=30)``. Values are read as JSON where they parse (numbers, true/false), else
as strings. The full name, options included, is what a run records as its ``env``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
from dataclasses import dataclass
from typing import Any

from nightowl.envs.base import Environment, Split
from nightowl.envs.task_ids import parse_task_id as _parse_syntax
from nightowl.errors import EnvError, MissingExtraError, UnknownNameError, UserError
from nightowl.plugins import entry_point_targets

#: registry name -> "module:Class"
ENVIRONMENTS: dict[str, str] = {
    "twx": "nightowl.envs.twx:TextWorldExpressEnv",
    "tw": "nightowl.envs.textworld:TextWorldEnv",
    "sciworld": "nightowl.envs.scienceworld:ScienceWorldEnv",
    "alfworld": "nightowl.envs.alfworld:AlfWorldEnv",
    "appworld": "nightowl.envs.appworld:AppWorldEnv",
    "multihop": "nightowl.envs.multihop:MultiHopEnv",
}


#: the entry point group other packages register environments under
ENTRY_POINT_GROUP = "nightowl.envs"


@functools.cache
def plugin_environments() -> dict[str, str]:
    """Environments other installed packages register (name -> "module:Class").

    Cached per process; `plugin_environments.cache_clear()` re-reads them (e.g. after
    installing a plugin into a running interpreter).
    """
    return entry_point_targets(ENTRY_POINT_GROUP)


def registry() -> dict[str, str]:
    """Every environment: the built-in ones, then those of installed plugins."""
    return {**plugin_environments(), **ENVIRONMENTS}


@dataclass(frozen=True, kw_only=True)
class Requirement:
    """The third-party package an adapter needs, and the extra that installs it."""

    package: str  # import name
    extra: str | None  # None: a core dependency
    feature: str
    #: "module:function" that raises MissingExtraError when the package lives elsewhere
    #: (e.g. AppWorld's own venv); when set it replaces the import check.
    locate: str | None = None


REQUIREMENTS: dict[str, Requirement] = {
    "twx": Requirement(package="textworld_express", extra="envs", feature="TextWorld-Express"),
    "tw": Requirement(package="textworld", extra="envs", feature="TextWorld"),
    "sciworld": Requirement(package="scienceworld", extra="envs", feature="ScienceWorld"),
    "alfworld": Requirement(package="alfworld", extra="alfworld", feature="ALFWorld"),
    "appworld": Requirement(
        package="appworld", extra="appworld", feature="AppWorld",
        locate="nightowl.envs.appworld:find_python",
    ),
}


def split_env_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"alfworld:expert=imitable"`` -> ``("alfworld", {"expert": "imitable"})``.

    Raises:
        UnknownNameError: an option is not ``key=value``.
    """
    name, sep, rest = str(spec).partition(":")
    options: dict[str, Any] = {}
    for item in rest.split(",") if sep and rest else ():
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise UnknownNameError(
                f"option in environment {spec!r} (expected name:key=value,...)", item
            )
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        options[key.strip()] = value
    return name, options


def env_names() -> list[str]:
    """All registered environment names: built-in ones first, then plugins'."""
    return [*ENVIRONMENTS, *(n for n in plugin_environments() if n not in ENVIRONMENTS)]


def is_installed(name: str) -> bool:
    """Whether the adapter's module and its third-party package can be imported."""
    name = split_env_spec(name)[0]
    _check_name(name)
    module = registry()[name].split(":", 1)[0]
    req = REQUIREMENTS.get(name)
    if req is not None and req.locate:
        mod, _, fn = req.locate.partition(":")
        try:
            getattr(importlib.import_module(mod), fn)()
        except MissingExtraError:
            return False
        return True
    try:
        if importlib.util.find_spec(module) is None:
            return False
        return req is None or importlib.util.find_spec(req.package) is not None
    except (ImportError, ValueError):
        return False


def env_class(name: str) -> type[Environment]:
    """Import and return the adapter class for ``name``.

    Raises:
        UnknownNameError: ``name`` is not registered.
        MissingExtraError: the adapter needs an optional package that is absent.
        EnvError: the adapter module is missing or broken.
    """
    name = split_env_spec(name)[0]
    _check_name(name)
    module_name, _, cls_name = registry()[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        req = REQUIREMENTS.get(name)
        missing = (exc.name or "").split(".")[0]
        if req is not None and missing == req.package.split(".")[0]:
            raise MissingExtraError(req.feature, req.extra or "core", req.package) from None
        raise EnvError(f"environment {name!r}: cannot import {module_name}: {exc}") from exc
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise EnvError(f"environment {name!r}: {module_name} has no class {cls_name}")
    return cls  # type: ignore[no-any-return]


def make_env(name: str, **kwargs: Any) -> Environment:
    """Build the environment ``name`` with keyword-only constructor arguments.

    Common keywords: ``cache_dir: Path | None`` and ``max_steps: int``. Options in
    ``name`` (``"alfworld:expert=imitable"``) are keywords too; ``kwargs`` win.
    """
    base, options = split_env_spec(name)
    return env_class(base)(**{**options, **kwargs})


def parse_task_id(task_id: str) -> tuple[str, str, Split, int]:
    """Split ``<env>/<game>/<split>/<seed>`` into its parts; the environment must exist.

    Raises:
        UnknownNameError: malformed id, unknown environment or split.
    """
    if not isinstance(task_id, str) or task_id.count("/") != 3:
        raise UnknownNameError(
            "task id (expected <env>/<game>/<split>/<seed>)", str(task_id), env_names()
        )
    parts = _parse_syntax(task_id)
    _check_name(parts[0])
    return parts


def env_for_task(task_id: str, **kwargs: Any) -> Environment:
    """Build the environment that plays ``task_id``."""
    env, _, _, _ = parse_task_id(task_id)
    return make_env(env, **kwargs)


def _check_name(name: str) -> None:
    if name not in registry():
        raise UnknownNameError("environment", name, env_names())


def select_tasks(
    env_name: str, split: str, n: int, *, game: str | None = None, offset: int = 0
) -> list[str]:
    """The first ``n`` task ids of a split (optionally one game), after ``offset``.

    Raises:
        UnknownNameError: the environment, or the game in that split, does not exist.
    """
    env = make_env(env_name)
    try:
        try:
            specs = env.tasks(split, game=game) if game else env.tasks(split)  # type: ignore[call-arg,arg-type]
        except TypeError:
            specs = env.tasks(split)  # type: ignore[arg-type]
        ids = [s.task_id for s in specs]
        if game:
            ids = [t for t in ids if f"/{game}/" in t]
        if not ids:
            raise UnknownNameError(f"{split} tasks of", f"{env_name}/{game or '*'}")
        if offset >= len(ids):
            raise UnknownNameError(
                f"offset into the {len(ids)} {split} tasks of {env_name}/{game or '*'} "
                f"(0..{len(ids) - 1})", str(offset))
        return ids[offset : offset + n]
    finally:
        env.close()


def check_task_ids(env_name: str, task_ids: list[str]) -> list[str]:
    """Validate task ids a user named (``--task-ids``, a task file) against ``env_name``.

    Each id must be ``<env>/<game>/<split>/<seed>`` of this environment (its name without
    options) and one of the tasks the environment lists for that split. Returns the ids
    in the given order, duplicates dropped.

    Raises:
        UnknownNameError: a malformed id, another environment's, or a task that does not
            exist (with the split's first ids as suggestions).
    """
    base, _ = split_env_spec(env_name)
    ids = list(dict.fromkeys(t.strip() for t in task_ids if t.strip()))
    if not ids:
        raise UnknownNameError("task ids (none given)", "")
    by_split: dict[Split, list[str]] = {}
    for task_id in ids:
        env, _, split, _ = parse_task_id(task_id)
        if env != base:
            raise UnknownNameError(f"task of environment {base!r}", task_id)
        by_split.setdefault(split, []).append(task_id)
    env_obj = make_env(env_name)
    try:
        for part, wanted in by_split.items():
            known = {t.task_id for t in env_obj.tasks(part)}
            missing = [t for t in wanted if t not in known]
            if missing:
                raise UnknownNameError(f"{part} task of {base}", missing[0], sorted(known)[:5])
    finally:
        env_obj.close()
    return ids


def read_task_file(path: str) -> list[str]:
    """Task ids from a file: one per line; blank lines and ``#`` comments are skipped."""
    from pathlib import Path

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"cannot read the task file {path}: {exc.strerror or exc}") from None
    return [task for line in text.splitlines() if (task := line.split("#", 1)[0].strip())]

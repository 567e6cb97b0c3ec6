"""Build model backends by registry name: the one place backends are constructed.

`build_backend("smollm2")` looks the name up in `Settings.models`, picks the backend
module for the entry's ``backend`` kind from `BACKENDS` (imported lazily, so the
transformers/vLLM stacks are only imported when used), and caches the instance per
process: loading weights happens once, and every caller shares the same backend.

Each backend module exposes ``from_spec(name, spec, settings) -> ModelBackend``.

Other packages add backend kinds without editing this one, through the entry point group
``nightowl.backends``: ``[project.entry-points."nightowl.backends"]`` with
``echo = "toy_env_plugin.backend:EchoBackend"`` makes ``backend = "echo"`` a valid kind
for a registry entry (examples/toy_env_plugin). The value names either a `ModelBackend`
subclass with a ``from_spec(name, spec, settings)`` classmethod, or any callable taking
``(name, spec, settings)``, the way built-in kinds are built. A built-in kind always wins
over a plugin's, and an unknown kind is a one-line `ConfigError` listing the known ones.
"""

from __future__ import annotations

import functools
import importlib
import threading

from nightowl.config import ModelSpec, Settings, get_settings
from nightowl.errors import ConfigError
from nightowl.llm.base import ModelBackend
from nightowl.plugins import entry_point_targets

#: backend kind -> "module:factory"; factories take (name, spec, settings)
BACKENDS: dict[str, str] = {
    "transformers": "nightowl.llm.transformers:from_spec",
    "openai": "nightowl.llm.openai_compat:from_spec",
    "vllm": "nightowl.llm.vllm:from_spec",
    "scripted": "nightowl.llm.scripted:from_spec",
}

#: the entry point group other packages register backend kinds under
ENTRY_POINT_GROUP = "nightowl.backends"

_cache: dict[tuple[str, str], ModelBackend] = {}
_lock = threading.Lock()


def model_names(settings: Settings | None = None) -> list[str]:
    """Registry names, sorted."""
    return sorted((settings or get_settings()).models)


@functools.cache
def plugin_backends() -> dict[str, str]:
    """Backend kinds other installed packages register (kind -> "module:obj").

    Reads entry point metadata only (nothing is imported). Cached per process;
    `plugin_backends.cache_clear()` re-reads them.
    """
    return entry_point_targets(ENTRY_POINT_GROUP)


def backend_kinds() -> dict[str, str]:
    """Every backend kind: the built-in ones, then those of plugins (built-ins win)."""
    return {**plugin_backends(), **BACKENDS}


def create_backend(name: str, spec: ModelSpec, settings: Settings | None = None) -> ModelBackend:
    """Construct a backend for ``spec`` without caching (tests, ad-hoc entries).

    Raises:
        ConfigError: the kind is unknown (the message lists the known ones), or a
            plugin's entry point cannot be imported or builds no `ModelBackend`.
    """
    settings = settings or get_settings()
    kinds = backend_kinds()
    target = kinds.get(spec.backend)
    if target is None:
        raise ConfigError(
            f"model {name!r}: unknown backend kind {spec.backend!r}; known: {sorted(kinds)}"
        )
    module_name, _, attr = target.partition(":")
    if spec.backend in BACKENDS:
        module = importlib.import_module(module_name)
        backend: ModelBackend = getattr(module, attr)(name, spec, settings)
        return backend
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"model {name!r}: backend kind {spec.backend!r} ({target}) cannot be imported: {exc}"
        ) from None
    if isinstance(factory, type) and hasattr(factory, "from_spec"):
        factory = factory.from_spec
    if not callable(factory):
        raise ConfigError(
            f"model {name!r}: backend kind {spec.backend!r} ({target}) is a "
            f"{type(factory).__name__}, not a ModelBackend class or factory"
        )
    made = factory(name, spec, settings)
    if not isinstance(made, ModelBackend):
        raise ConfigError(
            f"model {name!r}: backend kind {spec.backend!r} ({target}) built "
            f"{type(made).__name__}, not a ModelBackend"
        )
    return made


def build_backend(name: str, settings: Settings | None = None) -> ModelBackend:
    """The process-wide backend for registry entry ``name`` (built on first use).

    Raises:
        UnknownNameError: ``name`` is not in the registry (a user mistake, exit 2).
        MissingExtraError: the backend needs an optional package (e.g. vllm).
        ModelError: the backend could not be built (weights missing, bad file).
    """
    settings = settings or get_settings()
    spec = settings.model(name)
    key = (name, spec.model_dump_json())
    with _lock:
        backend = _cache.get(key)
        if backend is None:
            backend = create_backend(name, spec, settings)
            _cache[key] = backend
        return backend


def clear_cache() -> None:
    """Forget cached backends (the transformers weights stay cached in their module)."""
    with _lock:
        _cache.clear()


__all__ = [
    "BACKENDS",
    "ENTRY_POINT_GROUP",
    "backend_kinds",
    "build_backend",
    "clear_cache",
    "create_backend",
    "model_names",
    "plugin_backends",
]

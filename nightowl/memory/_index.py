"""FAISS vector indexes with manifests.

`VectorIndex` keeps unit vectors under int64 ids and answers inner-product (= cosine)
queries. Small indexes are exact (``IndexIDMap2`` over ``IndexFlatIP``); once the row
count passes ``hnsw_threshold`` the index is converted to HNSW (``IndexHNSWFlat``,
M=32, inner product). ``IndexIDMap2`` keeps a reverse map so that stored vectors can be
reconstructed by id (the retriever scores the steps of the top episodes exactly from
them). Flat indexes delete with ``remove_ids``; HNSW cannot delete, so removal returns
False and the caller rebuilds from SQL.

On disk an index is ``<dir>/<key>.faiss`` plus ``<dir>/<key>.manifest.json`` (embedding
model, dims, row count, a checksum of the ids and of the embedded texts' hashes, the
SHA-256 of the index file, the index type). Both are written atomically (temp file +
rename, the index first). `load_index` returns None for anything that does not verify;
the caller rebuilds from SQL.

faiss-gpu is used for exact search when it is installed and sees a GPU (``use_gpu``
"auto"): a GPU copy of the flat vectors is kept lazily; HNSW stays on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import faiss
import numpy as np
from pydantic import BaseModel, Field, ValidationError

MANIFEST_FORMAT = 1
IndexType = Literal["flat", "hnsw"]


class IndexManifest(BaseModel):
    """What an index file holds; verified against SQL before the index is trusted."""

    format: int = MANIFEST_FORMAT
    key: str
    embedding_model: str
    dim: int
    count: int
    id_checksum: str = Field(description="sha256 over sorted (id, text sha1) pairs")
    file_sha256: str
    index_type: IndexType
    hnsw_m: int = 32
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def rows_checksum(rows: Iterable[tuple[int, str]]) -> str:
    """SHA-256 over (id, text-hash) pairs sorted by id: the identity of an index's content."""
    h = hashlib.sha256()
    for item_id, sha in sorted(rows):
        h.update(int(item_id).to_bytes(8, "little", signed=True))
        h.update(sha.encode())
    return h.hexdigest()


def _gpu_available() -> bool:
    try:
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # noqa: BLE001 - any faiss build without GPU support
        return False


class VectorIndex:
    """int64 id -> unit vector, exact below a threshold and HNSW above it."""

    def __init__(
        self,
        dim: int,
        *,
        hnsw_threshold: int = 20_000,
        hnsw_m: int = 32,
        ef_construction: int = 64,
        ef_search: int = 64,
        use_gpu: bool | Literal["auto"] = "auto",
    ) -> None:
        self.dim = dim
        self.hnsw_threshold = hnsw_threshold
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.use_gpu = _gpu_available() if use_gpu == "auto" else bool(use_gpu)
        self._lock = threading.RLock()
        self._index: faiss.IndexIDMap2 = self._new("flat")
        self._gpu: object | None = None  # lazily built GPU copy of the flat vectors
        self._gpu_ids: np.ndarray | None = None

    # --- construction -----------------------------------------------------------------
    def _new(self, kind: IndexType) -> faiss.IndexIDMap2:
        if kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        hnsw = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = self.ef_construction
        hnsw.hnsw.efSearch = self.ef_search
        return faiss.IndexIDMap2(hnsw)

    @property
    def index_type(self) -> IndexType:
        """The index kind: "flat" or "hnsw"."""
        inner = faiss.downcast_index(self._index.index)
        return "hnsw" if isinstance(inner, faiss.IndexHNSW) else "flat"

    @property
    def ntotal(self) -> int:
        """Number of stored vectors."""
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        """All stored ids (int64), in internal order."""
        with self._lock:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def _all_vectors(self) -> np.ndarray:
        if self.ntotal == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._index.index.reconstruct_n(0, self.ntotal)

    # --- mutation ---------------------------------------------------------------------
    def add(self, ids: np.ndarray | list[int], vectors: np.ndarray) -> None:
        """Add vectors under ids (ids must not be present yet); may switch Flat -> HNSW."""
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim))
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if len(ids) == 0:
            return
        with self._lock:
            if self.index_type == "flat" and self.ntotal + len(ids) > self.hnsw_threshold:
                old_ids, old_vecs = self.ids(), self._all_vectors()
                self._index = self._new("hnsw")
                ids = np.concatenate([old_ids, ids])
                vectors = np.concatenate([old_vecs, vectors])
            self._index.add_with_ids(vectors, ids)
            self._gpu = None

    def remove(self, ids: Iterable[int]) -> bool:
        """Remove ids; False when the index type cannot delete (HNSW: rebuild instead)."""
        arr = np.asarray(list(ids), dtype=np.int64)
        if len(arr) == 0:
            return True
        with self._lock:
            if self.index_type == "hnsw":
                return False
            self._index.remove_ids(faiss.IDSelectorBatch(arr))
            self._gpu = None
            return True

    # --- queries ----------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row; missing slots have id -1."""
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(-1, self.dim))
        with self._lock:
            n = self.ntotal
            if n == 0 or k <= 0:
                return (np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64))
            k = min(k, n)
            if self.use_gpu and self.index_type == "flat":
                try:
                    return self._gpu_search(q, k)
                except Exception:  # noqa: BLE001 - fall back to the CPU index
                    self.use_gpu = False
            scores, ids = self._index.search(q, k)
            return scores, ids

    def _gpu_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._gpu is None:
            res = faiss.StandardGpuResources()
            flat = faiss.IndexFlatIP(self.dim)
            flat.add(self._all_vectors())
            self._gpu = faiss.index_cpu_to_gpu(res, 0, flat)
            self._gpu_res = res
            self._gpu_ids = self.ids()
        scores, pos = self._gpu.search(q, k)  # type: ignore[attr-defined]
        assert self._gpu_ids is not None
        ids = np.where(pos >= 0, self._gpu_ids[np.clip(pos, 0, None)], -1)
        return scores, ids

    def reconstruct_batch(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Stored vectors for ids in one FAISS call."""
        arr = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        if len(arr) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            return self._index.reconstruct_batch(arr)

    # --- persistence --------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Serialise (CPU form)."""
        with self._lock:
            return faiss.serialize_index(self._index).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, **kwargs: object) -> VectorIndex:
        """Deserialise; raises on a corrupt buffer."""
        # Keep the object deserialize_index returns: it owns the C++ index (a downcast
        # wrapper would not, and the index would be freed with the original wrapper).
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        if not isinstance(index, faiss.IndexIDMap2):
            raise ValueError(f"unexpected index class {type(index).__name__}")
        inner = faiss.downcast_index(index.index)
        obj = cls(int(index.d), **kwargs)  # type: ignore[arg-type]
        if isinstance(inner, faiss.IndexHNSW):
            inner.hnsw.efSearch = obj.ef_search
        obj._index = index
        return obj


def index_paths(index_dir: Path, key: str) -> tuple[Path, Path]:
    """(index file, manifest file) for ``key``."""
    return index_dir / f"{key}.faiss", index_dir / f"{key}.manifest.json"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_index(
    index: VectorIndex, index_dir: Path, key: str, *, embedding_model: str, id_checksum: str
) -> IndexManifest:
    """Write ``<key>.faiss`` then ``<key>.manifest.json`` atomically."""
    data = index.to_bytes()
    manifest = IndexManifest(
        key=key,
        embedding_model=embedding_model,
        dim=index.dim,
        count=index.ntotal,
        id_checksum=id_checksum,
        file_sha256=hashlib.sha256(data).hexdigest(),
        index_type=index.index_type,
        hnsw_m=index.hnsw_m,
    )
    fpath, mpath = index_paths(index_dir, key)
    _atomic_write(fpath, data)
    _atomic_write(mpath, manifest.model_dump_json(indent=2).encode())
    return manifest


def load_index(
    index_dir: Path, key: str, *, embedding_model: str, dim: int, **kwargs: object
) -> tuple[VectorIndex, IndexManifest] | tuple[None, str]:
    """Load and verify an index file against its manifest.

    Returns (index, manifest), or (None, reason) when the files are missing, the
    manifest is malformed, the file's hash or the model/dims disagree, or FAISS cannot
    read it. Whether its content matches SQL is checked by the caller.
    """
    fpath, mpath = index_paths(index_dir, key)
    if not mpath.exists():
        return None, "manifest missing"
    if not fpath.exists():
        return None, "index file missing"
    try:
        manifest = IndexManifest.model_validate(json.loads(mpath.read_text()))
    except (ValueError, ValidationError, OSError) as exc:
        return None, f"manifest unreadable ({type(exc).__name__})"
    if manifest.format != MANIFEST_FORMAT:
        return None, f"manifest format {manifest.format} != {MANIFEST_FORMAT}"
    if manifest.embedding_model != embedding_model:
        return None, f"embedding model {manifest.embedding_model!r} != {embedding_model!r}"
    if manifest.dim != dim:
        return None, f"dims {manifest.dim} != {dim}"
    try:
        data = fpath.read_bytes()
    except OSError as exc:
        return None, f"index file unreadable ({exc.strerror})"
    if hashlib.sha256(data).hexdigest() != manifest.file_sha256:
        return None, "index file checksum mismatch (corrupt or replaced)"
    try:
        index = VectorIndex.from_bytes(data, **kwargs)
    except Exception as exc:  # noqa: BLE001 - faiss raises RuntimeError on garbage
        return None, f"faiss cannot read the index ({type(exc).__name__})"
    if index.dim != dim or index.ntotal != manifest.count:
        return None, "index shape disagrees with its manifest"
    return index, manifest

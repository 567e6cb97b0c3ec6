"""VectorIndex and manifests on real FAISS."""

from __future__ import annotations

import numpy as np

from nightowl.memory._index import VectorIndex, index_paths, load_index, rows_checksum, save_index
from nightowl.memory.embedder import HashingEmbedder, l2_normalise


def _vecs(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return l2_normalise(np.random.default_rng(seed).normal(size=(n, dim)))


def test_flat_add_search_remove_reconstruct():
    idx = VectorIndex(16)
    assert idx.search(_vecs(1), 3)[1].shape == (1, 0)
    v = _vecs(10)
    idx.add(np.arange(100, 110), v)
    scores, ids = idx.search(v[3:4], 2)
    assert ids[0, 0] == 103 and abs(scores[0, 0] - 1.0) < 1e-5
    np.testing.assert_allclose(idx.reconstruct_batch([105, 100]), v[[5, 0]])
    assert idx.remove([103]) is True
    assert idx.search(v[3:4], 1)[1][0, 0] != 103 and idx.ntotal == 9
    assert sorted(idx.ids().tolist()) == [i for i in range(100, 110) if i != 103]


def test_switch_to_hnsw_keeps_everything():
    idx = VectorIndex(16, hnsw_threshold=50)
    v = _vecs(80)
    idx.add(np.arange(40), v[:40])
    assert idx.index_type == "flat"
    idx.add(np.arange(40, 80), v[40:])
    assert idx.index_type == "hnsw" and idx.ntotal == 80
    hits = idx.search(v, 1)[1][:, 0]
    assert (hits == np.arange(80)).mean() > 0.95
    np.testing.assert_allclose(idx.reconstruct_batch([7]), v[[7]], atol=1e-6)
    assert idx.remove([1]) is False  # HNSW cannot delete


def test_save_load_and_corruption(tmp_path):
    idx = VectorIndex(16)
    idx.add(np.arange(5), _vecs(5))
    rows = [(i, f"sha{i}") for i in range(5)]
    m = save_index(idx, tmp_path, "obs", embedding_model="m", id_checksum=rows_checksum(rows))
    assert m.count == 5 and m.index_type == "flat"
    loaded, manifest = load_index(tmp_path, "obs", embedding_model="m", dim=16)
    assert loaded is not None and loaded.ntotal == 5 and manifest.id_checksum == m.id_checksum
    assert load_index(tmp_path, "obs", embedding_model="other", dim=16)[0] is None
    assert load_index(tmp_path, "obs", embedding_model="m", dim=8)[0] is None
    assert load_index(tmp_path, "goal", embedding_model="m", dim=16) == (None, "manifest missing")
    fpath, _ = index_paths(tmp_path, "obs")
    fpath.write_bytes(fpath.read_bytes()[:-7])
    assert "checksum" in load_index(tmp_path, "obs", embedding_model="m", dim=16)[1]


def test_rows_checksum_is_order_free_and_content_sensitive():
    a = rows_checksum([(1, "x"), (2, "y")])
    assert a == rows_checksum([(2, "y"), (1, "x")])
    assert a != rows_checksum([(1, "x"), (2, "z")])
    assert a != rows_checksum([(1, "x")])


def test_hashing_embedder_is_deterministic_and_unit_norm():
    e = HashingEmbedder(64)
    a = e.embed(["take the coin", "take the coin", "open the fridge", ""])
    assert a.shape == (4, 64) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.allclose(a[0], a[1]) and a[0] @ a[2] < 0.9

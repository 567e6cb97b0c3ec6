"""The transformers backend's parts: dtype choice, prefix-cache bookkeeping, lazy loading."""

from __future__ import annotations

import pytest

from nightowl.config import load_settings
from nightowl.errors import ConfigError
from nightowl.llm import dtype as dtype_mod
from nightowl.llm._prefix_cache import PrefixCache, common_prefix
from nightowl.llm.registry import create_backend
from nightowl.llm.transformers import TransformersBackend

EPYC = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE = "model name\t: Intel Xeon\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU part\t: 0xd4f\n"


def test_auto_dtype_follows_native_bf16():
    d, why = dtype_mod.choose_dtype_for(dtype_mod.cpu_flags(EPYC), "AVX2")
    assert d == "float32" and "no native bf16" in why and "AVX2" in why
    d, why = dtype_mod.choose_dtype_for(dtype_mod.cpu_flags(SAPPHIRE), "AVX512")
    assert d == "bfloat16" and "amx_bf16" in why and "avx512_bf16" in why
    assert dtype_mod.choose_dtype_for(dtype_mod.cpu_flags(GRAVITON), "DEFAULT")[0] == "bfloat16"
    assert dtype_mod.cpu_model(EPYC) == "AMD EPYC"


def test_explicit_dtype_wins_and_bad_dtype_is_a_config_error():
    assert dtype_mod.resolve_dtype("bfloat16") == ("bfloat16", "set explicitly")
    assert dtype_mod.resolve_dtype("auto") == dtype_mod.choose_dtype()
    assert dtype_mod.resolve_dtype(None) == dtype_mod.choose_dtype()
    with pytest.raises(ConfigError, match="unknown dtype 'fp8'"):
        dtype_mod.resolve_dtype("fp8")


def test_auto_dtype_is_what_measures_faster(tmp_path, monkeypatch):
    import time

    fast = dtype_mod.DtypeProbe(float32_s=2.0, bfloat16_s=1.0, machine="m")
    slow = dtype_mod.DtypeProbe(float32_s=1.0, bfloat16_s=5.0, machine="m")
    near = dtype_mod.DtypeProbe(float32_s=1.1, bfloat16_s=1.0, machine="m")
    flags = dtype_mod.cpu_flags(SAPPHIRE)
    d, why = dtype_mod.choose_by_probe(fast, flags)
    assert d == "bfloat16" and "2.00x" in why and "amx_bf16" in why
    # the flags say native, the measurement says no: the measurement wins
    assert dtype_mod.choose_by_probe(slow, flags)[0] == "float32"
    assert dtype_mod.choose_by_probe(near, flags)[0] == "float32"  # not by a clear margin
    # the real probe, cached in the model cache per machine
    monkeypatch.setenv("NIGHTOWL_MODEL_CACHE", str(tmp_path))
    started = time.perf_counter()
    probe = dtype_mod.cached_probe(1)
    assert time.perf_counter() - started < 1.0
    assert probe.float32_s > 0 and probe.bfloat16_s > 0
    assert probe.machine == dtype_mod.machine_key(1)
    stored = (tmp_path / dtype_mod.PROBE_FILE).read_text()
    assert dtype_mod.machine_key(1) in stored
    assert dtype_mod.cached_probe(1) == probe  # read back, not measured again


def test_this_machine_gets_what_it_measures():
    choice, why = dtype_mod.choose_dtype()
    probe = dtype_mod.cached_probe(dtype_mod.probe_threads())
    assert choice == ("bfloat16" if probe.speedup >= dtype_mod.BF16_MARGIN else "float32")
    assert "probe: float32" in why


class FakeKV:
    """Scripted stand-in for a KV cache: records its length and crops (control logic only)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def crop(self, delta: int) -> None:
        assert delta < 0
        self.n += delta


def test_prefix_cache_longest_common_prefix_and_eviction():
    assert common_prefix((1, 2, 3), [1, 2, 4]) == 2
    pc = PrefixCache(max_entries=2, max_tokens=100)
    assert pc.longest([1, 2]) == (None, 0, 0)
    pc.put([1, 2, 3, 4], FakeKV(4))
    kv, n, common = pc.longest([1, 2, 3, 9, 9])  # shares the instructions, not the end
    assert n == common == 3 and kv.n == 3
    kv, n, common = pc.longest([1, 2, 3, 4, 5])
    assert n == 4 and kv.n == 4
    assert pc.longest([1, 2, 3, 4, 5])[0] is not pc.longest([1, 2, 3, 4, 5])[0]  # copies
    pc.put([1, 2, 3, 4, 5], FakeKV(5))  # supersedes its own prefix [1, 2, 3, 4]
    assert len(pc) == 1
    pc.put([7, 8], FakeKV(2))
    pc.put([9], FakeKV(1))  # third entry: the oldest goes
    assert len(pc) == 2 and pc.longest([1, 2])[1] == 0
    big = PrefixCache(max_entries=8, max_tokens=5)
    big.put([1, 2, 3], FakeKV(3))
    big.put([4, 5, 6], FakeKV(3))  # 6 tokens > 5: the older one goes
    assert len(big) == 1 and big.longest([4])[1] == 1


def test_prefix_cache_reuses_whole_blocks_or_the_exact_prompt():
    pc = PrefixCache()
    pc.put(list(range(10)), FakeKV(10))
    # a longer prompt: reuse stops at the last whole block (4), billing counts all 10
    kv, usable, common = pc.longest([*range(10), 42], block=4)
    assert (usable, common, kv.n) == (8, 10, 8)
    # a prompt diverging inside the first block: nothing usable, 3 tokens in common
    assert pc.longest([0, 1, 2, 99], block=4) == (None, 0, 3)
    # the very same prompt: all of it, no recomputation
    kv, usable, common = pc.longest(list(range(10)), block=4)
    assert (usable, common, kv.n) == (10, 10, 10)


def test_count_tokens_loads_only_the_tokenizer():
    # float16 is a dtype no other test loads, so its weights cannot be in this process
    spec = load_settings().model("smollm2")
    spec = spec.model_copy(update={"params": {**spec.params, "dtype": "float16"}})
    backend = create_backend("smollm2", spec)
    assert isinstance(backend, TransformersBackend)
    assert backend.dtype == "float16" and backend.dtype_reason == "set explicitly"
    assert not backend.weights_loaded
    assert backend.count_tokens("The capital of France is") == 5
    assert not backend.weights_loaded


def test_registry_default_dtype_is_auto():
    backend = create_backend("smollm2", load_settings().model("smollm2"))
    assert isinstance(backend, TransformersBackend)
    assert (backend.dtype, backend.dtype_reason) == dtype_mod.choose_dtype()


@pytest.mark.slow
def test_tokenizer_from_gguf_is_copied_once(tmp_path, monkeypatch):
    from nightowl.llm import hf_weights

    monkeypatch.setenv("NIGHTOWL_MODEL_CACHE", str(tmp_path))
    directory, gguf = hf_weights.resolve_weights(dict(load_settings().model("smollm2").params))
    monkeypatch.setattr(hf_weights, "_tokenizers", {})
    first = hf_weights.load_tokenizer(directory, gguf)  # parses the GGUF, keeps a copy
    conv = hf_weights.converted_dir(directory, gguf)
    assert conv is not None
    assert [p.name for p in tmp_path.iterdir()] == [conv.name + "-tokenizer"]
    monkeypatch.setattr(hf_weights, "_tokenizers", {})
    second = hf_weights.load_tokenizer(directory, gguf)
    assert str(tmp_path) in second.tokenizer.name_or_path
    text = "Observation: You are in the kitchen.\nAction: take coin"
    assert first.tokenizer(text)["input_ids"] == second.tokenizer(text)["input_ids"]
    assert not hf_weights.is_model_loaded(directory, gguf, "float16")


def _threads(n: int, fn) -> list:  # noqa: ANN001 - a callable of the thread index
    import threading

    out: list = [None] * n
    errs: list = []

    def run(i: int) -> None:
        try:
            out[i] = fn(i)
        except Exception as exc:  # collected and re-checked by the caller
            errs.append(exc)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=10)
    return out if not errs else [*out, *errs]


def test_batcher_groups_concurrent_calls_by_key():
    import threading
    import time

    from nightowl.llm._hf_batching import RequestBatcher

    model_lock = threading.Lock()
    seen: list[list[int]] = []

    def run_batch(items):  # scripted stand-in for a batched forward
        assert model_lock.locked()
        seen.append(sorted(items))
        time.sleep(0.05)
        return [x * 10 for x in items]

    b = RequestBatcher(run_batch, model_lock, window_s=0.2, max_batch=8)
    got = _threads(4, lambda i: b.submit("greedy", i))
    assert got == [0, 10, 20, 30]
    assert seen == [[0, 1, 2, 3]] and b.batch_sizes == [4]
    # different keys never share a batch
    got = _threads(4, lambda i: b.submit(i % 2, i))
    assert got == [0, 10, 20, 30] and sorted(map(tuple, seen[1:])) == [(0, 2), (1, 3)]


def test_batcher_max_batch_and_failures_reach_every_member():
    import threading

    from nightowl.llm._hf_batching import RequestBatcher

    b = RequestBatcher(lambda items: [x + 1 for x in items], threading.Lock(), window_s=0.2,
                       max_batch=2)  # fmt: skip
    assert sorted(_threads(4, lambda i: b.submit("k", i))) == [1, 2, 3, 4]
    assert all(s <= 2 for s in b.batch_sizes) and sum(b.batch_sizes) == 4

    def boom(items):
        raise RuntimeError("forward failed")

    bad = RequestBatcher(boom, threading.Lock(), window_s=0.1)
    out = _threads(3, lambda i: bad.submit("k", i))
    errors = [e for e in out if isinstance(e, RuntimeError)]
    assert len(errors) == 3 and all("forward failed" in str(e) for e in errors)
    assert bad._pending == 0  # nobody left waiting


@pytest.mark.slow
def test_the_cached_copy_is_float32_whichever_dtype_loads_first(tmp_path, monkeypatch):
    """A cold bf16 load must not leave bf16-rounded weights in the float32 cache."""
    import torch
    from safetensors.torch import load_file

    from nightowl.llm import hf_weights

    monkeypatch.setenv("NIGHTOWL_MODEL_CACHE", str(tmp_path))
    directory, gguf = hf_weights.resolve_weights(dict(load_settings().model("smollm2").params))
    monkeypatch.setattr(hf_weights, "_models", {})
    monkeypatch.setattr(hf_weights, "_tokenizers", {})
    bf16 = hf_weights.load_model(directory, gguf, "bfloat16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    conv = hf_weights.converted_dir(directory, gguf)
    cached = load_file(str(conv / "model.safetensors"))
    name, weight = next((k, v) for k, v in cached.items() if v.ndim == 2)
    assert weight.dtype == torch.float32
    # float32 weights that are not all exactly representable in bf16
    assert not torch.equal(weight, weight.to(torch.bfloat16).to(torch.float32)), name

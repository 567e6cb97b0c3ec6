"""One score for one (prompt, action, dtype), whatever path computes it.

Cold, prefix-cached, batched, one-at-a-time and one-row-per-forward scoring must give the
same numbers: within 1e-4 nats in float32, bit for bit in reduced precision (the
block-aligned prefill and padded rows make them run the very same forwards). Runs for
every dtype this CPU computes natively; bf16 where it is only emulated is a slow test
(several times slower, same numbers).

Against a plain one-pass forward over prompt + action the tolerance is dtype's own:
1e-3 in float32. In bf16 that forward is a differently shaped computation and differs by
bf16 rounding alone: measured up to 0.09 nats (AVX2 EPYC, emulated) and 0.24 (Intel AMX,
fixed-shape rows) on these prompts (`bench/score_paths.py`). Each bf16 computation lies
up to ~0.2 nats from float32 (0.11-0.20 measured), so two of them up to ~0.4 from each
other: held to 0.5, with the ranking required to be the same.
"""

from __future__ import annotations

import pytest
import torch

from nightowl.llm.dtype import NATIVE_BF16_FLAGS, cpu_flags
from nightowl.llm.hf_weights import _a_linear_weight
from nightowl.llm.transformers import TransformersBackend

NATIVE_BF16 = bool(set(NATIVE_BF16_FLAGS) & cpu_flags())
DTYPES = [
    "float32",
    pytest.param(
        "bfloat16",
        marks=() if NATIVE_BF16 else pytest.mark.slow,
        id="bfloat16" + ("" if NATIVE_BF16 else "-emulated"),
    ),
]
PATH_TOL = {"float32": 1e-4, "bfloat16": 0.0}
PLAIN_TOL = {"float32": 1e-3, "bfloat16": 0.5}

HEAD = (
    "You are an agent in a text game. Choose the next action.\n\nExample:\n"
    "Goal: find the coin.\nObservation: You are in the kitchen. A door leads north.\n"
    "Action: go north\nObservation: You are in the hallway.\nAction: take coin\n\n"
)
BASE = HEAD + "Goal: find the coin.\nObservation: You are in the kitchen.\nAction: go north\n"
GROWN = BASE + "Observation: You are in the pantry. There is a shelf and a door east.\nAction:"
ACTIONS = [" go south\n", " take coin\n", " go east\n", " open the wooden door\n", " look\n"]


@pytest.fixture(scope="module", params=DTYPES)
def backend(request, smollm2: TransformersBackend) -> TransformersBackend:
    b = TransformersBackend(
        name=f"smollm2-{request.param}", directory=smollm2.directory,
        gguf_file=smollm2.gguf_file, dtype=request.param,
    )
    return b.load()


def _scores(b: TransformersBackend, p: list[int], cs: list[list[int]], **kw) -> list[float]:
    per_token, _ = b.score_tokens(p, cs, **kw)
    return [sum(t) for t in per_token]


def _plain(b: TransformersBackend, p: list[int], c: list[int]) -> float:
    with b.lock, torch.inference_mode():
        logits = b.model(input_ids=torch.tensor([p + c])).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    return sum(logp[len(p) + i - 1, t].item() for i, t in enumerate(c))


def test_every_scoring_path_gives_one_score(backend: TransformersBackend):
    p = backend.encode(GROWN)
    cs = [backend.encode(a) for a in ACTIONS]
    backend.clear_prefix_cache()
    cold = _scores(backend, p, cs)
    paths: dict[str, list[float]] = {}
    backend.clear_prefix_cache()
    _scores(backend, backend.encode(BASE), [cs[0]])  # a shorter prompt is cached first
    paths["prefix-cached"] = _scores(backend, p, cs)
    backend.clear_prefix_cache()
    paths["one at a time"] = [_scores(backend, p, [c])[0] for c in cs]
    backend.clear_prefix_cache()
    paths["in pairs"] = _scores(backend, p, cs[:2]) + _scores(backend, p, cs[2:])
    backend.clear_prefix_cache()
    paths["chunked"] = _scores(backend, p, cs, chunk_tokens=2 * len(p))
    tol = PATH_TOL[backend.dtype]
    for name, got in paths.items():
        worst = max(abs(a - b) for a, b in zip(cold, got, strict=True))
        assert worst <= tol, (backend.dtype, name, worst, cold, got)
    plain = [_plain(backend, p, c) for c in cs]
    worst = max(abs(a - b) for a, b in zip(cold, plain, strict=True))
    assert worst <= PLAIN_TOL[backend.dtype], (backend.dtype, worst)
    # the ranking is the model's, not the path's
    assert sorted(range(len(cs)), key=lambda i: cold[i]) == sorted(
        range(len(cs)), key=lambda i: plain[i]
    )


def test_fixed_shape_forwards_match_alone_reordered_and_the_batch(
    backend: TransformersBackend,
):
    """Fixed-shape forwards (used where the kernels are not row-invariant) give a
    continuation the same numbers alone, among others, in another order, and as the
    backend's own choice of path.

    On AMX a free batch moves bf16 rows by 0.2 nats (another GEMM blocking for some row
    counts), so there every forward is `FIXED_ROWS` rows of one padded width.
    """
    from nightowl.llm import _hf_scoring

    loaded = backend._loaded()
    p = backend.encode(GROWN)
    cs = [backend.encode(a) for a in [*ACTIONS, " go north through the long dark corridor\n"]]

    def run(conts: list[list[int]], batch_rows: bool) -> list[float]:
        with loaded.lock:
            loaded.prefixes.clear()
            got, _ = _hf_scoring.score_batched(
                loaded.model, loaded.cache_kw, loaded.prefixes, p, conts, backend._pad_id,
                row_multiple=loaded.row_multiple, batch_rows=batch_rows,
            )  # fmt: skip
        return [sum(t) for t in got]

    together = run(cs, batch_rows=False)
    alone = [run([c], batch_rows=False)[0] for c in cs]
    reordered = run(cs[::-1], batch_rows=False)[::-1]
    chosen = run(cs, batch_rows=loaded.batch_rows)
    for other in (alone, reordered, chosen):
        worst = max(abs(a - b) for a, b in zip(together, other, strict=True))
        assert worst <= PATH_TOL[backend.dtype], (backend.dtype, worst)
    if backend.dtype != "float32":
        assert loaded.row_multiple == _hf_scoring.ROW_MULTIPLE
        weight = _a_linear_weight(loaded.model)
        assert loaded.batch_rows == _hf_scoring.rows_invariant(weight)


async def test_greedy_text_is_the_same_from_a_cached_prefix(backend: TransformersBackend):
    from nightowl.llm.base import GenerationRequest

    backend.clear_prefix_cache()
    cold = await backend.generate(GenerationRequest(prompt=GROWN, max_tokens=8))
    backend.clear_prefix_cache()
    await backend.generate(GenerationRequest(prompt=BASE, max_tokens=1))
    warm = await backend.generate(GenerationRequest(prompt=GROWN, max_tokens=8))
    assert warm.usage.cached_prompt_tokens > 0
    assert warm.texts == cold.texts

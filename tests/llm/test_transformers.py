"""The embedded SmolLM2 backend, for real (one load per session)."""

from __future__ import annotations

import math

import pytest
import torch

from nightowl.errors import ModelError
from nightowl.llm.base import ChatMessage, GenerationRequest
from nightowl.llm.transformers import TransformersBackend
from tests.llm.test_score_paths import PLAIN_TOL

FRANCE = (ChatMessage(role="user", content="What is the capital of France?"),)


async def test_chat_answer_and_usage_by_tokenizer(smollm2: TransformersBackend):
    smollm2.clear_prefix_cache()
    r = await smollm2.generate(GenerationRequest(messages=FRANCE, max_tokens=32))
    (c,) = r.completions
    assert "Paris" in c.text
    assert c.finish_reason == "stop"
    rendered = smollm2.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert r.usage.prompt_tokens == smollm2.count_tokens(rendered)
    # text tokens + the end-of-turn token that finished the sample
    assert r.usage.completion_tokens == smollm2.count_tokens(c.text) + 1
    assert r.usage.cached_prompt_tokens == 0
    # the same prompt again: its prefix comes from the prefix KV cache, same answer
    again = await smollm2.generate(GenerationRequest(messages=FRANCE, max_tokens=32))
    assert again.texts == r.texts
    assert again.usage.cached_prompt_tokens == r.usage.prompt_tokens - 1


async def test_prefix_cache_reuses_a_grown_prompt_exactly(smollm2: TransformersBackend):
    base = "Goal: find the coin.\nObservation: You are in the kitchen.\nAction: go north\n"
    grown = base + "Observation: You are in the hallway.\nAction:"
    smollm2.clear_prefix_cache()
    cold = await smollm2.generate(GenerationRequest(prompt=grown, max_tokens=6))
    cold_scores = await smollm2.score_continuations(grown, [" go south", " take coin"])
    smollm2.clear_prefix_cache()
    await smollm2.generate(GenerationRequest(prompt=base, max_tokens=1))
    warm = await smollm2.generate(GenerationRequest(prompt=grown, max_tokens=6))
    assert warm.texts == cold.texts
    assert 0 < warm.usage.cached_prompt_tokens < warm.usage.prompt_tokens
    warm_scores = await smollm2.score_continuations(grown, [" go south", " take coin"])
    for a, b in zip(cold_scores.logprobs, warm_scores.logprobs, strict=True):
        assert math.isclose(a, b, abs_tol=1e-4)
    # choices on the same prompt reuse it too
    r = await smollm2.generate(
        GenerationRequest(prompt=grown, choices=(" go south", " take coin"), stop=("\n",))
    )
    assert r.usage.cached_prompt_tokens == r.usage.prompt_tokens - 1


async def test_raw_prompt_usage_and_length(smollm2: TransformersBackend):
    prompt = "The capital of France is"
    r = await smollm2.generate(GenerationRequest(prompt=prompt, max_tokens=3))
    assert r.usage.prompt_tokens == smollm2.count_tokens(prompt) == 5
    assert r.usage.completion_tokens == 3
    assert r.completions[0].finish_reason == "length"
    assert r.completions[0].text.startswith(" Paris")


async def test_kv_reuse_matches_plain_generate(smollm2: TransformersBackend):
    req = GenerationRequest(messages=FRANCE, max_tokens=12)
    ids = smollm2.prompt_ids(req)
    with smollm2.lock, torch.inference_mode():
        plain = smollm2.model.generate(
            input_ids=torch.tensor([ids]), max_new_tokens=12, do_sample=False
        )
    expected = smollm2.tokenizer.decode(plain[0, len(ids) :], skip_special_tokens=True)
    r = await smollm2.generate(req)
    assert r.completions[0].text == expected.strip() or r.completions[0].text == expected


async def test_n_samples_one_call_and_seed(smollm2: TransformersBackend):
    req = GenerationRequest(messages=FRANCE, n=3, max_tokens=12, temperature=1.0, seed=7)
    a = await smollm2.generate(req)
    b = await smollm2.generate(req)
    assert len(a.completions) == 3
    assert a.texts == b.texts  # same seed, same samples
    assert len(set(a.texts)) > 1  # three different draws at T=1
    # prompt billed once, completion tokens summed over the samples
    single = await smollm2.generate(GenerationRequest(messages=FRANCE, max_tokens=1))
    assert a.usage.prompt_tokens == single.usage.prompt_tokens
    assert a.usage.completion_tokens <= 3 * 12
    c = await smollm2.generate(
        GenerationRequest(messages=FRANCE, n=3, max_tokens=12, temperature=1.0, seed=8)
    )
    assert c.texts != a.texts


async def test_greedy_n_is_billed_n_times(smollm2: TransformersBackend):
    one = await smollm2.generate(GenerationRequest(messages=FRANCE, max_tokens=10))
    three = await smollm2.generate(GenerationRequest(messages=FRANCE, max_tokens=10, n=3))
    assert three.texts == one.texts * 3
    assert three.usage.completion_tokens == 3 * one.usage.completion_tokens
    assert three.usage.prompt_tokens == one.usage.prompt_tokens


async def test_stop_strings(smollm2: TransformersBackend):
    r = await smollm2.generate(GenerationRequest(messages=FRANCE, max_tokens=32, stop=(" is",)))
    (c,) = r.completions
    assert c.text == "The capital of France"
    assert c.finish_reason == "stop"
    assert r.usage.completion_tokens == smollm2.count_tokens("The capital of France is")


async def test_logprobs(smollm2: TransformersBackend):
    r = await smollm2.generate(
        GenerationRequest(
            prompt="The capital of France is", max_tokens=4, logprobs=True, top_logprobs=3
        )  # fmt: skip
    )
    (c,) = r.completions
    assert c.logprobs is not None and len(c.logprobs) == r.usage.completion_tokens == 4
    first = c.logprobs[0]
    assert first.token == " Paris"
    assert len(first.top) == 3 and first.top[0][0] == " Paris"  # greedy = top-1
    assert math.isclose(first.logprob, first.top[0][1])
    assert all(t.logprob <= 0 for t in c.logprobs)


async def test_choices_only_allowed_strings(smollm2: TransformersBackend):
    choices = ("go north", "take apple", "open door", "Paris")
    greedy = await smollm2.generate(GenerationRequest(messages=FRANCE, choices=choices))
    assert greedy.texts == ["Paris"]
    assert greedy.completions[0].sum_logprob is not None
    sampled = await smollm2.generate(
        GenerationRequest(messages=FRANCE, choices=choices, n=8, temperature=1.5, seed=1)
    )
    assert len(sampled.texts) == 8
    assert set(sampled.texts) <= set(choices)
    # raw prompt: terminator is the first stop string
    r = await smollm2.generate(
        GenerationRequest(
            prompt="Q: What is the capital of France?\nA:",
            choices=(" Paris", " banana"),
            stop=("\n",),
        )  # fmt: skip
    )
    assert r.texts == [" Paris"]


async def test_choice_prefix_not_favoured(smollm2: TransformersBackend):
    # Without a terminator, "The capital" would always beat its own extension.
    r = await smollm2.generate(
        GenerationRequest(
            messages=FRANCE, choices=("The capital", "The capital of France is Paris.")
        )
    )
    assert r.texts == ["The capital of France is Paris."]


async def test_score_continuations_ordering(smollm2: TransformersBackend):
    s = await smollm2.score_continuations(
        "The capital of France is", [" Paris", " banana", " the city of Paris"]
    )
    assert s.logprobs[0] > s.logprobs[1]
    assert s.token_counts == (1, 1, 4)
    assert s.usage.prompt_tokens == 3 * 5 + 6
    assert 2 * 5 <= s.usage.cached_prompt_tokens <= 2 * 5 + 4
    # consistent with the generation logprob of the same token
    r = await smollm2.generate(
        GenerationRequest(prompt="The capital of France is", max_tokens=1, logprobs=True)
    )
    assert r.completions[0].logprobs is not None
    # generation reads the token's logit from a one-query forward, scoring from a padded
    # row: differently shaped, so held to the dtype's plain-forward bound (test_score_paths)
    got = r.completions[0].logprobs[0].logprob
    assert math.isclose(got, s.logprobs[0], abs_tol=PLAIN_TOL[smollm2.dtype])


async def test_score_many_continuations_in_chunks(smollm2: TransformersBackend):
    conts = [f" item {i}" for i in range(7)]
    whole = await smollm2.score_continuations("A list:", conts)
    p_ids = smollm2.encode("A list:")
    c_ids = [smollm2.encode(c) for c in conts]
    chunked, _ = smollm2.score_tokens(p_ids, c_ids, chunk_tokens=2)  # one per forward
    for a, b in zip(whole.logprobs, chunked, strict=True):
        assert math.isclose(a, sum(b), abs_tol=1e-3)


async def test_json_schema_is_refused_clearly(smollm2: TransformersBackend):
    with pytest.raises(ModelError, match="does not support json_schema"):
        await smollm2.generate(GenerationRequest(messages=FRANCE, json_schema={"type": "object"}))


def test_count_tokens(smollm2: TransformersBackend):
    assert smollm2.count_tokens("") == 0
    assert smollm2.count_tokens("The capital of France is") == 5


async def test_prompt_logprobs_offsets(smollm2: TransformersBackend):
    rows = await smollm2.prompt_logprobs("The capital of France is Paris")
    assert rows[0][1] is None
    assert [r[2] for r in rows] == sorted(r[2] for r in rows)
    assert "".join(r[0] for r in rows) == "The capital of France is Paris"


async def test_prompt_longer_than_context_is_a_clear_error(smollm2: TransformersBackend):
    long = "word " * (smollm2.context_length + 10)
    with pytest.raises(ModelError, match="context"):
        await smollm2.generate(GenerationRequest(prompt=long, max_tokens=2))


STEP_HEAD = (
    "You are playing a text game. Reply with one valid action.\n\n"
    "Example:\nGoal: find the coin.\nObservation: You are in the kitchen. A door leads north.\n"
    "Action: go north\nObservation: You are in the hallway. You see a coin.\nAction: take coin\n\n"
)
ACTIONS = ["go north", "take coin", "open the wooden door", "look", "inventory"]


def _step_prompt(observation: str) -> str:
    return STEP_HEAD + f"Goal: find the coin.\nObservation: {observation}\nAction:"


async def test_batched_scores_equal_one_at_a_time(smollm2: TransformersBackend):
    prompt = _step_prompt("You are in the pantry. There is a shelf and a door to the east.")
    conts = [f" {a}\n" for a in ACTIONS]
    batched = await smollm2.score_continuations(prompt, conts)
    p_ids = smollm2.encode(prompt)
    for cont, got in zip(conts, batched.logprobs, strict=True):
        c_ids = smollm2.encode(cont)
        with smollm2.lock, torch.inference_mode():  # plain forward: no cache, no batch
            logits = smollm2.model(input_ids=torch.tensor([p_ids + c_ids])).logits[0]
        logp = torch.log_softmax(logits.float(), dim=-1)
        alone = sum(logp[len(p_ids) + i - 1, t].item() for i, t in enumerate(c_ids))
        # a one-pass forward is shaped differently: bf16 rounding alone moves it (the
        # tolerance and its measurement: tests/llm/test_score_paths.py)
        assert math.isclose(got, alone, abs_tol=PLAIN_TOL[smollm2.dtype]), (cont, got, alone)


async def test_next_step_hits_the_shared_demo_prefix(smollm2: TransformersBackend):
    smollm2.clear_prefix_cache()
    first = _step_prompt("You are in the kitchen.")
    second = _step_prompt("You are in the garden. A path leads west.")
    conts = [f" {a}\n" for a in ACTIONS]
    cold = await smollm2.score_continuations(second, conts)
    smollm2.clear_prefix_cache()
    await smollm2.score_continuations(first, conts)
    warm = await smollm2.score_continuations(second, conts)
    head = len(smollm2.encode(STEP_HEAD + "Goal: find the coin.\nObservation: You are in the"))
    k = len(conts)
    reused = warm.usage.cached_prompt_tokens - (k - 1) * len(smollm2.encode(second))
    assert head - 1 <= reused < len(smollm2.encode(second))
    for a, b in zip(cold.logprobs, warm.logprobs, strict=True):
        assert math.isclose(a, b, abs_tol=1e-4)


async def test_concurrent_generations_decode_in_one_batch(smollm2: TransformersBackend):
    import asyncio

    prompts = ["The capital of France is", "Once upon a time, there", "2 + 2 =", "Hello"]
    reqs = [GenerationRequest(prompt=p, max_tokens=6 + i) for i, p in enumerate(prompts)]
    alone = [await smollm2.generate(r) for r in reqs]
    before = len(smollm2.batch_sizes)
    with smollm2.lock:  # the model is busy: all four queue up behind it
        task = asyncio.ensure_future(asyncio.gather(*(smollm2.generate(r) for r in reqs)))
        await asyncio.sleep(1.0)
    together = await task
    assert smollm2.batch_sizes[before:] == [4]
    assert [r.texts for r in together] == [r.texts for r in alone]
    for a, b in zip(alone, together, strict=True):
        assert b.usage.prompt_tokens == a.usage.prompt_tokens
        assert b.usage.completion_tokens == a.usage.completion_tokens
        assert b.completions[0].finish_reason == a.completions[0].finish_reason


async def test_same_step_scored_again_comes_from_the_memo(smollm2: TransformersBackend):
    smollm2.clear_prefix_cache()
    req = GenerationRequest(
        prompt=_step_prompt("You are in the attic."), choices=tuple(f" {a}" for a in ACTIONS),
        stop=("\n",), n=3, temperature=0.7, seed=3,
    )  # fmt: skip
    memo = smollm2._loaded().scores
    first = await smollm2.generate(req)
    hits = memo.hits
    again = await smollm2.generate(req)  # an adaptive vote's second batch
    assert memo.hits == hits + 1
    assert again.texts == first.texts
    assert [c.sum_logprob for c in again.completions] == [
        c.sum_logprob for c in first.completions
    ]
    assert again.usage.cached_prompt_tokens == again.usage.prompt_tokens - 1

"""The rethink loop's stop conditions, drafts, yielding and resuming (scripted model)."""

from __future__ import annotations

import pytest

from nightowl.config import Prices
from nightowl.config_sleep import GeneratorConfig
from nightowl.llm.scripted import ScriptedModel, render_request, word_count
from nightowl.sleeptime.generate import (
    ClaimLostError,
    RethinkHooks,
    Yielded,
    parse_qa,
    rethink,
)

PRICES = Prices(input=1.0, output=2.0)
CTX = "Tom has 3 apples."


async def test_stops_when_model_says_done() -> None:
    model = ScriptedModel(["notes one", "notes two\nQ: apples?\nA: 3", "DONE"])
    out = await rethink(model, CTX, GeneratorConfig(max_rounds=10), PRICES)
    assert out.stop_reason == "done" and out.rounds == 3
    assert out.text == "notes two\nQ: apples?\nA: 3"
    assert out.qa == [{"q": "apples?", "a": "3"}]
    assert model.remaining == 0
    assert out.completion_tokens == 2 + 6 + 1
    # cost from the usage the model reported, at the given prices
    prompt = sum(word_count(render_request(c)) for c in model.calls)
    assert out.prompt_tokens == prompt
    assert out.cost_usd == pytest.approx(PRICES.cost(prompt, 0, 9))


async def test_rewrite_ending_in_done_is_kept_and_stops() -> None:
    model = ScriptedModel(["first", "better notes\nDONE"])
    out = await rethink(model, CTX, GeneratorConfig(max_rounds=5), PRICES)
    assert (out.text, out.rounds, out.stop_reason) == ("better notes", 2, "done")


async def test_stops_at_round_budget() -> None:
    model = ScriptedModel(default="more notes")
    out = await rethink(model, CTX, GeneratorConfig(max_rounds=3), PRICES)
    assert out.rounds == 3 and out.stop_reason == "rounds" and len(model.calls) == 3


async def test_stops_at_token_budget_and_caps_last_round() -> None:
    model = ScriptedModel(default=" ".join(["w"] * 50))
    cfg = GeneratorConfig(max_rounds=10, round_max_tokens=40, token_budget=100)
    out = await rethink(model, CTX, cfg, PRICES)
    assert out.stop_reason == "tokens"
    assert [c.max_tokens for c in model.calls] == [40, 40, 20]
    assert out.completion_tokens == 100


async def test_empty_first_round_stops() -> None:
    out = await rethink(ScriptedModel(["  "]), CTX, GeneratorConfig(), PRICES)
    assert out.stop_reason == "empty" and out.text == ""


async def test_drafts_sampled_in_one_call_then_merged() -> None:
    model = ScriptedModel(["draft a", "draft b", "draft c", "merged notes", "DONE"])
    out = await rethink(model, CTX, GeneratorConfig(drafts=3, max_rounds=4), PRICES)
    assert model.calls[0].n == 3 and model.calls[0].temperature > 0
    assert "Draft 3:\ndraft c" in model.calls[1].messages[-1].content
    assert out.text == "merged notes" and out.rounds == 2 and out.stop_reason == "done"


async def test_yields_between_rounds_and_resumes() -> None:
    model = ScriptedModel(["r1", "r2", "r3"])
    busy = iter([False, True])
    saved = []
    hooks = RethinkHooks(
        on_round=lambda p: saved.append(p) or True, should_yield=lambda: next(busy)
    )
    with pytest.raises(Yielded) as info:
        await rethink(model, CTX, GeneratorConfig(max_rounds=3), PRICES, hooks=hooks)
    progress = info.value.progress
    assert progress.rounds == 2 and progress.text == "r2" and len(model.calls) == 2
    out = await rethink(model, CTX, GeneratorConfig(max_rounds=3), PRICES, start=progress)
    assert out.rounds == 3 and out.text == "r3" and out.stop_reason == "rounds"
    assert "Current notes:\nr2" in model.calls[2].messages[-1].content


async def test_lost_claim_stops_the_loop() -> None:
    model = ScriptedModel(default="x")
    hooks = RethinkHooks(on_round=lambda p: False)
    with pytest.raises(ClaimLostError):
        await rethink(model, CTX, GeneratorConfig(max_rounds=5), PRICES, hooks=hooks)
    assert len(model.calls) == 1


def test_parse_qa_pairs() -> None:
    text = "Facts.\nQ: How many apples?\nA: 3\n- Q1: Who?\n  A1: Tom\nQ: dangling"
    assert parse_qa(text) == [{"q": "How many apples?", "a": "3"}, {"q": "Who?", "a": "Tom"}]

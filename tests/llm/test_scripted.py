import pytest

from nightowl.config import ModelSpec, load_settings
from nightowl.errors import ConfigError, ModelError, UnknownNameError
from nightowl.llm.base import ChatMessage, GenerationRequest
from nightowl.llm.registry import build_backend, clear_cache
from nightowl.llm.scripted import FunctionModel, ScriptedModel, ScriptExhaustedError


async def test_scripted_consumes_n_per_call_and_raises():
    m = ScriptedModel(["go north", "take key", ValueError("boom")])
    r = await m.generate(GenerationRequest(prompt="Obs: a room\nAction:", n=2))
    assert r.texts == ["go north", "take key"]
    assert r.usage.prompt_tokens == 4
    assert r.usage.completion_tokens == 4
    with pytest.raises(ValueError):
        await m.generate(GenerationRequest(prompt="x"))
    with pytest.raises(ScriptExhaustedError):
        await m.generate(GenerationRequest(prompt="x"))
    assert len(m.calls) == 3


async def test_scripted_stop_length_logprobs_default_cycle():
    m = ScriptedModel(["a b c\nd", "one two three four"], default="ok")
    r = await m.generate(
        GenerationRequest(messages=(ChatMessage(role="user", content="hi"),), stop=("\n",))
    )
    assert r.completions[0].text == "a b c"
    assert r.completions[0].finish_reason == "stop"
    r = await m.generate(GenerationRequest(prompt="p", max_tokens=2, logprobs=True))
    assert r.completions[0].text == "one two"
    assert r.completions[0].finish_reason == "length"
    assert r.completions[0].sum_logprob == pytest.approx(-0.2)
    r = await m.generate(GenerationRequest(prompt="p", n=2))
    assert r.texts == ["ok", "ok"]
    c = ScriptedModel(["x", "y"], cycle=True)
    r = await c.generate(GenerationRequest(prompt="p", n=5))
    assert r.texts == ["x", "y", "x", "y", "x"]


async def test_scores_mapping_and_function():
    m = ScriptedModel(scores={"Paris": -0.5, "banana": -9.0})
    s = await m.score_continuations("The capital is", [" Paris", "banana", "zzz"])
    assert s.logprobs == (-0.5, -9.0, -10.0)
    f = FunctionModel(lambda r: "x", scores=lambda p, c: -len(c))
    s = await f.score_continuations("p", ["ab", "abcd"])
    assert s.logprobs == (-2.0, -4.0)


async def test_function_model_forms():
    calls = iter(range(100))
    f = FunctionModel(lambda r: f"s{next(calls)}")
    r = await f.generate(GenerationRequest(prompt="p", n=3))
    assert r.texts == ["s0", "s1", "s2"]

    async def afn(req):
        return ["a", "b"]

    g = FunctionModel(afn)
    assert (await g.generate(GenerationRequest(prompt="p", n=2))).texts == ["a", "b"]
    with pytest.raises(ModelError):
        await g.generate(GenerationRequest(prompt="p", n=3))


def test_registry_scripted_kind_cached_and_unknown():
    clear_cache()
    settings = load_settings(
        models={
            "fake": ModelSpec(backend="scripted", params={"script": ["hello"], "default": "bye"}),
            "fn": ModelSpec(
                backend="scripted", params={"function": "nightowl.llm.scripted:last_user_message"}
            ),
            "bad": ModelSpec(backend="scripted", params={"nope": 1}),
        }
    )
    a = build_backend("fake", settings)
    assert build_backend("fake", settings) is a
    assert isinstance(a, ScriptedModel)
    assert isinstance(build_backend("fn", settings), FunctionModel)
    with pytest.raises(UnknownNameError):
        build_backend("nope", settings)
    with pytest.raises(ConfigError):
        build_backend("bad", settings)

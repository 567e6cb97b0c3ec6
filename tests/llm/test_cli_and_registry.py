"""`nightowl models ...` through typer's CliRunner; registry errors; the vLLM extra."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from nightowl.cli.main import app
from nightowl.config import ModelSpec, load_settings
from nightowl.errors import MissingExtraError, UnknownNameError
from nightowl.llm.registry import build_backend, create_backend, model_names
from nightowl.llm.vllm import vllm_available

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NIGHTOWL_HOME", str(tmp_path))
    monkeypatch.setenv("NIGHTOWL_CONFIG", str(tmp_path / "none.toml"))
    return tmp_path


def test_models_try_prints_completion_usage_cost(smollm2, home):
    smollm2.clear_prefix_cache()  # cold call: exact token and cost numbers
    result = runner.invoke(app, ["models", "try", "smollm2", "What is the capital of France?"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Paris" in out
    assert "usage: prompt 37 (cached 0), completion 8, total 45 tokens" in out
    # 37 * $0.10 + 8 * $0.40 per 1M tokens
    assert "cost: $0.0000069" in out
    assert "ledger run" in out


def test_models_try_cut_off_is_one_line_error(smollm2, home):
    result = runner.invoke(
        app,
        ["models", "try", "smollm2", "Tell me a long story.", "--max-tokens", "2", "--no-record"],
    )
    assert result.exit_code == 1
    assert "cut off at max_tokens" in result.output
    assert "Traceback" not in result.output


def test_models_try_unknown_model_exit_2(home):
    result = runner.invoke(app, ["models", "try", "nope", "hi"])
    assert result.exit_code == 2
    assert "unknown model 'nope'" in result.output
    assert "smollm2" in result.output
    assert "Traceback" not in result.output


def test_models_try_unreachable_server_exit_1(home, monkeypatch):
    from tests.llm.conftest import free_port

    (home / "n.toml").write_text(
        "[models.dead]\nbackend = 'openai'\n"
        f"params = {{ base_url = 'http://127.0.0.1:{free_port()}/v1', max_retries = 0 }}\n"
    )
    monkeypatch.setenv("NIGHTOWL_CONFIG", str(home / "n.toml"))
    result = runner.invoke(app, ["models", "try", "dead", "hi", "--no-record"])
    assert result.exit_code == 1, result.output
    assert "unreachable at http://127.0.0.1" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_models_list(home):
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0
    assert '"smollm2"' in result.output and '"frontier-api"' in result.output
    table = runner.invoke(app, ["models", "list"])
    assert table.exit_code == 0 and "smollm2" in table.output


def test_unknown_model_raises_unknown_name():
    with pytest.raises(UnknownNameError, match="unknown model 'gpt-17'"):
        build_backend("gpt-17", load_settings())
    assert "smollm2" in model_names(load_settings())


def test_build_backend_is_cached(smollm2):
    assert build_backend("smollm2", load_settings()) is smollm2


@pytest.mark.skipif(vllm_available(), reason="vllm is installed")
def test_vllm_backend_without_extra_is_clear():
    spec = ModelSpec(backend="vllm", params={"model": "/models/x"})
    with pytest.raises(MissingExtraError, match=r"nightowl\[gpu\]"):
        create_backend("v", spec, load_settings())


@pytest.mark.gpu
async def test_vllm_backend_generates():
    pytest.importorskip("vllm", reason="vllm is not installed (pip install 'nightowl[gpu]')")
    import os

    path = os.environ.get("NIGHTOWL_TEST_VLLM_MODEL")
    if not path:
        pytest.skip("set NIGHTOWL_TEST_VLLM_MODEL to a safetensors model directory")
    from nightowl.llm.base import ChatMessage, GenerationRequest

    spec = ModelSpec(
        backend="vllm", params={"model": path, "engine": {"gpu_memory_utilization": 0.3}}
    )
    backend = create_backend("v", spec, load_settings())
    msgs = (ChatMessage(role="user", content="What is the capital of France?"),)
    r = await backend.generate(GenerationRequest(messages=msgs, n=2, max_tokens=16))
    assert len(r.completions) == 2 and r.usage.prompt_tokens > 0
    c = await backend.generate(GenerationRequest(messages=msgs, choices=("Paris", "London")))
    assert c.texts[0] in ("Paris", "London")
    s = await backend.score_continuations("The capital of France is", [" Paris", " banana"])
    assert s.logprobs[0] > s.logprobs[1]

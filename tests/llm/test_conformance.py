"""Every backend passes the same conformance checks."""

from __future__ import annotations

from nightowl.llm.openai_compat import OpenAICompatBackend
from nightowl.llm.scripted import FunctionModel, ScriptedModel
from tests.llm.conformance import check_backend


async def test_scripted_conforms():
    # scripted texts are chosen to be valid answers for each step of the suite
    script = ["hello there", "a", "b", "c", "4,", "Hello", "alpha", "beta"]
    await check_backend(ScriptedModel(script))


async def test_function_model_conforms():
    def fn(request):
        if request.choices:
            return request.choices[0]
        return "Hello"

    await check_backend(FunctionModel(fn))


async def test_transformers_conforms(smollm2):
    await check_backend(smollm2)


async def test_openai_client_against_server_conforms(server_url):
    backend = OpenAICompatBackend(name="smollm2", base_url=server_url)
    await check_backend(backend)
    await backend.aclose()

"""BAVT and the baseline through an OpenAI-compatible endpoint (nightowl's own server over a
scripted model, uvicorn in a thread): the path `bench/bavt.py --base-url` takes."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from nightowl.agent.budget import Budget
from nightowl.agent.search.baseline import MajorityVote, VoteConfig
from nightowl.agent.search.bavt import BavtConfig, BavtSearch
from nightowl.agent.search.space import SearchSpace
from nightowl.envs.multihop import MultiHopEnv
from nightowl.llm.scripted import FunctionModel

TASK = "multihop/2hop/test/20000"


def _gold() -> list[str]:
    env = MultiHopEnv()
    env.reset(TASK)
    out = []
    while (a := env.expert_action()) is not None:
        out.append(a)
        env.step(a)
    return out


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    uvicorn = pytest.importorskip("uvicorn")
    from nightowl.llm.serve import create_app

    gold = _gold()

    def fn(req):
        prompt = req.prompt or ""
        if prompt.rstrip().endswith("Score:"):
            return "0.5"
        n = prompt.count("\nAction: ")
        return " " + gold[min(n, len(gold) - 1)]

    backend = FunctionModel(fn, name="scripted-endpoint")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(create_app(backend), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_bavt_and_vote_over_openai_endpoint(endpoint: str) -> None:
    from nightowl.llm.openai_compat import OpenAICompatBackend

    async def go():
        model = OpenAICompatBackend(name="scripted-endpoint", base_url=endpoint)
        try:
            env = MultiHopEnv()
            obs = env.reset(TASK)
            space = SearchSpace.from_env(env, goal=obs.goal)
            b1 = Budget(tokens=20_000, tool_calls=6)
            r1 = await BavtSearch(model, BavtConfig(seed=0, critic="generate")).run(space, b1)
            b2 = Budget(tokens=20_000, tool_calls=6)
            r2 = await MajorityVote(model, VoteConfig(seed=0, max_rollouts=3)).run(space, b2)
            return env, r1, b1, r2, b2
        finally:
            await model.aclose()

    env, r1, b1, r2, b2 = asyncio.run(go())
    gold = f"answer[{env.question.answer}]"
    assert r1.final == gold and r2.final == gold
    for b in (b1, b2):
        assert b.used_of("tokens") <= 20_000 and b.used_of("tool_calls") <= 6

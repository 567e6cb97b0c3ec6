"""`nightowl serve` as a real process on 127.0.0.1: the embedded student (SmolLM2), the
oracle teacher from a JSON file, bearer keys in SQLite, official clients, bad input,
budgets, metrics, the access log, and a thread that survives a restart."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.server.conftest import ServerProcess, start_server

QUESTION = "What is 2 + 2?"
GOLD = {QUESTION: "2 + 2 = 4. The answer is 4.", "What colour is the sky?": "Blue."}


def run_cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "nightowl.cli.main", *args], env=env, capture_output=True,
        text=True, timeout=120, check=True,
    )
    return out.stdout.strip()


class Served:
    def __init__(self, home: Path) -> None:
        import os

        self.home = home
        self.env = {**os.environ, "NIGHTOWL_HOME": str(home)}
        self.oracle = home / "oracle.json"
        self.oracle.write_text(json.dumps(GOLD))
        self.key = run_cli(self.env, "keys", "create", "tests", "--tenant", "acme")
        self.server: ServerProcess | None = None

    def start(self, *extra: str) -> ServerProcess:
        self.server = start_server(
            ["serve", "--oracle", str(self.oracle), "--n", "2", "--max-tokens", "8",
             "--max-concurrency", "2", "--max-body-bytes", "20000", "--max-prompt-chars",
             "4000", "--key-rate", "10000/second", *extra],  # rates: tests/server/test_limits.py
            self.home / "server.log", env=self.env, ready="/health",
        )
        return self.server

    def key_id(self) -> str:
        rows = json.loads(run_cli(self.env, "keys", "list", "--json"))
        return str(next(r["id"] for r in rows if r["name"] == "tests"))

    def log(self) -> str:
        return (self.home / "server.log").read_text(errors="replace")

    def access_lines(self) -> list[str]:
        return [ln for ln in self.log().splitlines() if " nightowl.access " in ln]

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def headers(self, **more: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", **more}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(tmp_path_factory.mktemp("serve"))
    s.start()
    try:
        yield s
    finally:
        if s.server is not None:
            s.server.stop()


def test_models_health_metrics(served: Served) -> None:
    client = openai.OpenAI(base_url=served.url, api_key=served.key, max_retries=0)
    ids = {m.id for m in client.models.list().data}
    assert ids == {"nightowl-cascade", "nightowl-student", "nightowl-teacher"}
    base = served.url.removesuffix("/v1")
    assert httpx.get(f"{base}/health").json()["status"] == "ok"


def test_openai_sync_with_extension_and_oracle_escalation(served: Served) -> None:
    client = openai.OpenAI(base_url=served.url, api_key=served.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="nightowl-teacher", messages=[{"role": "user", "content": QUESTION}]
    )
    reply = raw.parse()
    ext = json.loads(raw.text)["nightowl"]
    assert ext["tier"] == "oracle" and reply.choices[0].message.content == GOLD[QUESTION]
    assert ext["cost_usd"] > 0
    cascade = client.chat.completions.create(
        model="nightowl-cascade",
        messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION}]}],
    )
    extra = cascade.model_extra or {}
    assert extra["nightowl"]["tier"] in ("student", "oracle")
    assert extra["nightowl"]["agreement"]["share"] > 0
    assert cascade.usage is not None and cascade.usage.prompt_tokens > 0


def test_streaming_async_and_langchain(served: Served) -> None:
    client = openai.OpenAI(base_url=served.url, api_key=served.key, max_retries=0)
    chunks = list(client.chat.completions.create(
        model="nightowl-student", messages=[{"role": "user", "content": "Hi"}], stream=True,
        stream_options={"include_usage": True},
    ))
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert (chunks[-1].model_extra or {})["nightowl"]["tier"] == "student"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    async def go() -> str:
        aclient = openai.AsyncOpenAI(base_url=served.url, api_key=served.key, max_retries=0)
        r = await aclient.chat.completions.create(
            model="nightowl-teacher", messages=[{"role": "user", "content": QUESTION}]
        )
        await aclient.close()
        return r.choices[0].message.content or ""

    assert asyncio.run(go()) == GOLD[QUESTION]
    lc = pytest.importorskip("langchain_openai")
    llm = lc.ChatOpenAI(base_url=served.url, api_key=served.key, model="nightowl-teacher",
                        max_retries=0)
    assert llm.invoke(QUESTION).content == GOLD[QUESTION]
    assert "".join(str(p.content) for p in llm.stream(QUESTION)) == GOLD[QUESTION]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b'{"messages": [', 400, "malformed JSON"),
        (json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(), 400, "role"),
        (json.dumps({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}).encode(),
         404, "gpt-9"),
        (json.dumps({"messages": [{"role": "user", "content": "x" * 30000}]}).encode(), 413,
         "limit"),
        (json.dumps({"messages": [{"role": "user", "content": "x " * 2500}]}).encode(), 400,
         "characters"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}],
                     "tools": [{"type": "function", "function": {"name": "f"}}]}).encode(), 400,
         "tools"),
        (json.dumps({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}).encode(), 400,
         "image_url"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}], "logprobs": True}).encode(),
         400, "logprobs"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}], "frobnicate": 1}).encode(),
         400, "frobnicate"),
    ],
)
def test_bad_input_gets_one_line_4xx(served: Served, body: bytes, status: int, needle: str) -> None:
    r = httpx.post(f"{served.url}/chat/completions", content=body, timeout=60,
                   headers=served.headers(**{"Content-Type": "application/json"}))
    assert r.status_code == status, r.text
    msg = r.json()["error"]["message"]
    assert needle in msg and "\n" not in msg
    assert httpx.get(f"{served.url}/models", headers=served.headers()).status_code == 200


def test_keys_budget_and_revocation(served: Served) -> None:
    ok = {"model": "nightowl-teacher", "messages": [{"role": "user", "content": QUESTION}]}
    for auth in (None, "Bearer nope"):
        r = httpx.post(f"{served.url}/chat/completions", json=ok,
                       headers={"Authorization": auth} if auth else {})
        assert r.status_code == 401 and "key" in r.json()["error"]["message"]
    poor = run_cli(served.env, "keys", "create", "poor", "--budget", "0.0000001")
    hdr = {"Authorization": f"Bearer {poor}"}
    assert httpx.post(f"{served.url}/chat/completions", json=ok, headers=hdr,
                      timeout=60).status_code == 200
    r = httpx.post(f"{served.url}/chat/completions", json=ok, headers=hdr, timeout=60)
    assert r.status_code == 402 and "budget" in r.json()["error"]["message"]
    listed = run_cli(served.env, "keys", "list")
    assert "poor" in listed and "acme" in listed
    prefix = poor[:10]
    run_cli(served.env, "keys", "revoke", prefix)
    r = httpx.post(f"{served.url}/chat/completions", json=ok, headers=hdr, timeout=60)
    assert r.status_code == 401


def test_concurrency_limit_gives_429_with_retry_after(served: Served) -> None:
    body = {"model": "nightowl-student", "messages": [{"role": "user", "content": "Count."}],
            "max_tokens": 8}

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120, headers=served.headers()) as c:
            return list(await asyncio.gather(
                *[c.post(f"{served.url}/chat/completions", json=body) for _ in range(5)]))

    codes = [r.status_code for r in asyncio.run(go())]
    assert set(codes) <= {200, 429} and 429 in codes and 200 in codes
    busy = next(r for r in asyncio.run(go()) if r.status_code == 429)
    assert busy.headers["retry-after"] == "2"
    base = served.url.removesuffix("/v1")
    assert httpx.get(f"{base}/metrics").status_code == 401  # behind a key unless public
    scraped = httpx.get(f"{base}/metrics", headers=served.headers())
    assert scraped.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    metrics = scraped.text
    assert 'nightowl_requests_total{status="429"}' in metrics
    assert 'nightowl_replies_total{tier="student"}' in metrics
    assert "nightowl_request_latency_seconds_bucket" in metrics
    assert "vllm:num_requests_waiting 0" in metrics
    # nightowl's own idle probe reads the server like a vLLM server.
    from nightowl.sleeptime.idle import RUNNING, WAITING, parse_prometheus_gauges

    assert parse_prometheus_gauges(metrics, (RUNNING, WAITING)) == {RUNNING: 0.0, WAITING: 0.0}


def test_access_log_one_line_per_request_with_key_id_status_and_tier(served: Served) -> None:
    kid = served.key_id()
    before = len(served.access_lines())
    client = openai.OpenAI(base_url=served.url, api_key=served.key, max_retries=0)
    client.chat.completions.create(
        model="nightowl-teacher", messages=[{"role": "user", "content": QUESTION}])
    client.chat.completions.create(
        model="nightowl-student", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    wrong = "no-" + "x" * 43  # a key-shaped token that is not a key
    assert httpx.get(f"{served.url}/models",
                     headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    deadline = time.monotonic() + 10  # the line is written right after the response
    while len(served.access_lines()) < before + 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = served.access_lines()[before:]
    assert len(lines) == 3, lines  # one line per request
    oracle, student, denied = lines
    assert " POST /v1/chat/completions status=200 " in oracle
    assert f" key={kid} tier=oracle " in oracle
    assert " POST /v1/chat/completions status=200 " in student
    assert f" key={kid} tier=student " in student
    assert " GET /v1/models status=401 " in denied and " key=- tier=- " in denied
    assert float(oracle.split(" ms=")[1].split()[0]) > 0
    log = served.log()
    assert served.key not in log and wrong not in log  # never a key
    assert '"POST /v1/chat/completions HTTP/1.1"' not in log  # uvicorn's own line is off


def test_no_access_log_flag(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "NIGHTOWL_HOME": str(tmp_path)}
    log = tmp_path / "server.log"
    server = start_server(["serve", "--no-auth", "--no-access-log", "--max-tokens", "8"], log,
                          env=env, ready="/health")  # fmt: skip
    try:
        assert httpx.get(f"{server.url}/models").status_code == 200
        time.sleep(0.5)
    finally:
        server.stop()
    text = log.read_text(errors="replace")
    assert " nightowl.access " not in text and "/v1/models" not in text


@pytest.mark.slow
def test_thread_survives_restart(served: Served) -> None:
    hdr = served.headers(**{"X-Nightowl-Thread": "conv-1"})
    first = httpx.post(f"{served.url}/chat/completions", headers=hdr, timeout=120, json={
        "model": "nightowl-student",
        "messages": [{"role": "user", "content": "My name is Ada."}]}).json()
    assert first["nightowl"]["revision"] == 2
    assert served.server is not None
    served.server.stop()
    served.start()
    second = httpx.post(f"{served.url}/chat/completions", headers=hdr, timeout=120, json={
        "model": "nightowl-student",
        "messages": [{"role": "user", "content": "What is my name?"}]}).json()
    # The stored history (2 messages) plus this turn and its reply.
    assert second["nightowl"]["revision"] == 4
    assert second["nightowl"]["thread"] == "conv-1"
    assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"]


def test_openai_client_example_against_the_server(served: Served) -> None:
    """examples/chat_openai_client.py, as a user runs it, against the real server."""
    import os

    example = Path(__file__).resolve().parents[2] / "examples" / "chat_openai_client.py"
    env = {**os.environ, "NIGHTOWL_URL": served.url, "NIGHTOWL_KEY": served.key}
    out = subprocess.run([sys.executable, str(example)], env=env, capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert "nightowl-cascade" in lines[0] and any(ln.startswith("nightowl: {") for ln in lines)

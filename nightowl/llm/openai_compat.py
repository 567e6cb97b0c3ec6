"""OpenAI-protocol HTTP backend: vLLM and llama.cpp servers, hosted APIs.

Every caller sends one request shape (`GenerationRequest`: chat ``messages`` or a raw
``prompt``); the entry's `ModelCapabilities` say what the server speaks and this backend
maps the request onto it (docs/servers.md has the table):

- endpoint: messages go to ``/chat/completions`` and prompts to ``/completions`` when the
  server has both; a prompt for a chat-only server is sent as one user message; messages
  for a completions-only server are rendered with ``capabilities.chat_template``.
- ``n > 1`` without server support: ``n`` sequential calls (seeds ``seed, seed+1, ...``).
- ``logprobs`` without server support: not requested; ``Completion.logprobs`` is None.
- ``choices=``: sent in the server's constraint style (vLLM ``structured_outputs`` /
  ``guided_choice``, an OpenAI JSON-schema enum whose answer is unwrapped, llama.cpp GBNF
  ``grammar``). With ``constraints = "none"``: on a completions server with echo logprobs
  each choice is scored and the pick is greedy or sampled from softmax(log p / T); else the
  model answers freely and the answer is mapped to the nearest choice (`nearest_choice`;
  ``Completion.raw_text`` keeps the model's text; nothing near -> `ModelOutputError`).
  A constrained answer outside the choices raises `ModelOutputError` (server ignored it).
- ``json_schema=`` without server support: the first JSON value in the answer is kept
  (not validated against the schema); none -> `ModelOutputError`.
- `score_continuations` needs ``/completions`` with echo prompt logprobs; otherwise it
  raises `NotImplementedError`, which every caller treats as "cannot score".

Usage (with ``prompt_tokens_details.cached_tokens`` when the server reports it) comes
from the server, i.e. from the model's own tokenizer.

Failures: 429, 5xx, timeouts and connection errors are retried with exponential backoff
and jitter (bounded by ``max_retries``; ``Retry-After`` honoured up to ``backoff_max_s``),
then raise `BackendUnavailableError` (an infrastructure error: the agent loop stops the
run); other 4xx raise `ModelError` at once, carrying the status and body.

Registry params: ``base_url`` (required), ``model`` (served model name; defaults to the
registry name), ``api_key_env`` (name of the env var holding the key), ``timeout_s``,
``connect_timeout_s``, ``max_retries``, ``backoff_s``, ``backoff_max_s``,
``choice_style`` (overrides ``capabilities.constraints``), ``max_tokens_field``
("max_tokens" or "max_completion_tokens"), ``extra_body`` (dict merged into every
request), ``headers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, get_args

import httpx

from nightowl.config import ConstraintStyle, ModelCapabilities
from nightowl.errors import BackendUnavailableError, ConfigError, ModelError, ModelOutputError
from nightowl.llm._openai_protocol import (
    EndpointPlan,
    chat_logprobs,
    completion_logprobs,
    constraint_fields,
    error_message,
    finish_reason,
    map_answer,
    parse_usage,
    plan_endpoint,
)
from nightowl.llm.base import (
    Completion,
    GenerationRequest,
    GenerationResult,
    ModelBackend,
    ScoredContinuations,
    Usage,
)

if TYPE_CHECKING:
    from nightowl.config import ModelSpec, Settings

_CHOICE_STYLES: tuple[str, ...] = get_args(ConstraintStyle)
_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

__all__ = ["OpenAICompatBackend", "from_spec", "parse_usage"]


class OpenAICompatBackend(ModelBackend):
    """Any server speaking the OpenAI completions/chat-completions protocol."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
        choice_style: ConstraintStyle | None = None,
        max_tokens_field: str = "max_tokens",
        extra_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        capabilities: ModelCapabilities | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"model {name!r}: base_url must start with http:// or https://")
        self.capabilities = capabilities or ModelCapabilities()
        if choice_style is None:
            choice_style = self.capabilities.constraints
        if choice_style is None:
            choice_style = "json_schema" if "api.openai.com" in base_url else "structured_outputs"
        if choice_style not in _CHOICE_STYLES:
            raise ConfigError(
                f"model {name!r}: choice_style must be one of {', '.join(_CHOICE_STYLES)}"
            )
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.model = model or name
        self.api_key = api_key
        self.timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self.max_retries = max(0, int(max_retries))
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.choice_style: ConstraintStyle = choice_style
        self.max_tokens_field = max_tokens_field
        self.extra_body = dict(extra_body or {})
        self.headers = dict(headers or {})
        self._transport = transport
        # httpx clients are bound to the event loop that first used them.
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]] = {}
        #: HTTP attempts made (retries included); useful in tests and reports
        self.attempts = 0

    # -- HTTP plumbing -----------------------------------------------------------
    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        entry = self._clients.get(id(loop))
        if entry is not None and entry[0] is loop:
            return entry[1]
        headers = {"Content-Type": "application/json", **self.headers}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        client = httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout, headers=headers, transport=self._transport
        )
        self._clients[id(loop)] = (loop, client)
        return client

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        retry_after = response.headers.get("retry-after", "") if response is not None else ""
        with contextlib.suppress(ValueError):  # absent or not a number: back off as usual
            return min(max(float(retry_after), 0.0), self.backoff_max_s)
        base = min(self.backoff_s * (2**attempt), self.backoff_max_s)
        return base * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not crypto

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON with retries; return the decoded JSON object."""
        client = self._client()
        url = f"{self.base_url}{path}"
        last: str = ""
        status: int | None = None
        for attempt in range(self.max_retries + 1):
            self.attempts += 1
            response: httpx.Response | None = None
            try:
                response = await client.post(path, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "unreachable"
                last = f"model backend {self.name!r} {kind} at {url}: {type(exc).__name__}"
                status = None
            else:
                if response.status_code < 400:
                    try:
                        data = response.json()
                    except json.JSONDecodeError:
                        raise ModelError(
                            f"{self.name}: non-JSON response from {url}",
                            model=self.name,
                            status=response.status_code,
                            body=response.text[:2000],
                        ) from None
                    if not isinstance(data, dict):
                        raise ModelError(
                            f"{self.name}: unexpected response from {url}",
                            model=self.name,
                            body=response.text[:2000],
                        )
                    return data
                status = response.status_code
                text = response.text[:2000]
                if status not in _RETRY_STATUS:
                    hint = ""
                    if status in (401, 403):
                        hint = " (check the API key / api_key_env)"
                    raise ModelError(
                        f"{self.name}: HTTP {status} from {url}{hint}: {error_message(text)}",
                        model=self.name,
                        status=status,
                        body=text,
                    )
                last = (
                    f"model backend {self.name!r}: HTTP {status} from {url}: "
                    f"{error_message(text)}"
                )
            if attempt < self.max_retries:
                await asyncio.sleep(self._delay(attempt, response))
        # unreachable, timing out or 429/5xx after every retry: an infrastructure error
        raise BackendUnavailableError(
            f"{last} (after {self.max_retries + 1} attempts)",
            model=self.name,
            url=url,
            status=status,
            body=last,
        )

    # -- requests ----------------------------------------------------------------
    def _body(
        self, request: GenerationRequest, plan: EndpointPlan, constraint: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        caps = self.capabilities
        body: dict[str, Any] = {
            "model": self.model,
            self.max_tokens_field: request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if caps.n:  # servers without n may reject the field
            body["n"] = request.n
        stop = list(dict.fromkeys((*request.stop, *plan.extra_stop)))
        if stop:
            body["stop"] = stop
        if request.seed is not None:
            body["seed"] = request.seed
        wants_logprobs = request.logprobs and caps.logprobs
        if plan.endpoint == "chat":
            body["messages"] = [{"role": m.role, "content": m.content} for m in plan.messages or ()]
            if wants_logprobs:
                body["logprobs"] = True
                if request.top_logprobs:
                    body["top_logprobs"] = request.top_logprobs
        else:
            body["prompt"] = plan.prompt
            if wants_logprobs:
                body["logprobs"] = max(request.top_logprobs, 0)
        body.update(constraint)
        body.update(self.extra_body)
        return ("/chat/completions" if plan.endpoint == "chat" else "/completions"), body

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Generate ``request.n`` samples, mapped onto what the server speaks.

        One HTTP call for all samples where the server supports ``n``, else ``n``
        sequential calls (seeds ``seed, seed+1, ...``). Choices the server cannot
        constrain are scored (completions servers with echo logprobs) or generated
        freely and mapped to the nearest choice (``Completion.raw_text`` keeps the text).
        """
        started = time.perf_counter()
        plan = plan_endpoint(request, self.capabilities.api, self.capabilities.chat_template)
        constraint = constraint_fields(request, self.choice_style, plan.endpoint)
        can_score = plan.endpoint == "completions" and self.capabilities.echo
        if constraint is None and request.choices is not None and can_score:
            return await self._pick_by_score(request, plan, started)
        if self.capabilities.n or request.n == 1:
            subs = [request]
        else:
            subs = [
                replace(request, n=1, seed=None if request.seed is None else request.seed + i)
                for i in range(request.n)
            ]
        completions: list[Completion] = []
        usage = Usage()
        model = self.name
        for sub in subs:
            path, body = self._body(sub, plan, constraint or {})
            data = await self.post(path, body)
            raw = data.get("choices")
            if not isinstance(raw, list) or not raw:
                raise ModelOutputError(
                    f"{self.name}: response has no choices",
                    model=self.name,
                    body=str(data)[:2000],
                )
            raw = sorted(raw, key=lambda c: c.get("index", 0))[: sub.n]
            completions += [
                self._completion(c, plan.endpoint, request, constrained=constraint is not None)
                for c in raw
            ]
            usage = usage + parse_usage(data.get("usage"))
            model = str(data.get("model") or self.name)
        return GenerationResult(
            completions=tuple(completions),
            usage=usage,
            model=model,
            latency_s=time.perf_counter() - started,
        )

    def _completion(
        self, c: dict[str, Any], endpoint: str, request: GenerationRequest, *, constrained: bool
    ) -> Completion:
        wants_logprobs = request.logprobs and self.capabilities.logprobs
        if endpoint == "chat":
            text = (c.get("message") or {}).get("content") or ""
            logprobs = chat_logprobs(c.get("logprobs")) if wants_logprobs else None
        else:
            text = c.get("text") or ""
            logprobs = completion_logprobs(c.get("logprobs")) if wants_logprobs else None
        finish = finish_reason(c.get("finish_reason"))
        text, raw_text = map_answer(
            self.name, text, request, style=self.choice_style, constrained=constrained
        )
        return Completion(text=text, finish_reason=finish, logprobs=logprobs, raw_text=raw_text)

    async def _pick_by_score(
        self, request: GenerationRequest, plan: EndpointPlan, started: float
    ) -> GenerationResult:
        """Choices on a server without constraints: score each, pick (greedy) or sample.

        Exact for the model's distribution over the listed choices: greedy takes the
        most likely one; with temperature T it samples from softmax(log p / T).
        """
        prompt = plan.prompt or ""
        choices = list(request.choices or ())
        sep = "" if not prompt or prompt[-1].isspace() else " "
        scored = await self.score_continuations(prompt, [sep + c for c in choices])
        if request.temperature <= 0:
            best = max(range(len(choices)), key=lambda i: scored.logprobs[i])
            picks = [best] * request.n
        else:
            top = max(scored.logprobs)
            weights = [math.exp((lp - top) / request.temperature) for lp in scored.logprobs]
            rng = random.Random(request.seed)  # noqa: S311 - sampling, not crypto
            picks = rng.choices(range(len(choices)), weights=weights, k=request.n)
        return GenerationResult(
            completions=tuple(Completion(text=choices[i]) for i in picks),
            usage=scored.usage,
            model=self.name,
            latency_s=time.perf_counter() - started,
        )

    async def score_continuations(
        self, prompt: str, continuations: list[str]
    ) -> ScoredContinuations:
        """Log p(continuation | prompt) via ``/completions`` with ``echo`` and logprobs.

        Needs a server that returns prompt logprobs with ``echo=true`` (vLLM, nightowl's
        own server); tokens whose text offset falls inside the continuation are summed.
        """
        if self.capabilities.api == "chat" or not self.capabilities.echo:
            raise NotImplementedError(
                f"{self.name}: the server returns no prompt logprobs (capabilities: "
                f"api={self.capabilities.api}, echo={self.capabilities.echo})"
            )
        if not continuations:
            return ScoredContinuations(logprobs=(), token_counts=())
        prompts = [prompt + c for c in continuations]
        # Servers that take one prompt per call (llama.cpp) get one call per continuation.
        batches = [prompts] if self.capabilities.prompt_lists else [[p] for p in prompts]
        raw: list[dict[str, Any]] = []
        usage = Usage()
        for batch in batches:
            body = {
                "model": self.model,
                "prompt": batch if len(batch) > 1 else batch[0],
                "max_tokens": 1,
                "temperature": 0.0,
                "echo": True,
                "logprobs": 0,
                **self.extra_body,
            }
            data = await self.post("/completions", body)
            got = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
            if len(got) != len(batch):
                raise ModelOutputError(
                    f"{self.name}: echo scoring returned {len(got)} choices for "
                    f"{len(batch)} prompts",
                    model=self.name,
                )
            raw += got
            usage = usage + parse_usage(data.get("usage"))
        values: list[float] = []
        counts: list[int] = []
        for cont, choice in zip(continuations, raw, strict=True):
            lp = choice.get("logprobs") or {}
            offsets = lp.get("text_offset")
            tokens = lp.get("token_logprobs")
            if not offsets or tokens is None:
                raise ModelOutputError(
                    f"{self.name}: server returned no prompt logprobs (echo unsupported?)",
                    model=self.name,
                )
            start, end = len(prompt), len(prompt) + len(cont)
            picked = [
                t
                for off, t in zip(offsets, tokens, strict=False)
                if start <= off < end and t is not None
            ]
            values.append(float(sum(picked)))
            counts.append(len(picked))
        return ScoredContinuations(logprobs=tuple(values), token_counts=tuple(counts), usage=usage)

    async def aclose(self) -> None:
        """Close the HTTP client of the current loop (others are dropped)."""
        clients, self._clients = self._clients, {}
        loop = asyncio.get_running_loop()
        for owner, client in clients.values():
            if owner is loop:
                await client.aclose()


#: registry params of backend kind "openai" -> the type each value is cast to (None: as is)
_PARAMS: dict[str, type | None] = {
    "base_url": str,
    "model": None,
    "api_key_env": None,
    "timeout_s": float,
    "connect_timeout_s": float,
    "max_retries": int,
    "backoff_s": float,
    "backoff_max_s": float,
    "choice_style": None,
    "max_tokens_field": str,
    "extra_body": None,
    "headers": None,
}


def from_spec(name: str, spec: ModelSpec, settings: Settings) -> OpenAICompatBackend:
    """Registry factory for backend kind "openai"."""
    params = dict(spec.params)
    unknown = sorted(set(params) - set(_PARAMS))
    if unknown:
        raise ConfigError(
            f"model {name!r}: unknown openai params {unknown}; known: {sorted(_PARAMS)}"
        )
    if "base_url" not in params:
        raise ConfigError(f"model {name!r}: the openai backend needs params.base_url")
    api_key = None
    if params.get("api_key_env"):
        api_key = os.environ.get(str(params["api_key_env"]))
        if not api_key:
            raise ConfigError(
                f"model {name!r} needs an API key in ${params['api_key_env']} (not set)"
            )
    given: dict[str, Any] = {}
    for key, value in params.items():
        cast = _PARAMS[key]
        if key != "api_key_env":
            given[key] = value if cast is None else cast(value)
    return OpenAICompatBackend(name=name, api_key=api_key, capabilities=spec.capabilities, **given)

"""OpenAI-protocol HTTP backend: vLLM and llama.cpp servers, hosted APIs.

Chat requests go to ``POST {base_url}/chat/completions``, raw prompts to
``POST {base_url}/completions``. ``n``, ``seed``, ``stop``, ``logprobs``/``top_logprobs``
are passed through; usage (with ``prompt_tokens_details.cached_tokens`` when the server
reports it) comes from the server, i.e. from the model's own tokenizer.

Constraints: ``choices=`` is sent as vLLM structured outputs
(``{"structured_outputs": {"choice": [...]}}``, vLLM >= 0.10), as ``guided_choice``
(older vLLM), or, for servers without either (hosted APIs), as a JSON-schema enum
(``response_format``) whose answer is unwrapped; pick with ``params.choice_style``.
``json_schema=`` becomes ``response_format: {"type": "json_schema", ...}``. Answers
outside the allowed choices raise `ModelOutputError` (the server ignored the constraint).

Failures: 429, 5xx, timeouts and connection errors are retried with exponential backoff
and jitter (bounded by ``max_retries``; ``Retry-After`` honoured up to ``backoff_max_s``);
other 4xx raise `ModelError` at once, carrying the status and body.

Registry params: ``base_url`` (required), ``model`` (served model name; defaults to the
registry name), ``api_key_env`` (name of the env var holding the key), ``timeout_s``,
``connect_timeout_s``, ``max_retries``, ``backoff_s``, ``backoff_max_s``,
``choice_style``, ``max_tokens_field`` ("max_tokens" or "max_completion_tokens"),
``extra_body`` (dict merged into every request), ``headers``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import httpx

from nightowl.errors import ConfigError, ModelError, ModelOutputError
from nightowl.llm.base import (
    Completion,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    ModelBackend,
    ScoredContinuations,
    TokenLogprob,
    Usage,
)

if TYPE_CHECKING:
    from nightowl.config import ModelSpec, Settings

ChoiceStyle = Literal["structured_outputs", "guided_choice", "json_schema"]
_CHOICE_STYLES = ("structured_outputs", "guided_choice", "json_schema")
_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


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
        choice_style: ChoiceStyle | None = None,
        max_tokens_field: str = "max_tokens",
        extra_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"model {name!r}: base_url must start with http:// or https://")
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
        self.choice_style: ChoiceStyle = choice_style
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
        if response is not None:
            retry_after = response.headers.get("retry-after")
            if retry_after:
                try:
                    return min(max(float(retry_after), 0.0), self.backoff_max_s)
                except ValueError:
                    pass
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
                last, status = f"model server {kind} at {url}: {type(exc).__name__}", None
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
                        f"{self.name}: HTTP {status} from {url}{hint}: {_error_message(text)}",
                        model=self.name,
                        status=status,
                        body=text,
                    )
                last = f"{self.name}: HTTP {status} from {url}: {_error_message(text)}"
            if attempt < self.max_retries:
                await asyncio.sleep(self._delay(attempt, response))
        raise ModelError(
            f"{last} (after {self.max_retries + 1} attempts)",
            model=self.name,
            status=status,
            body=last,
        )

    # -- requests ----------------------------------------------------------------
    def _body(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        chat = request.messages is not None
        body: dict[str, Any] = {
            "model": self.model,
            "n": request.n,
            self.max_tokens_field: request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        if chat:
            body["messages"] = [
                {"role": m.role, "content": m.content} for m in request.messages or ()
            ]
            if request.logprobs:
                body["logprobs"] = True
                if request.top_logprobs:
                    body["top_logprobs"] = request.top_logprobs
        else:
            body["prompt"] = request.prompt
            if request.logprobs:
                body["logprobs"] = max(request.top_logprobs, 0)
        if request.choices is not None:
            choices = list(request.choices)
            if self.choice_style == "structured_outputs":
                body["structured_outputs"] = {"choice": choices}
            elif self.choice_style == "guided_choice":
                body["guided_choice"] = choices
            else:
                body["response_format"] = _json_schema_format(
                    "choice",
                    {
                        "type": "object",
                        "properties": {"choice": {"type": "string", "enum": choices}},
                        "required": ["choice"],
                        "additionalProperties": False,
                    },
                )
        if request.json_schema is not None:
            if chat:
                body["response_format"] = _json_schema_format("output", request.json_schema)
            elif self.choice_style == "guided_choice":
                body["guided_json"] = request.json_schema
            else:
                body["structured_outputs"] = {"json": request.json_schema}
        body.update(self.extra_body)
        return ("/chat/completions" if chat else "/completions"), body

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """One HTTP call for all ``n`` samples."""
        started = time.perf_counter()
        path, body = self._body(request)
        data = await self.post(path, body)
        raw = data.get("choices")
        if not isinstance(raw, list) or not raw:
            raise ModelOutputError(
                f"{self.name}: response has no choices", model=self.name, body=str(data)[:2000]
            )
        raw = sorted(raw, key=lambda c: c.get("index", 0))
        chat = request.messages is not None
        completions = [self._completion(c, chat, request) for c in raw]
        return GenerationResult(
            completions=tuple(completions),
            usage=parse_usage(data.get("usage")),
            model=str(data.get("model") or self.name),
            latency_s=time.perf_counter() - started,
        )

    def _completion(self, c: dict[str, Any], chat: bool, request: GenerationRequest) -> Completion:
        if chat:
            text = (c.get("message") or {}).get("content") or ""
            logprobs = _chat_logprobs(c.get("logprobs")) if request.logprobs else None
        else:
            text = c.get("text") or ""
            logprobs = _completion_logprobs(c.get("logprobs")) if request.logprobs else None
        if request.choices is not None:
            if self.choice_style == "json_schema":
                try:
                    text = str(json.loads(text)["choice"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    pass
            if text not in request.choices:
                stripped = text.strip()
                if stripped not in request.choices:
                    raise ModelOutputError(
                        f"{self.name}: answer {text[:80]!r} is not one of the allowed choices "
                        "(does the server support the choice constraint? see choice_style)",
                        model=self.name,
                        body=text[:2000],
                    )
                text = stripped
        return Completion(
            text=text, finish_reason=_finish(c.get("finish_reason")), logprobs=logprobs
        )

    async def score_continuations(
        self, prompt: str, continuations: list[str]
    ) -> ScoredContinuations:
        """Log p(continuation | prompt) via ``/completions`` with ``echo`` and logprobs.

        Needs a server that returns prompt logprobs with ``echo=true`` (vLLM, nightowl's
        own server); tokens whose text offset falls inside the continuation are summed.
        """
        if not continuations:
            return ScoredContinuations(logprobs=(), token_counts=())
        body = {
            "model": self.model,
            "prompt": [prompt + c for c in continuations],
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": True,
            "logprobs": 0,
            **self.extra_body,
        }
        data = await self.post("/completions", body)
        raw = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(raw) != len(continuations):
            raise ModelOutputError(
                f"{self.name}: echo scoring returned {len(raw)} choices for "
                f"{len(continuations)} prompts",
                model=self.name,
            )
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
        return ScoredContinuations(
            logprobs=tuple(values), token_counts=tuple(counts), usage=parse_usage(data.get("usage"))
        )

    async def aclose(self) -> None:
        """Close the HTTP client of the current loop (others are dropped)."""
        clients, self._clients = self._clients, {}
        loop = asyncio.get_running_loop()
        for owner, client in clients.values():
            if owner is loop:
                await client.aclose()


# -- response parsing -------------------------------------------------------------
def _json_schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _finish(reason: Any) -> FinishReason:
    if reason == "length":
        return "length"
    if reason in (None, "stop", "eos", "tool_calls", "function_call", "abort"):
        return "stop"
    return "error"  # e.g. content_filter


def _error_message(body: str) -> str:
    """The server's error message if the body is OpenAI-style JSON, else the body."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return body[:300]
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data))
        if isinstance(err, dict):
            err = err.get("message", err)
        return str(err)[:300]
    return body[:300]


def parse_usage(raw: Any) -> Usage:
    """OpenAI usage object -> `Usage` (cached tokens from ``prompt_tokens_details``)."""
    if not isinstance(raw, dict):
        return Usage()
    details = raw.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        cached_prompt_tokens=int(cached or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
    )


def _chat_logprobs(raw: Any) -> tuple[TokenLogprob, ...] | None:
    if not isinstance(raw, dict) or raw.get("content") is None:
        return None
    out = []
    for item in raw["content"]:
        top = tuple((t["token"], float(t["logprob"])) for t in item.get("top_logprobs") or ())
        out.append(TokenLogprob(token=item["token"], logprob=float(item["logprob"]), top=top))
    return tuple(out)


def _completion_logprobs(raw: Any) -> tuple[TokenLogprob, ...] | None:
    if not isinstance(raw, dict) or not raw.get("tokens"):
        return None
    tops = raw.get("top_logprobs") or [None] * len(raw["tokens"])
    out = []
    for tok, lp, top in zip(raw["tokens"], raw.get("token_logprobs") or [], tops, strict=False):
        alts = tuple((k, float(v)) for k, v in (top or {}).items())
        out.append(TokenLogprob(token=tok, logprob=float(lp if lp is not None else 0.0), top=alts))
    return tuple(out)


def from_spec(name: str, spec: ModelSpec, settings: Settings) -> OpenAICompatBackend:
    """Registry factory for backend kind "openai"."""
    params = dict(spec.params)
    known = {
        "base_url",
        "model",
        "api_key_env",
        "timeout_s",
        "connect_timeout_s",
        "max_retries",
        "backoff_s",
        "backoff_max_s",
        "choice_style",
        "max_tokens_field",
        "extra_body",
        "headers",
    }
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(
            f"model {name!r}: unknown openai params {unknown}; known: {sorted(known)}"
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
    return OpenAICompatBackend(
        name=name,
        base_url=str(params["base_url"]),
        model=params.get("model"),
        api_key=api_key,
        timeout_s=float(params.get("timeout_s", 120.0)),
        connect_timeout_s=float(params.get("connect_timeout_s", 5.0)),
        max_retries=int(params.get("max_retries", 4)),
        backoff_s=float(params.get("backoff_s", 0.5)),
        backoff_max_s=float(params.get("backoff_max_s", 8.0)),
        choice_style=params.get("choice_style"),
        max_tokens_field=str(params.get("max_tokens_field", "max_tokens")),
        extra_body=params.get("extra_body"),
        headers=params.get("headers"),
    )

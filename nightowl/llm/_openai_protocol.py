"""OpenAI wire format: request bodies and response parsing, mapped to a server's capabilities.

Pure functions (no I/O) used by `nightowl.llm.openai_compat`:

- `plan_endpoint`: which endpoint a `GenerationRequest` goes to. A raw prompt sent to a
  chat-only server becomes ONE user message holding the prompt verbatim (the model then
  answers it as an instruction, it does not continue it); chat messages sent to a
  completions-only server are rendered into one prompt with `render_chat` (ChatML, a
  plain role-prefixed transcript, or a Jinja template from the registry).
- `constraint_fields`: how ``choices=`` / ``json_schema=`` are sent for one constraint style.
- `map_answer` (with `nearest_choice` / `extract_json`): checks a constrained answer, or
  falls back when a server cannot constrain output.
- response parsing: usage (with cached tokens), logprobs, finish reasons, error messages.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import jinja2.sandbox

from nightowl.config import ConstraintStyle, ServerApi
from nightowl.errors import ConfigError, ModelOutputError
from nightowl.llm.base import ChatMessage, FinishReason, GenerationRequest, TokenLogprob, Usage

Endpoint = Literal["chat", "completions"]

#: built-in chat templates: Jinja source, and stop strings that end an assistant turn
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_PLAIN = (
    "{% for m in messages %}{{ m.role | capitalize }}: {{ m.content }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
BUILTIN_TEMPLATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "chatml": (_CHATML, ("<|im_end|>",)),
    "plain": (_PLAIN, ("\nUser:", "\nSystem:")),
}


@dataclass(frozen=True, kw_only=True)
class EndpointPlan:
    """Where a request goes and in which shape."""

    endpoint: Endpoint
    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    #: stop strings the mapping adds (end of an assistant turn in a rendered template)
    extra_stop: tuple[str, ...] = ()


def render_chat(messages: tuple[ChatMessage, ...], template: str) -> tuple[str, tuple[str, ...]]:
    """Render chat turns as one completion prompt; returns (prompt, stop strings).

    ``template`` is a built-in name (``chatml``, ``plain``) or Jinja source that sees
    ``messages`` (dicts with role/content) and ``add_generation_prompt`` like HF templates.
    """
    source, stops = BUILTIN_TEMPLATES.get(template, (template, ()))
    if template not in BUILTIN_TEMPLATES and "{" not in template:
        raise ConfigError(
            f"chat_template {template!r} is neither {sorted(BUILTIN_TEMPLATES)} "
            "nor a Jinja template"
        )
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(keep_trailing_newline=True)
    try:
        text = env.from_string(source).render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            bos_token="",
            eos_token="",
        )
    except jinja2.TemplateError as exc:
        raise ConfigError(f"chat_template does not render: {exc}") from None
    return text, stops


def plan_endpoint(request: GenerationRequest, api: ServerApi, chat_template: str) -> EndpointPlan:
    """Map a request (prompt or messages) onto an endpoint the server speaks."""
    if request.messages is not None:
        if api == "completions":
            prompt, stops = render_chat(request.messages, chat_template)
            return EndpointPlan(endpoint="completions", prompt=prompt, extra_stop=stops)
        return EndpointPlan(endpoint="chat", messages=request.messages)
    if api == "chat":
        return EndpointPlan(
            endpoint="chat", messages=(ChatMessage(role="user", content=request.prompt or ""),)
        )
    return EndpointPlan(endpoint="completions", prompt=request.prompt)


def json_schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI ``response_format`` for a JSON schema."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def constraint_fields(
    request: GenerationRequest, style: ConstraintStyle, endpoint: Endpoint
) -> dict[str, Any] | None:
    """Body fields constraining the output, or None when this style cannot (caller degrades)."""
    if request.choices is None and request.json_schema is None:
        return {}
    choices = list(request.choices or ())
    schema = request.json_schema
    if style == "structured_outputs":
        return {"structured_outputs": {"choice": choices} if schema is None else {"json": schema}}
    if style == "guided_choice":
        return {"guided_choice": choices} if schema is None else {"guided_json": schema}
    if style == "json_schema":
        if schema is None:
            schema = {
                "type": "object",
                "properties": {"choice": {"type": "string", "enum": choices}},
                "required": ["choice"],
                "additionalProperties": False,
            }
            return {"response_format": json_schema_format("choice", schema)}
        return {"response_format": json_schema_format("output", schema)}
    if style == "grammar":
        if schema is None:
            # a GBNF grammar (llama.cpp); JSON string escapes are valid GBNF
            return {"grammar": "root ::= " + " | ".join(json.dumps(c) for c in choices)}
        if endpoint == "chat":  # llama-cpp-python turns this into a grammar server-side
            return {"response_format": {"type": "json_object", "schema": schema}}
        return None
    return None


_PUNCT = re.compile(r"^[\s\"'`.,:;!?()\[\]]+|[\s\"'`.,:;!?()\[\]]+$")


def nearest_choice(text: str, choices: tuple[str, ...], min_ratio: float = 0.6) -> str | None:
    """The allowed choice a free-text answer means, or None when none is close.

    Order: exact; ignoring surrounding blanks/quotes/punctuation and case; the longest
    choice that occurs in the text (earliest first on ties); else the most similar
    choice by `difflib` ratio if it reaches ``min_ratio``.
    """
    if text in choices:
        return text
    norm = _PUNCT.sub("", text).lower()
    for c in choices:
        if _PUNCT.sub("", c).lower() == norm:
            return c
    low = text.lower()
    found = [(c, low.find(c.lower())) for c in choices if c and c.lower() in low]
    if found:
        return min(found, key=lambda cp: (-len(cp[0]), cp[1]))[0]
    scored = [(difflib.SequenceMatcher(None, norm, c.lower()).ratio(), c) for c in choices]
    ratio, best = max(scored)
    return best if ratio >= min_ratio else None


def extract_json(text: str) -> str | None:
    """The first JSON object or array in ``text`` (as its source text), or None."""
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                _, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError:
                continue
            return text[i:end]
    return None


def map_answer(
    model: str,
    text: str,
    request: GenerationRequest,
    *,
    style: ConstraintStyle,
    constrained: bool,
) -> tuple[str, str | None]:
    """The answer as the request wants it, and the model's own text when they differ.

    Constrained choices: unwrap the JSON-schema enum, accept a choice with or without its
    leading space, else `ModelOutputError` (the server ignored the constraint).
    Unconstrained choices: `nearest_choice`, else `ModelOutputError`. Unconstrained
    ``json_schema``: `extract_json`, else `ModelOutputError`.
    """
    if request.choices is not None:
        original = text
        if constrained and style == "json_schema":
            try:
                text = str(json.loads(text)["choice"])
            except (json.JSONDecodeError, KeyError, TypeError):
                pass
        if constrained:
            # choices may carry a leading space (" go north"); accept either form
            if text not in request.choices and text.strip() not in request.choices:
                raise ModelOutputError(
                    f"{model}: answer {text[:80]!r} is not one of the allowed choices "
                    "(does the server support the choice constraint? see "
                    "capabilities.constraints)",
                    model=model,
                    body=text[:2000],
                )
            text = text if text in request.choices else text.strip()
        else:
            picked = nearest_choice(text, request.choices)
            if picked is None:
                raise ModelOutputError(
                    f"{model}: free answer {text[:80]!r} is close to none of the "
                    "allowed choices (the server cannot constrain output)",
                    model=model,
                    body=text[:2000],
                )
            text = picked
        return text, (original if text != original else None)
    if request.json_schema is not None and not constrained:
        found = extract_json(text)
        if found is None:
            raise ModelOutputError(
                f"{model}: no JSON in the answer {text[:80]!r} (the server cannot "
                "constrain output to a schema)",
                model=model,
                body=text[:2000],
            )
        return found, (text if found != text else None)
    return text, None


# -- response parsing -------------------------------------------------------------
def finish_reason(reason: Any) -> FinishReason:
    """OpenAI finish_reason -> ours (content_filter and unknown reasons are errors)."""
    if reason == "length":
        return "length"
    if reason in (None, "stop", "eos", "tool_calls", "function_call", "abort"):
        return "stop"
    return "error"


def error_message(body: str) -> str:
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


def chat_logprobs(raw: Any) -> tuple[TokenLogprob, ...] | None:
    """Chat-completions ``logprobs.content`` -> token logprobs (None if absent)."""
    if not isinstance(raw, dict) or raw.get("content") is None:
        return None
    out = []
    for item in raw["content"]:
        top = tuple((t["token"], float(t["logprob"])) for t in item.get("top_logprobs") or ())
        out.append(TokenLogprob(token=item["token"], logprob=float(item["logprob"]), top=top))
    return tuple(out)


def completion_logprobs(raw: Any) -> tuple[TokenLogprob, ...] | None:
    """Legacy completions ``logprobs`` (tokens/token_logprobs/top_logprobs) -> ours."""
    if not isinstance(raw, dict) or not raw.get("tokens"):
        return None
    tops = raw.get("top_logprobs") or [None] * len(raw["tokens"])
    out = []
    for tok, lp, top in zip(raw["tokens"], raw.get("token_logprobs") or [], tops, strict=False):
        alts = tuple((k, float(v)) for k, v in (top or {}).items())
        out.append(TokenLogprob(token=tok, logprob=float(lp if lp is not None else 0.0), top=alts))
    return tuple(out)

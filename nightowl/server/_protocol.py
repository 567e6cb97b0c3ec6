"""Wire formats of `nightowl serve` (OpenAI chat-completions protocol plus an extension).

Requests are validated strictly: a field this server cannot honour (tools, logprobs,
JSON response formats, penalties, logit bias, non-text content) is a 400 with a one-line
message naming it, never silently dropped. Responses carry a ``nightowl`` object (tier,
cost, agreement, thread, revision) that OpenAI clients ignore.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nightowl.errors import UserError
from nightowl.llm.openai_wire import ChatTurn, ChoiceOut, StreamOptions, UsageOut

#: model names this server answers to, mapped to a cascade mode
CASCADE_MODEL = "nightowl-cascade"


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``."""

    model_config = ConfigDict(extra="forbid")

    model: str = CASCADE_MODEL
    messages: list[ChatTurn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=8)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = Field(None, max_length=200)
    metadata: dict[str, str] | None = None
    # Accepted only at their no-op values; anything else is refused in `refuse_unsupported`.
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    functions: list[dict[str, Any]] | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    def refuse_unsupported(self) -> None:
        """Raise `UserError` (400) for a field that cannot be honoured."""
        if self.tools or self.functions:
            raise UserError("tools/function calling is not supported by nightowl serve")
        if self.tool_choice not in (None, "none"):
            raise UserError("tool_choice is not supported (no tools)")
        if self.logprobs or self.top_logprobs:
            raise UserError(
                "logprobs are not supported by the cascade (replies may be chosen "
                "among samples or come from the teacher)"
            )
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            raise UserError("response_format other than text is not supported")
        if self.presence_penalty or self.frequency_penalty or self.logit_bias:
            raise UserError("presence/frequency penalties and logit_bias are not supported")
        if self.top_p not in (None, 1.0):
            raise UserError("top_p is not supported (the cascade samples with its own settings)")
        if self.stream_options is not None and not self.stream:
            raise UserError("stream_options is only allowed with stream=true")

    def prompt_chars(self) -> int:
        """Characters of all messages together (the prompt-size bound checks it)."""
        return sum(t.chars() for t in self.messages)

    def thread_id(self, header: str | None) -> str | None:
        """Header ``X-Nightowl-Thread``, else ``metadata.thread_id``, else ``user``."""
        if header:
            return header
        if self.metadata and self.metadata.get("thread_id"):
            return self.metadata["thread_id"]
        return self.user


class AgreementOut(BaseModel):
    """How the student's samples agreed."""

    method: str
    share: float


class NightowlExtension(BaseModel):
    """Per-response extension: which tier answered and what it cost."""

    tier: str
    cost_usd: float
    agreement: AgreementOut | None = None
    thread: str | None = None
    revision: int = 0
    demos_used: int = 0
    learned_revision: int | None = None


class ChatCompletionResponse(BaseModel):
    """A non-streaming reply."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChoiceOut]
    usage: UsageOut
    nightowl: NightowlExtension | list[NightowlExtension]

"""The one async interface every model backend implements.

A backend takes a `GenerationRequest` (chat messages *or* a raw completion prompt, plus
sampling parameters) and returns a `GenerationResult` with ``n`` completions and the
token usage counted by the model's own tokenizer. Optional capabilities raise
`NotImplementedError` by default: `score_continuations` (log-probabilities of given
continuations, used for confidence rules and query predictability).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Literal

from nightowl.errors import ModelOutputError, UserError

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "error"]


class PromptTooLongError(UserError):
    """A prompt does not fit the model's context or the prompt limit (a 400, not a 5xx)."""


@dataclass(frozen=True, kw_only=True)
class ChatMessage:
    """One chat turn."""

    role: Role
    content: str


@dataclass(frozen=True, kw_only=True)
class TokenLogprob:
    """Log-probability of one generated token (and, if asked, its top alternatives)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, kw_only=True)
class Usage:
    """Token counts of one call; ``cached_prompt_tokens`` is a subset of ``prompt_tokens``."""

    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens + other.cached_prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    r"""What to generate. Exactly one of ``messages`` / ``prompt`` must be set.

    Attributes:
        messages: chat turns, rendered with the model's chat template.
        prompt: a raw completion prompt (no template), e.g. "Observation: ...\\nAction:".
        n: number of samples (drawn in one batch where the backend can).
        max_tokens: generation cap per sample.
        temperature: 0 means greedy.
        top_p: nucleus sampling mass.
        stop: strings that end a sample (not included in the text).
        seed: makes sampling reproducible where the backend supports it.
        logprobs: return per-token log-probabilities.
        top_logprobs: how many alternatives per token when ``logprobs``.
        choices: constrain each sample to exactly one of these strings.
        json_schema: constrain each sample to JSON matching this schema.
    """

    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    n: int = 1
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    choices: tuple[str, ...] | None = None
    json_schema: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("set exactly one of messages= or prompt=")
        if self.n < 1:
            raise ValueError("n must be >= 1")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if self.choices is not None and not self.choices:
            raise ValueError("choices must not be empty")
        if self.choices is not None and self.json_schema is not None:
            raise ValueError("use choices= or json_schema=, not both")


@dataclass(frozen=True, kw_only=True)
class Completion:
    """One sample.

    ``raw_text`` is set only when a backend mapped the model's own text onto ``text``
    (e.g. to the nearest allowed choice, or the JSON inside a longer answer, when the
    server could not constrain its output); it is None when ``text`` is what was generated.
    """

    text: str
    finish_reason: FinishReason = "stop"
    logprobs: tuple[TokenLogprob, ...] | None = None
    raw_text: str | None = None

    @property
    def sum_logprob(self) -> float | None:
        """Sum of token log-probabilities, if they were returned."""
        if self.logprobs is None:
            return None
        return sum(t.logprob for t in self.logprobs)


@dataclass(frozen=True, kw_only=True)
class GenerationResult:
    """All samples of one call, with their joint usage."""

    completions: tuple[Completion, ...]
    usage: Usage
    model: str
    latency_s: float = 0.0

    @property
    def texts(self) -> list[str]:
        """The sample texts in order."""
        return [c.text for c in self.completions]


@dataclass(frozen=True, kw_only=True)
class ScoredContinuations:
    """Log p(continuation | prompt) for each continuation, with the usage it cost."""

    logprobs: tuple[float, ...]
    token_counts: tuple[int, ...]
    usage: Usage = field(default_factory=Usage)


class ModelBackend(abc.ABC):
    """A model behind one async interface. Subclasses implement `generate`."""

    #: registry name (or a descriptive name for ad-hoc backends)
    name: str = "model"

    @abc.abstractmethod
    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Generate ``request.n`` completions."""

    async def score_continuations(
        self, prompt: str, continuations: list[str]
    ) -> ScoredContinuations:
        """Log-probability of each continuation after a raw ``prompt``.

        Optional: backends that cannot do this raise `NotImplementedError`.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot score continuations")

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` by this model's tokenizer (optional)."""
        raise NotImplementedError(f"{type(self).__name__} has no tokenizer")

    async def aclose(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Release resources (HTTP clients, engines)."""


def require_text(result: GenerationResult) -> str:
    """The first completion's text, or `ModelOutputError` if it is empty or cut off.

    For callers that need a usable answer (CLI, parsers): an empty answer or one that
    hit ``max_tokens`` is reported clearly instead of being passed on silently.
    """
    if not result.completions:
        raise ModelOutputError(f"{result.model}: no completion returned", model=result.model)
    first = result.completions[0]
    if not first.text.strip():
        raise ModelOutputError(
            f"{result.model}: the model returned an empty answer", model=result.model
        )
    if first.finish_reason == "length":
        raise ModelOutputError(
            f"{result.model}: the answer was cut off at max_tokens "
            f"({result.usage.completion_tokens} tokens); raise max_tokens",
            model=result.model,
            body=first.text[:2000],
        )
    if first.finish_reason == "error":
        raise ModelOutputError(
            f"{result.model}: generation ended with an error", model=result.model
        )
    return first.text

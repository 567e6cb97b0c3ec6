"""Scripted fakes of a model backend for tests of control logic.

`ScriptedModel` answers from a fixed script, one entry per sample, in order;
`FunctionModel` answers by calling a Python function with the request. Both are real
`ModelBackend`s (usage counted, ``n`` samples, logprobs on request, stop strings applied,
`score_continuations` and `count_tokens` available), record every request in ``calls``,
and never touch a network or weights, so agent, ledger, worker and sleep-time tests can
drive exact sequences of model outputs.

Tokens are whitespace-separated words (`count_tokens`), which keeps usage deterministic
and easy to predict in assertions.

Example:
    >>> model = ScriptedModel(["go north", "take key", ValueError("boom")])
    >>> # 1st call (n=2) -> ["go north", "take key"]; 2nd call raises ValueError.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from nightowl.errors import ConfigError, ModelError
from nightowl.llm.base import (
    Completion,
    GenerationRequest,
    GenerationResult,
    ModelBackend,
    ScoredContinuations,
    TokenLogprob,
    Usage,
)

#: one entry of a script: a sample's text, a full `Completion`, or an exception to raise
ScriptEntry = str | Completion | BaseException

#: what a `FunctionModel` function may return for one call
FunctionOutput = str | Completion | Sequence[str | Completion] | GenerationResult
ModelFunction = Callable[[GenerationRequest], FunctionOutput | Awaitable[FunctionOutput]]
ScoreFunction = Callable[[str, str], float]


class ScriptExhaustedError(AssertionError):
    """A `ScriptedModel` was asked for more samples than its script holds."""


def word_count(text: str) -> int:
    """The fakes' tokenizer: whitespace-separated words."""
    return len(text.split())


def render_request(request: GenerationRequest) -> str:
    """The prompt text the fakes 'see': the raw prompt, or the chat turns joined."""
    if request.prompt is not None:
        return request.prompt
    return "\n".join(f"{m.role}: {m.content}" for m in request.messages or ())


def apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string; return (text, whether it was cut)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    if cut < 0:
        return text, False
    return text[:cut], True


class _FakeBackend(ModelBackend):
    """Shared finishing of fake samples: stop strings, max_tokens, logprobs, usage."""

    def __init__(
        self,
        *,
        name: str,
        token_logprob: float = -0.1,
        delay_s: float = 0.0,
        scores: Mapping[str, float] | ScoreFunction | None = None,
    ) -> None:
        self.name = name
        self.token_logprob = token_logprob
        self.delay_s = delay_s
        self.scores = scores
        #: every request received, in order (generate and score calls alike)
        self.calls: list[GenerationRequest] = []
        self.score_calls: list[tuple[str, tuple[str, ...]]] = []

    def count_tokens(self, text: str) -> int:
        """Whitespace words."""
        return word_count(text)

    def _finish(self, request: GenerationRequest, sample: str | Completion) -> Completion:
        if isinstance(sample, Completion):
            # Given verbatim: the test chose finish_reason / logprobs itself.
            return sample
        text, stopped = apply_stop(sample, request.stop)
        finish: Any = "stop"
        words = text.split()
        if not stopped and len(words) > request.max_tokens:
            text = " ".join(words[: request.max_tokens])
            finish = "length"
        logprobs = None
        if request.logprobs:
            logprobs = tuple(
                TokenLogprob(token=w, logprob=self.token_logprob) for w in text.split()
            )
        return Completion(text=text, finish_reason=finish, logprobs=logprobs)

    def _result(
        self, request: GenerationRequest, completions: Sequence[Completion], started: float
    ) -> GenerationResult:
        usage = Usage(
            prompt_tokens=word_count(render_request(request)),
            completion_tokens=sum(word_count(c.text) for c in completions),
        )
        return GenerationResult(
            completions=tuple(completions),
            usage=usage,
            model=self.name,
            latency_s=time.perf_counter() - started,
        )

    async def score_continuations(
        self, prompt: str, continuations: list[str]
    ) -> ScoredContinuations:
        """Scores from ``scores`` (mapping or function); unknown continuations get -10."""
        self.score_calls.append((prompt, tuple(continuations)))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        values: list[float] = []
        for cont in continuations:
            if callable(self.scores):
                values.append(float(self.scores(prompt, cont)))
            elif self.scores is not None:
                values.append(float(self.scores.get(cont, self.scores.get(cont.strip(), -10.0))))
            else:
                values.append(self.token_logprob * max(word_count(cont), 1))
        counts = tuple(max(word_count(c), 1) for c in continuations)
        usage = Usage(prompt_tokens=word_count(prompt) + sum(counts))
        return ScoredContinuations(logprobs=tuple(values), token_counts=counts, usage=usage)


class ScriptedModel(_FakeBackend):
    """Answers from a script: each sample consumes the next entry.

    A call with ``n=3`` consumes three entries. An entry that is an exception is
    raised when it is reached (the entries before it in that call are consumed too).
    When the script runs out, ``default`` is used if given, else `ScriptExhaustedError`.
    With ``cycle=True`` the script repeats forever.

    ``choices=`` requests are *not* enforced: a scripted text outside the allowed
    strings is returned unchanged, so tests can exercise garbage-output handling.
    """

    def __init__(
        self,
        script: Iterable[ScriptEntry] = (),
        *,
        default: str | None = None,
        cycle: bool = False,
        name: str = "scripted",
        token_logprob: float = -0.1,
        delay_s: float = 0.0,
        scores: Mapping[str, float] | ScoreFunction | None = None,
    ) -> None:
        super().__init__(name=name, token_logprob=token_logprob, delay_s=delay_s, scores=scores)
        self.script: list[ScriptEntry] = list(script)
        self.default = default
        self.cycle = cycle
        self.position = 0

    @property
    def remaining(self) -> int:
        """Entries not yet consumed (cycling scripts never run out)."""
        return max(len(self.script) - self.position, 0)

    def _next(self) -> ScriptEntry:
        if self.cycle and self.script:
            entry = self.script[self.position % len(self.script)]
        elif self.position < len(self.script):
            entry = self.script[self.position]
        elif self.default is not None:
            entry = self.default
        else:
            raise ScriptExhaustedError(
                f"ScriptedModel {self.name!r} ran out of script after {self.position} samples"
            )
        self.position += 1
        return entry

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Return the next ``n`` scripted samples."""
        started = time.perf_counter()
        self.calls.append(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        completions = []
        for _ in range(request.n):
            entry = self._next()
            if isinstance(entry, BaseException):
                raise entry
            completions.append(self._finish(request, entry))
        return self._result(request, completions, started)


class FunctionModel(_FakeBackend):
    """Answers by calling ``fn(request)`` (sync or async).

    ``fn`` may return one text/`Completion` (then it is called once per sample, so a
    stochastic function gives different samples), a list of exactly ``n``
    texts/`Completion`s, or a whole `GenerationResult` (returned as is). Exceptions
    propagate, which is how tests simulate failing models.
    """

    def __init__(
        self,
        fn: ModelFunction,
        *,
        name: str = "function",
        token_logprob: float = -0.1,
        delay_s: float = 0.0,
        scores: Mapping[str, float] | ScoreFunction | None = None,
    ) -> None:
        super().__init__(name=name, token_logprob=token_logprob, delay_s=delay_s, scores=scores)
        self.fn = fn

    async def _call(self, request: GenerationRequest) -> FunctionOutput:
        out = self.fn(request)
        if inspect.isawaitable(out):
            out = await out
        return out  # type: ignore[return-value]

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Call the function and finish its samples."""
        started = time.perf_counter()
        self.calls.append(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        out = await self._call(request)
        if isinstance(out, GenerationResult):
            return out
        samples: list[str | Completion]
        if isinstance(out, str | Completion):
            samples = [out]
            for _ in range(request.n - 1):
                more = await self._call(request)
                if not isinstance(more, str | Completion):
                    raise ModelError(f"FunctionModel {self.name!r}: inconsistent return types")
                samples.append(more)
        else:
            samples = list(out)
            if len(samples) != request.n:
                raise ModelError(
                    f"FunctionModel {self.name!r} returned {len(samples)} samples, "
                    f"request asked for n={request.n}"
                )
        return self._result(request, [self._finish(request, s) for s in samples], started)


def last_user_message(request: GenerationRequest) -> str:
    """Convenience for `FunctionModel` functions: the last user turn, or the raw prompt."""
    if request.prompt is not None:
        return request.prompt
    users = [m.content for m in request.messages or () if m.role == "user"]
    return users[-1] if users else ""


def from_spec(name: str, spec: Any, settings: Any = None) -> ModelBackend:
    """Registry factory for backend kind "scripted": a fake built from ``spec.params``.

    Keys: ``function`` ("package.module:callable", builds a `FunctionModel`), or
    ``script`` (list of texts), ``default`` (text when the script is exhausted; defaults
    to "ok" when neither is given), ``cycle`` (bool); plus ``delay_s``, ``token_logprob``
    and ``scores`` (mapping continuation -> log-probability). Lets worker processes and
    CLI tests run on a fast fake model chosen purely by configuration.
    """
    params: Mapping[str, Any] = spec.params
    known = {"function", "script", "default", "cycle", "delay_s", "token_logprob", "scores"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(
            f"model {name!r}: unknown scripted params {unknown}; known: {sorted(known)}"
        )
    common: dict[str, Any] = {
        "name": name,
        "delay_s": float(params.get("delay_s", 0.0)),
        "token_logprob": float(params.get("token_logprob", -0.1)),
        "scores": params.get("scores"),
    }
    if "function" in params:
        target = str(params["function"])
        module_name, _, attr = target.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"model {name!r}: cannot import function {target!r}: {exc}") from None
        return FunctionModel(fn, **common)
    script = [str(s) for s in params.get("script", [])]
    default = params.get("default", None if script else "ok")
    return ScriptedModel(script, default=default, cycle=bool(params.get("cycle", False)), **common)


__all__ = [
    "FunctionModel",
    "ScriptExhaustedError",
    "ScriptedModel",
    "apply_stop",
    "from_spec",
    "last_user_message",
    "render_request",
    "word_count",
]

"""A toy model backend and a toy ladder preset, registered with nightowl from outside it.

`EchoBackend` (backend kind ``echo``, entry point group ``nightowl.backends``) loads no
weights and calls no server: each sample is the fixed ``answer`` param if one is given,
else the first allowed choice of a constrained request (the first valid action), else
"ok". With ``spread = true`` sample *i* of a call is the *i*-th choice instead, so the
samples of a voting rule disagree and the ladder escalates. It counts its calls and
tokens (whitespace words) in ``calls`` and ``usage``. Pick it for a registry entry with
``NIGHTOWL_MODELS__ECHO__BACKEND=echo``.

`TOY_CASCADE` (ladder ``toy-cascade``, entry point group ``nightowl.presets``) is a
cascade without demos whose student votes with two samples (``unanimity:2``) and
escalates to the teacher when they disagree.
"""

from __future__ import annotations

import time
from typing import Any

from nightowl.agent.presets import Preset
from nightowl.llm.base import Completion, GenerationRequest, GenerationResult, ModelBackend, Usage

TOY_CASCADE = Preset(
    name="toy-cascade",
    help="toy plugin: a student without demos votes twice; disagreement escalates to the teacher",
    student="cascade",
    demos=False,
    rule="unanimity:2",
)


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


class EchoBackend(ModelBackend):
    """Answers a fixed text or the first (``spread``: the *i*-th) allowed choice."""

    def __init__(self, name: str = "echo", *, answer: str | None = None,
                 spread: bool = False) -> None:
        self.name = name
        self.answer = answer
        self.spread = spread
        #: generate calls so far, and their summed usage
        self.calls = 0
        self.usage = Usage()

    @classmethod
    def from_spec(cls, name: str, spec: Any, settings: Any = None) -> EchoBackend:
        """Build from a registry entry: ``params`` may set ``answer`` and ``spread``."""
        params = dict(spec.params)
        answer = params.get("answer")
        return cls(name, answer=None if answer is None else str(answer),
                   spread=_truthy(params.get("spread", False)))

    def count_tokens(self, text: str) -> int:
        """Whitespace-separated words."""
        return len(text.split())

    def _sample(self, request: GenerationRequest, i: int) -> str:
        if self.answer is not None:
            return self.answer
        if request.choices:
            return request.choices[i % len(request.choices) if self.spread else 0]
        return "ok"

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """``request.n`` samples, usage counted in words."""
        started = time.perf_counter()
        texts = [self._sample(request, i) for i in range(request.n)]
        prompt = request.prompt if request.prompt is not None else "\n".join(
            m.content for m in request.messages or ())
        usage = Usage(prompt_tokens=self.count_tokens(prompt),
                      completion_tokens=sum(self.count_tokens(t) for t in texts))
        self.calls += 1
        self.usage = self.usage + usage
        return GenerationResult(
            completions=tuple(Completion(text=t) for t in texts), usage=usage, model=self.name,
            latency_s=time.perf_counter() - started,
        )

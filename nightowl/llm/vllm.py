"""In-process vLLM backend on its async engine (``pip install 'nightowl[gpu]'``).

Wraps ``vllm.AsyncLLMEngine`` (the V1 ``AsyncLLM`` on current vLLM): every `generate`
call submits one request and awaits its final output, so concurrent episodes are batched
by vLLM's scheduler (continuous batching) instead of queueing behind a lock. Prefix
caching stays on, so cached prompt tokens are reported when the engine exposes them. A
cancelled caller aborts its engine request.

``choices=`` and ``json_schema=`` use vLLM's structured outputs
(`StructuredOutputsParams` on vLLM >= 0.10, `GuidedDecodingParams` before).
`score_continuations` uses prompt logprobs, one engine request per continuation, all in
flight at once. vLLM is imported only when a backend is built; without it, building
raises `MissingExtraError` naming the ``gpu`` extra.

The engine binds to the event loop that first uses it: use one backend per loop.

Registry params: ``model`` (a local path or served name; vLLM cannot load this GGUF on
CPU, so point it at a safetensors directory), plus any ``AsyncEngineArgs`` keyword
arguments under ``engine`` (e.g. ``{"gpu_memory_utilization": 0.5, "max_model_len": 4096}``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nightowl.errors import ConfigError, MissingExtraError, ModelError
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


def vllm_available() -> bool:
    """Whether the vllm package is importable (without importing it)."""
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    """Raise `MissingExtraError` when vllm is absent."""
    if not vllm_available():
        raise MissingExtraError("in-process vLLM", "gpu", "vllm")


def _final_only(params: Any) -> Any:
    """Ask the engine for the final output only (no per-token streaming objects)."""
    try:
        from vllm.sampling_params import RequestOutputKind

        params.output_kind = RequestOutputKind.FINAL_ONLY
    except (ImportError, AttributeError):  # older vLLM: cumulative outputs, last one kept
        pass
    return params


class VLLMBackend(ModelBackend):
    """A model run in this process by vLLM's async engine.

    Args:
        name: registry name.
        engine: an async engine with ``generate(prompt, sampling_params, request_id)``
            (an async iterator of request outputs) and ``abort(request_id)``.
        tokenizer: a Hugging Face tokenizer of the same model.
        sampling_params: ``vllm.SamplingParams`` (or a compatible factory).
    """

    def __init__(
        self,
        *,
        name: str,
        engine: Any,
        tokenizer: Any,
        sampling_params: Callable[..., Any],
    ) -> None:
        self.name = name
        self.engine = engine
        self.tokenizer = tokenizer
        self._sampling_params = sampling_params

    @classmethod
    def from_model(
        cls, *, name: str, model: str, engine: dict[str, Any] | None = None
    ) -> VLLMBackend:
        """Start vLLM's async engine on ``model`` (``engine``: AsyncEngineArgs kwargs)."""
        require_vllm()
        import vllm
        from transformers import AutoTokenizer

        try:
            args = vllm.AsyncEngineArgs(model=model, **(engine or {}))
            async_engine = vllm.AsyncLLMEngine.from_engine_args(args)
            tokenizer = AutoTokenizer.from_pretrained(model)
        except Exception as exc:  # noqa: BLE001 - engine start failures vary widely
            raise ModelError(f"vLLM could not load {model!r}: {exc}", model=name) from exc
        return cls(
            name=name, engine=async_engine, tokenizer=tokenizer, sampling_params=vllm.SamplingParams
        )

    def count_tokens(self, text: str) -> int:
        """Tokens by the engine's tokenizer."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def _constraint(self, request: GenerationRequest) -> dict[str, Any]:
        if request.choices is None and request.json_schema is None:
            return {}
        kw: dict[str, Any] = {"choice": list(request.choices)} if request.choices else {}
        if request.json_schema is not None:
            kw = {"json": request.json_schema}
        try:
            from vllm.sampling_params import StructuredOutputsParams

            return {"structured_outputs": StructuredOutputsParams(**kw)}
        except ImportError:  # vLLM < 0.10
            from vllm.sampling_params import GuidedDecodingParams

            return {"guided_decoding": GuidedDecodingParams(**kw)}

    def _params(self, request: GenerationRequest) -> Any:
        return self._sampling_params(
            n=request.n,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=list(request.stop) or None,
            seed=request.seed,
            logprobs=(request.top_logprobs if request.logprobs else None),
            **self._constraint(request),
        )

    def _prompt(self, request: GenerationRequest) -> str:
        if request.prompt is not None:
            return request.prompt
        messages = [{"role": m.role, "content": m.content} for m in request.messages or ()]
        text: str = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return text

    async def _run(self, prompt: Any, params: Any) -> Any:
        """Submit one engine request and return its final output (abort if cancelled)."""
        request_id = f"nightowl-{uuid.uuid4().hex}"
        final = None
        try:
            async for out in self.engine.generate(prompt, _final_only(params), request_id):
                final = out
        except asyncio.CancelledError:
            await self.engine.abort(request_id)
            raise
        if final is None:
            raise ModelError("vLLM returned no output", model=self.name)
        return final

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Generate ``n`` samples (one engine request; batched with concurrent callers)."""
        started = time.perf_counter()
        out = await self._run(self._prompt(request), self._params(request))
        completions = []
        completion_tokens = 0
        for o in out.outputs:
            completion_tokens += len(o.token_ids)
            logprobs = None
            if request.logprobs and o.logprobs is not None:
                entries = []
                for tok, alts in zip(o.token_ids, o.logprobs, strict=False):
                    chosen = alts[tok]
                    ranked = sorted(alts.values(), key=lambda a: -a.logprob)
                    top = tuple(
                        (a.decoded_token or "", float(a.logprob))
                        for a in ranked[: request.top_logprobs]
                    )
                    entries.append(
                        TokenLogprob(
                            token=chosen.decoded_token or "", logprob=float(chosen.logprob), top=top
                        )
                    )
                logprobs = tuple(entries)
            finish: FinishReason = "length" if o.finish_reason == "length" else "stop"
            completions.append(Completion(text=o.text, finish_reason=finish, logprobs=logprobs))
        usage = Usage(
            prompt_tokens=len(out.prompt_token_ids or ()),
            cached_prompt_tokens=int(getattr(out, "num_cached_tokens", 0) or 0),
            completion_tokens=completion_tokens,
        )
        return GenerationResult(
            completions=tuple(completions),
            usage=usage,
            model=self.name,
            latency_s=time.perf_counter() - started,
        )

    async def _score_one(self, p_ids: list[int], c_ids: list[int]) -> float:
        params = self._sampling_params(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        out = await self._run({"prompt_token_ids": p_ids + c_ids}, params)
        plp = out.prompt_logprobs or []
        total = 0.0
        for i, tok in enumerate(c_ids):
            entry = plp[len(p_ids) + i]
            if entry is None or tok not in entry:
                raise ModelError("vLLM returned no prompt logprob", model=self.name)
            total += float(entry[tok].logprob)
        return total

    async def score_continuations(
        self, prompt: str, continuations: list[str]
    ) -> ScoredContinuations:
        """Log p(continuation | prompt) from prompt logprobs (prefix cache shares the prompt)."""
        if not continuations:
            return ScoredContinuations(logprobs=(), token_counts=())
        p_ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        c_ids = [self.tokenizer.encode(c, add_special_tokens=False) for c in continuations]
        values = await asyncio.gather(*(self._score_one(p_ids, ids) for ids in c_ids))
        counts = tuple(len(ids) for ids in c_ids)
        usage = Usage(
            prompt_tokens=len(continuations) * len(p_ids) + sum(counts),
            cached_prompt_tokens=(len(continuations) - 1) * len(p_ids),
        )
        return ScoredContinuations(logprobs=tuple(values), token_counts=counts, usage=usage)

    async def aclose(self) -> None:
        """Shut the engine down (its background loop and workers)."""
        shutdown = getattr(self.engine, "shutdown", None)
        if callable(shutdown):
            shutdown()


def from_spec(name: str, spec: ModelSpec, settings: Settings) -> VLLMBackend:
    """Registry factory for backend kind "vllm"."""
    require_vllm()
    params = dict(spec.params)
    if "model" not in params:
        raise ConfigError(f"model {name!r}: the vllm backend needs params.model (a path)")
    engine = params.get("engine") or {}
    if not isinstance(engine, dict):
        raise ConfigError(
            f"model {name!r}: params.engine must be a table of vllm AsyncEngineArgs arguments"
        )
    return VLLMBackend.from_model(name=name, model=str(params["model"]), engine=engine)

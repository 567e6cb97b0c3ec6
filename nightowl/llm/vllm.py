"""In-process vLLM backend (``pip install 'nightowl[gpu]'``).

Wraps ``vllm.LLM`` (the offline engine). vLLM batches the ``n`` samples itself and keeps
prefix caching on, so cached prompt tokens are reported when the engine exposes them.
Blocking engine calls run in a worker thread under a lock.

``choices=`` and ``json_schema=`` use vLLM's structured outputs
(`StructuredOutputsParams` on vLLM >= 0.10, `GuidedDecodingParams` before).
`score_continuations` uses prompt logprobs. vLLM is imported only when a backend is
built; without it, building raises `MissingExtraError` naming the ``gpu`` extra.

Registry params: ``model`` (a local path or served name; vLLM cannot load this GGUF on
CPU, so point it at a safetensors directory), plus any ``vllm.LLM`` keyword arguments
under ``engine`` (e.g. ``{"gpu_memory_utilization": 0.5, "max_model_len": 4096}``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
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


class VLLMBackend(ModelBackend):
    """A model run in this process by vLLM's offline engine."""

    def __init__(self, *, name: str, model: str, engine: dict[str, Any] | None = None) -> None:
        require_vllm()
        import vllm

        self.name = name
        self._vllm = vllm
        self._lock = threading.Lock()
        try:
            self.llm = vllm.LLM(model=model, **(engine or {}))
        except Exception as exc:  # noqa: BLE001 - engine start failures vary widely
            raise ModelError(f"vLLM could not load {model!r}: {exc}", model=name) from exc
        self.tokenizer = self.llm.get_tokenizer()

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
        return self._vllm.SamplingParams(
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

    def _generate_sync(self, request: GenerationRequest) -> tuple[list[Completion], Usage]:
        with self._lock:
            out = self.llm.generate([self._prompt(request)], self._params(request), use_tqdm=False)[
                0
            ]
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
        return completions, usage

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Generate ``n`` samples with the engine."""
        started = time.perf_counter()
        completions, usage = await asyncio.to_thread(self._generate_sync, request)
        return GenerationResult(
            completions=tuple(completions),
            usage=usage,
            model=self.name,
            latency_s=time.perf_counter() - started,
        )

    def _score_sync(self, prompt: str, continuations: list[str]) -> list[tuple[float, int]]:
        p_ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        inputs = []
        spans = []
        for c in continuations:
            c_ids = self.tokenizer.encode(c, add_special_tokens=False)
            inputs.append({"prompt_token_ids": p_ids + c_ids})
            spans.append((len(p_ids), c_ids))
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        with self._lock:
            outs = self.llm.generate(inputs, params, use_tqdm=False)
        results = []
        for out, (start, c_ids) in zip(outs, spans, strict=True):
            plp = out.prompt_logprobs or []
            total = 0.0
            for i, tok in enumerate(c_ids):
                entry = plp[start + i]
                if entry is None or tok not in entry:
                    raise ModelError("vLLM returned no prompt logprob", model=self.name)
                total += float(entry[tok].logprob)
            results.append((total, len(c_ids)))
        return results

    async def score_continuations(
        self, prompt: str, continuations: list[str]
    ) -> ScoredContinuations:
        """Log p(continuation | prompt) from prompt logprobs (prefix cache shares the prompt)."""
        if not continuations:
            return ScoredContinuations(logprobs=(), token_counts=())
        scored = await asyncio.to_thread(self._score_sync, prompt, continuations)
        p_len = self.count_tokens(prompt)
        counts = tuple(n for _, n in scored)
        usage = Usage(
            prompt_tokens=len(continuations) * p_len + sum(counts),
            cached_prompt_tokens=(len(continuations) - 1) * p_len,
        )
        return ScoredContinuations(
            logprobs=tuple(v for v, _ in scored), token_counts=counts, usage=usage
        )


def from_spec(name: str, spec: ModelSpec, settings: Settings) -> VLLMBackend:
    """Registry factory for backend kind "vllm"."""
    require_vllm()
    params = dict(spec.params)
    if "model" not in params:
        raise ConfigError(f"model {name!r}: the vllm backend needs params.model (a path)")
    engine = params.get("engine") or {}
    if not isinstance(engine, dict):
        raise ConfigError(f"model {name!r}: params.engine must be a table of vllm.LLM arguments")
    return VLLMBackend(name=name, model=str(params["model"]), engine=engine)

"""In-process `transformers` backend: the embedded CPU model (SmolLM2-135M-Instruct GGUF).

The pieces live beside this module: `nightowl.llm.hf_weights` finds and loads the
weights (once per process, GGUF converted once to a cached float32 copy),
`nightowl.llm._prefix_cache` reuses the KV cache of recent prompts' common prefixes,
`nightowl.llm._hf_scoring` scores continuations in one batched forward, and
`nightowl.llm.dtype` picks the dtype this machine is fast at.

Loading is lazy: building the backend reads nothing; `count_tokens` loads only the
tokenizer (so billing an oracle teacher by the student's tokenizer never loads the
student); the weights load on the first `generate` / `score_continuations`. Every use
of the model holds its lock and runs in a worker thread (`asyncio.to_thread`), so the
event loop stays responsive.

Generation: the prompt is prefilled once (reusing a cached prefix) and its KV cache is
shared by the ``n`` samples, which are drawn in one batched ``generate``. Chat requests
use the model's chat template, raw prompts are tokenized as is. Stop strings cut the
text (finish "stop"); hitting ``max_tokens`` gives finish "length".

``choices=`` is exact: each allowed string (followed by its terminator: the end-of-turn
token for chat, else the request's first stop string, else end-of-text) is scored with
log p(choice | prompt); the argmax is taken at temperature 0, otherwise samples come from
the distribution renormalised over the choices (with temperature). ``json_schema=`` is
not supported here (`ModelError`): use an OpenAI-compatible server (vLLM) for
schema-constrained decoding.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nightowl.errors import ModelError
from nightowl.llm import _hf_scoring
from nightowl.llm._hf_batching import RequestBatcher
from nightowl.llm._hf_generate import Outcome, batch_key, generate_many, generate_one
from nightowl.llm.base import (
    Completion,
    GenerationRequest,
    GenerationResult,
    ModelBackend,
    ScoredContinuations,
    TokenLogprob,
    Usage,
)
from nightowl.llm.dtype import AUTO, resolve_dtype
from nightowl.llm.hf_weights import (
    LoadedModel,
    LoadedTokenizer,
    is_model_loaded,
    load_model,
    load_tokenizer,
    resolve_weights,
)

if TYPE_CHECKING:
    from nightowl.config import ModelSpec, Settings

__all__ = ["TransformersBackend", "from_spec"]

#: one queued generation: the request, its prompt ids, its new-token limit
_Job = tuple[GenerationRequest, list[int], int]


class TransformersBackend(ModelBackend):
    """A causal LM run in-process with transformers on CPU (weights loaded on first use)."""

    def __init__(
        self,
        *,
        name: str,
        directory: str,
        gguf_file: str | None = None,
        dtype: str = AUTO,
        threads: int = 1,
        batch_window_s: float = 0.005,
        max_batch: int = 8,
    ) -> None:
        """Remember where the weights are; nothing is loaded until it is needed.

        Args:
            name: registry name (reported in results and errors).
            directory: folder of the weights (or of the GGUF file).
            gguf_file: GGUF file name inside ``directory``, or None for safetensors.
            dtype: "auto" (what this CPU is fast at, `nightowl.llm.dtype`) or a torch dtype.
            threads: torch intra-op threads, set when the weights load.
            batch_window_s: how long the first of several concurrent unseeded
                generations waits for others to decode with it.
            max_batch: most requests decoded together (1 turns batching off).
        """
        self.name = name
        self.threads = threads
        self.directory = directory
        self.gguf_file = gguf_file
        self.dtype, self.dtype_reason = resolve_dtype(dtype)
        self._tok: LoadedTokenizer | None = None
        self._model: LoadedModel | None = None
        self._init_lock = threading.Lock()
        self.batch_window_s = batch_window_s
        self.max_batch = max_batch
        self._batch: RequestBatcher[_Job, Outcome] | None = None

    # -- lazy loading ---------------------------------------------------------------
    @property
    def weights_loaded(self) -> bool:
        """Whether this process holds the model weights (not just the tokenizer)."""
        return self._model is not None or is_model_loaded(
            self.directory, self.gguf_file, self.dtype
        )

    def _tokenizer(self) -> LoadedTokenizer:
        if self._tok is None:
            with self._init_lock:
                if self._tok is None:
                    self._tok = load_tokenizer(self.directory, self.gguf_file)
        return self._tok

    def _loaded(self) -> LoadedModel:
        if self._model is None:
            with self._init_lock:
                if self._model is None:
                    import torch

                    torch.set_num_threads(self.threads)
                    self._model = load_model(self.directory, self.gguf_file, self.dtype)
        return self._model

    def load(self) -> TransformersBackend:
        """Load the weights now (benches and servers that want the cost up front)."""
        self._loaded()
        return self

    # -- basics -----------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """The model's own tokenizer."""
        return self._tokenizer().tokenizer

    @property
    def model(self) -> Any:
        """The torch module (use under `lock`); loads the weights on first access."""
        return self._loaded().model

    @property
    def lock(self) -> threading.Lock:
        """Serialises all use of the shared model."""
        return self._loaded().lock

    @property
    def load_s(self) -> float:
        """Seconds the first load of the weights in this process took."""
        return self._loaded().load_s

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` by the model's tokenizer (no special tokens added)."""
        return len(self.encode(text))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added); safe from any thread."""
        tok = self._tokenizer()
        with tok.lock:
            ids: list[int] = tok.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def render(self, request: GenerationRequest) -> str:
        """The prompt text the model sees: chat template applied, or the raw prompt."""
        if request.prompt is not None:
            return request.prompt
        messages = [{"role": m.role, "content": m.content} for m in request.messages or ()]
        text: str = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return text

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """Token ids of the rendered prompt (the chat template holds its special tokens)."""
        ids = self.encode(self.render(request))
        if not ids:
            raise ModelError("empty prompt", model=self.name)
        if len(ids) >= self.context_length:
            raise ModelError(
                f"prompt has {len(ids)} tokens; {self.name} has a {self.context_length}-token "
                "context",
                model=self.name,
            )
        return ids

    @property
    def context_length(self) -> int:
        """Maximum tokens (prompt + completion) the model attends over."""
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)

    @property
    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else 0

    # -- public async API ---------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Generate ``request.n`` samples (or choose among ``request.choices``)."""
        if request.json_schema is not None:
            raise ModelError(
                "the transformers backend does not support json_schema constrained decoding; "
                "use choices= or an OpenAI-compatible server (vLLM) with response_format",
                model=self.name,
            )
        started = time.perf_counter()
        work = self._choose_sync if request.choices is not None else self._generate_sync
        completions, usage = await asyncio.to_thread(work, request)
        return GenerationResult(
            completions=tuple(completions),
            usage=usage,
            model=self.name,
            latency_s=time.perf_counter() - started,
        )

    async def score_continuations(
        self, prompt: str, continuations: list[str]
    ) -> ScoredContinuations:
        """Log p(continuation | raw prompt) for each continuation, one batched forward.

        Usage is billed as ``len(continuations)`` echo calls with prefix caching:
        prompt tokens = sum of (prompt + continuation) tokens, of which all but the
        first copy of the prompt count as cached (plus any prefix reused from earlier
        calls).
        """
        if not continuations:
            return ScoredContinuations(logprobs=(), token_counts=())
        p_ids = self.encode(prompt)
        if not p_ids:
            raise ModelError("score_continuations needs a non-empty prompt", model=self.name)
        c_ids = [self.encode(c) for c in continuations]
        per_token, reused = await asyncio.to_thread(self.score_tokens, p_ids, c_ids)
        counts = tuple(len(c) for c in c_ids)
        k = len(continuations)
        usage = Usage(
            prompt_tokens=k * len(p_ids) + sum(counts),
            cached_prompt_tokens=(k - 1) * len(p_ids) + reused,
        )
        return ScoredContinuations(
            logprobs=tuple(sum(t) for t in per_token), token_counts=counts, usage=usage
        )

    async def prompt_logprobs(self, text: str) -> list[tuple[str, float | None, int]]:
        """Each token of ``text`` with log p(token | preceding tokens) and its text offset.

        The first token has no context, so its log-probability is None (as in the
        OpenAI ``echo`` format). Used by the HTTP server for ``echo=true``.
        """
        tok = self._tokenizer()
        with tok.lock:
            enc = tok.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = enc["input_ids"]
        if not ids:
            return []
        offsets = [int(o[0]) for o in enc["offset_mapping"]]

        def work() -> list[float | None]:
            import torch

            with self.lock, torch.inference_mode():
                logits = self.model(input_ids=torch.tensor([ids])).logits[0]
                logp = torch.log_softmax(logits.float(), dim=-1)
                vals: list[float | None] = [None]
                vals += [logp[i - 1, ids[i]].item() for i in range(1, len(ids))]
                return vals

        values = await asyncio.to_thread(work)
        return [
            (self.tokenizer.decode([t]), v, off)
            for t, v, off in zip(ids, values, offsets, strict=True)
        ]

    def clear_prefix_cache(self) -> None:
        """Forget cached prompt prefixes and scores (tests use it for cold usage numbers)."""
        loaded = self._loaded()
        with loaded.lock:
            loaded.prefixes.clear()
            loaded.scores.clear()

    # -- blocking work (worker threads, under the model lock) -----------------------
    def score_tokens(
        self, p_ids: list[int], c_ids: list[list[int]], *, chunk_tokens: int | None = None
    ) -> tuple[list[list[float]], int]:
        """Per-token log-probs of each continuation after ``p_ids`` and the reused prefix.

        Blocking. All continuations go through one batched forward over the prompt's
        KV cache (``chunk_tokens`` bounds rows x prompt tokens per forward).
        """
        if any(not c for c in c_ids):
            raise ModelError("cannot score an empty continuation", model=self.name)
        loaded = self._loaded()
        pad = self._pad_id
        key = loaded.scores.key(p_ids, c_ids)
        with loaded.lock:
            memo = loaded.scores.get(key) if chunk_tokens is None else None
            if memo is not None:  # billed like a prefix-cache hit on the same prompt
                return memo, len(p_ids) - 1
            per_token, reused = _hf_scoring.score_batched(
                loaded.model, loaded.cache_kw, loaded.prefixes, p_ids, c_ids, pad,
                chunk_tokens=chunk_tokens, row_multiple=loaded.row_multiple,
                batch_rows=loaded.batch_rows,
            )  # fmt: skip
            loaded.scores.put(key, per_token)
        return per_token, reused

    def _terminator(self, request: GenerationRequest) -> list[int]:
        """Tokens that end a choice: end-of-turn (chat), first stop string, or end-of-text."""
        if request.messages is None and request.stop:
            ids = self.encode(request.stop[0])
            if ids:
                return ids
        eos = self.tokenizer.eos_token_id
        return [int(eos)] if eos is not None else []

    def _choose_sync(self, request: GenerationRequest) -> Outcome:
        choices = list(dict.fromkeys(request.choices or ()))
        p_ids = self.prompt_ids(request)
        term = self._terminator(request)
        c_tokens = [self.encode(c) for c in choices]
        per_token, reused = self.score_tokens(p_ids, [c + term for c in c_tokens])
        picks = _hf_scoring.pick_choices(
            [sum(t) for t in per_token], request.n, request.temperature, request.seed
        )
        completions = []
        completion_tokens = 0
        for i in picks:
            toks = c_tokens[i] + term
            completion_tokens += len(toks)
            lps = tuple(
                TokenLogprob(token=self.tokenizer.decode([t]), logprob=lp)
                for t, lp in zip(toks, per_token[i], strict=True)
            )
            completions.append(Completion(text=choices[i], finish_reason="stop", logprobs=lps))
        usage = Usage(
            prompt_tokens=len(p_ids),
            cached_prompt_tokens=reused,
            completion_tokens=completion_tokens,
        )
        return completions, usage

    def _generate_sync(self, request: GenerationRequest) -> Outcome:
        p_ids = self.prompt_ids(request)
        max_new = min(request.max_tokens, self.context_length - len(p_ids))
        loaded = self._loaded()
        # A seeded request must draw from its own RNG stream, so it decodes alone.
        if request.seed is not None or self.max_batch <= 1:
            with loaded.lock:
                return generate_one(loaded, self.tokenizer, self.name, request, p_ids, max_new)
        return self._batcher().submit(batch_key(request), (request, p_ids, max_new))

    def _batcher(self) -> RequestBatcher[_Job, Outcome]:
        if self._batch is None:
            lock = self._loaded().lock  # before _init_lock: loading takes it too
            with self._init_lock:
                if self._batch is None:
                    self._batch = RequestBatcher(
                        self._run_batch, lock,
                        window_s=self.batch_window_s, max_batch=self.max_batch,
                    )  # fmt: skip
        return self._batch

    def _run_batch(self, jobs: Sequence[_Job]) -> list[Outcome]:
        """Run concurrent requests together (the batcher holds the model lock)."""
        loaded = self._loaded()
        if len(jobs) == 1:  # alone: the prefix-cached path
            request, p_ids, max_new = jobs[0]
            return [generate_one(loaded, self.tokenizer, self.name, request, p_ids, max_new)]
        return generate_many(
            loaded, self.tokenizer, self.name,
            [j[0] for j in jobs], [j[1] for j in jobs], [j[2] for j in jobs],
        )  # fmt: skip

    @property
    def batch_sizes(self) -> list[int]:
        """Sizes of the concurrent-request batches run so far (benches, tests)."""
        return [] if self._batch is None else list(self._batch.batch_sizes)


def from_spec(name: str, spec: ModelSpec, settings: Settings) -> TransformersBackend:
    """Registry factory for backend kind "transformers" (``params.dtype`` defaults to auto)."""
    params = dict(spec.params)
    directory, gguf_file = resolve_weights(params)
    return TransformersBackend(
        name=name,
        directory=directory,
        gguf_file=gguf_file,
        dtype=str(params.get("dtype") or AUTO),
        threads=int(params.get("threads", settings.threads)),
        batch_window_s=float(params.get("batch_window_ms", 5)) / 1000,
        max_batch=int(params.get("max_batch", 8)),
    )

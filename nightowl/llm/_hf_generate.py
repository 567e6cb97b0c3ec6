"""Free-text generation for the in-process transformers backend (callers hold the lock).

`generate_one` serves one request: its prompt is prefilled once (reusing the longest
cached prefix) and the KV cache is repeated for the request's ``n`` samples, which
decode together in one ``generate``. `generate_many` serves several concurrent
requests with the same sampling settings (grouped by `batch_key`) in one left-padded
``generate``: each request's rows decode together with everyone else's, which is where
a small CPU model spends its time (per-token overhead). Left padding shifts positions,
so that path does not use the prefix cache.

Post-processing is shared: the text ends at end-of-text or the first stop string
(finish "stop", the end-of-text token billed as in vLLM) or at ``max_tokens`` (finish
"length"); greedy requests decode once and bill ``n`` samples, as hosted APIs do.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from nightowl.errors import ModelError
from nightowl.llm._hf_scoring import token_logprobs
from nightowl.llm._prefix_cache import cached_prefill
from nightowl.llm.base import Completion, FinishReason, GenerationRequest, Usage
from nightowl.llm.hf_weights import LoadedModel

Outcome = tuple[list[Completion], Usage]


def batch_key(request: GenerationRequest) -> Hashable:
    """Requests with equal keys can decode in one batch (same sampling settings)."""
    greedy = request.temperature <= 0
    return (
        greedy,
        None if greedy else (request.temperature, request.top_p),
        request.stop,
        request.logprobs,
        request.top_logprobs if request.logprobs else 0,
    )


def _kwargs(request: GenerationRequest, tokenizer: Any, max_new: int) -> dict[str, Any]:
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new,
        "do_sample": request.temperature > 0,
        "return_dict_in_generate": True,
        "output_logits": request.logprobs,
        "pad_token_id": pad if pad is not None else eos,
        "eos_token_id": eos,
    }
    if request.temperature > 0:
        kwargs.update(temperature=request.temperature, top_p=request.top_p, top_k=0)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if request.stop:
        kwargs.update(stop_strings=list(request.stop), tokenizer=tokenizer)
    return kwargs


def _finish(
    request: GenerationRequest, tokenizer: Any, rows: list[list[int]], logits: Any, first_row: int
) -> tuple[list[Completion], int]:
    """Completions for one request's decoded rows, and the completion tokens billed."""
    eos = tokenizer.eos_token_id
    completions: list[Completion] = []
    billed = 0
    for offset, toks in enumerate(rows):
        end = toks.index(eos) if eos in toks else len(toks)
        text = tokenizer.decode(toks[:end], skip_special_tokens=True)
        finish: FinishReason
        hits = [i for i in (text.find(s) for s in request.stop if s) if i >= 0]
        if hits:
            text, finish, used = text[: min(hits)], "stop", end
        elif end < len(toks):
            finish, used = "stop", end + 1  # the end-of-text token counts, as in vLLM
        else:
            finish, used = "length", end  # max_tokens (or the context) ran out
        billed += used
        lps = None
        if request.logprobs:
            row = first_row + offset
            lps = token_logprobs(tokenizer, logits, row, toks[:used], request.top_logprobs)
        completions.append(Completion(text=text, finish_reason=finish, logprobs=lps))
    if request.temperature <= 0 and request.n > 1:
        completions, billed = completions * request.n, billed * request.n
    return completions, billed


def _run(model: Any, name: str, **kwargs: Any) -> Any:
    try:
        return model.generate(**kwargs)
    except (RuntimeError, ValueError, IndexError) as exc:  # torch/HF failures
        raise ModelError(f"{name}: generation failed: {exc}", model=name) from exc


def generate_one(
    loaded: LoadedModel,
    tokenizer: Any,
    name: str,
    request: GenerationRequest,
    p_ids: list[int],
    max_new: int,
) -> Outcome:
    """One request's ``n`` samples in one ``generate`` over its (prefix-cached) prompt."""
    import torch

    rows = 1 if request.temperature <= 0 else request.n
    kwargs = _kwargs(request, tokenizer, max_new)
    # fork_rng: a request's seed must not reseed everyone else's torch RNG.
    with torch.inference_mode(), torch.random.fork_rng(devices=[]):
        if request.seed is not None:
            torch.manual_seed(request.seed)
        input_ids = torch.tensor([p_ids] * rows)
        reused = 0
        if len(p_ids) > 1:
            cache, reused = cached_prefill(
                loaded.model, loaded.cache_kw, loaded.prefixes, p_ids[:-1]
            )
            if rows > 1:
                cache.batch_repeat_interleave(rows)
            kwargs[loaded.cache_kw] = cache
        out = _run(
            loaded.model, name, input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
            **kwargs,
        )  # fmt: skip
    new = out.sequences[:, len(p_ids) :].tolist()
    completions, billed = _finish(request, tokenizer, new, out.logits, 0)
    usage = Usage(prompt_tokens=len(p_ids), cached_prompt_tokens=reused, completion_tokens=billed)
    return completions, usage


def generate_many(
    loaded: LoadedModel,
    tokenizer: Any,
    name: str,
    requests: Sequence[GenerationRequest],
    prompts: Sequence[list[int]],
    max_new: Sequence[int],
) -> list[Outcome]:
    """Several unseeded requests with one `batch_key` in one left-padded ``generate``."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(p) for p in prompts)
    ids: list[list[int]] = []
    mask: list[list[int]] = []
    first_rows: list[int] = []
    for req, p in zip(requests, prompts, strict=True):
        first_rows.append(len(ids))
        for _ in range(1 if req.temperature <= 0 else req.n):
            ids.append([pad] * (width - len(p)) + p)
            mask.append([0] * (width - len(p)) + [1] * len(p))
    kwargs = _kwargs(requests[0], tokenizer, max(max_new))
    with torch.inference_mode():
        out = _run(
            loaded.model, name, input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
            **kwargs,
        )  # fmt: skip
    new = out.sequences[:, width:].tolist()
    outcomes: list[Outcome] = []
    for req, p, first, limit in zip(requests, prompts, first_rows, max_new, strict=True):
        count = 1 if req.temperature <= 0 else req.n
        rows = [row[:limit] for row in new[first : first + count]]
        if pad != tokenizer.eos_token_id:  # rows that finished early are padded after
            rows = [row[: row.index(pad)] if pad in row else row for row in rows]
        completions, billed = _finish(req, tokenizer, rows, out.logits, first)
        outcomes.append((completions, Usage(prompt_tokens=len(p), completion_tokens=billed)))
    return outcomes


__all__ = ["Outcome", "batch_key", "generate_many", "generate_one"]

"""Prompt-prefix KV caching for the in-process transformers backend (as vLLM does).

An agent's prompts repeat themselves: the same step is sampled again, its action
choices are scored after sampling, and the next step's prompt starts with the same
instructions and retrieved demonstrations. `PrefixCache` keeps the keys/values of the
last few prompts; `cached_prefill` finds the stored prompt sharing the longest common
token prefix with a new one, copies its cache cut to that prefix, and runs the model
only over the tokens that differ. The reused count is reported as
``cached_prompt_tokens`` and billed at the cached-input price.

One prompt, one set of keys/values, whichever path computed them: a prompt is always
prefilled in blocks of `PREFILL_BLOCK` tokens at fixed positions (0, B, 2B, ...), as
vLLM's paged cache does, and a cached prefix is reused up to its last whole block
(or whole, when the new prompt is exactly the stored one). So a cold prefill and one
that starts from a cached prefix run the very same forwards over the very same token
blocks. That matters in bfloat16: a forward over 107 tokens and one over 84 + 23
differ in float32 by ~1e-7, which bf16 rounding amplifies into up to 0.1 nats on an
action's log-probability (measured, `bench/score_paths.py`). Billing still counts the
whole common prefix as cached, as a priced API would.

The cache is not thread-safe on its own: use it under the model's lock.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

#: prefix KV cache: at most this many prompts and this many tokens (~46 kB per token
#: for SmolLM2-135M in float32: 30 layers x keys+values x 3 heads x 64 dims x 4 bytes)
PREFIX_ENTRIES = 4
PREFIX_TOKENS = 16_384
#: prompt tokens per prefill forward, at positions 0, B, 2B, ... (see the module doc)
PREFILL_BLOCK = 64


def common_prefix(a: tuple[int, ...], b: list[int]) -> int:
    """Length of the common token prefix of ``a`` and ``b``."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


class PrefixCache:
    """An LRU of prompt KV caches, looked up by longest common token prefix."""

    def __init__(self, max_entries: int = PREFIX_ENTRIES, max_tokens: int = PREFIX_TOKENS) -> None:
        """Keep at most ``max_entries`` prompts and ``max_tokens`` tokens of keys/values."""
        self.max_entries = max_entries
        self.max_tokens = max_tokens
        self._store: OrderedDict[tuple[int, ...], Any] = OrderedDict()

    def __len__(self) -> int:
        """Number of cached prompts."""
        return len(self._store)

    def clear(self) -> None:
        """Forget every cached prompt."""
        self._store.clear()

    def longest(self, ids: list[int], block: int = 1) -> tuple[Any | None, int, int]:
        """A private copy of the cache covering the longest usable stored prefix of ``ids``.

        Returns (cache, usable tokens, common tokens): the cache covers the first
        ``usable`` tokens of ``ids`` -- the common prefix cut down to a multiple of
        ``block``, or all of it when ``ids`` is exactly a stored prompt -- and
        ``common`` is the whole common prefix (what billing counts as cached).
        (None, 0, common) when nothing usable is stored.
        """
        best: tuple[int, ...] | None = None
        best_len = 0
        for key in self._store:
            n = common_prefix(key, ids)
            if n > best_len:
                best, best_len = key, n
        if best is None:
            return None, 0, 0
        usable = best_len
        if not (best_len == len(best) == len(ids)):
            usable = best_len - best_len % block
        if usable == 0:
            return None, 0, best_len
        self._store.move_to_end(best)
        cache = copy.deepcopy(self._store[best])
        if usable < len(best):
            # negative = tokens to drop (the form every transformers version accepts)
            cache.crop(usable - len(best))
        return cache, usable, best_len

    def put(self, ids: list[int], cache: Any) -> None:
        """Store a copy of ``cache`` (covering exactly ``ids``); evict the oldest."""
        key = tuple(ids)
        # a stored prompt that is a prefix of this one adds nothing any more
        for old in [k for k in self._store if len(k) <= len(key) and key[: len(k)] == k]:
            del self._store[old]
        self._store[key] = copy.deepcopy(cache)
        while len(self._store) > self.max_entries or (
            len(self._store) > 1 and sum(len(k) for k in self._store) > self.max_tokens
        ):
            self._store.popitem(last=False)


def cached_prefill(
    model: Any, cache_kw: str, prefixes: PrefixCache, ids: list[int], block: int | None = None
) -> tuple[Any, int]:
    """A KV cache covering ``ids`` (the caller's own copy) and how many tokens were reused.

    Runs the model over the tokens after the longest usable cached prefix, in blocks
    of ``block`` tokens at fixed positions, and stores the result for later calls. The
    reused count is the whole common prefix (billing). Call under the model's lock,
    inside ``torch.inference_mode``.
    """
    import torch

    size = PREFILL_BLOCK if block is None else block
    cache, start, common = prefixes.longest(ids, size)
    if start < len(ids):
        while start < len(ids):
            end = min(len(ids), start - start % size + size)
            kw = {cache_kw: cache} if cache is not None else {}
            # logits_to_keep=1: the prefill needs the cache, not 49k logits per token
            out = model(
                input_ids=torch.tensor([ids[start:end]]), use_cache=True, logits_to_keep=1, **kw
            )
            cache = out.cache if cache_kw == "cache" else out.past_key_values
            start = end
        prefixes.put(ids, cache)
    return cache, common


__all__ = [
    "PREFILL_BLOCK",
    "PREFIX_ENTRIES",
    "PREFIX_TOKENS",
    "PrefixCache",
    "cached_prefill",
    "common_prefix",
]

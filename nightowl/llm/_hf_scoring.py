"""Exact scoring for the in-process transformers backend: log p(continuation | prompt).

All continuations of one prompt are scored in ONE batched forward on top of the
prompt's KV cache: the cache of all prompt tokens but the last (taken from the prefix
cache where possible) is repeated across the batch, and each row is the prompt's last
token followed by one right-padded continuation. Row j's logits at position t give
log p(continuation_j[t] | prompt + continuation_j[:t]); real tokens never attend to the
padding after them, so no attention mask is needed. Very many continuations are split
into chunks that bound the repeated cache (`SCORE_CHUNK_TOKENS`).

This gives `choices=` (pick or sample among allowed strings) and
`score_continuations` (logprob margins, log p(q|c)) the same numbers as scoring each
continuation alone, at the cost of one forward.

One score for one (prompt, action, dtype). In float32 every path agrees within ~1e-5
nats. In bfloat16 a row's numbers depend on the shape of the forward it ran in: a
float32 difference of ~1e-7 from another kernel blocking flips a bf16 rounding, and
30 layers amplify it to up to 0.1 nats. So in reduced precision the rows are padded
to a fixed width (`ROW_MULTIPLE`: the attention sees the same query length whatever
else is in the batch), and rows of any count share a forward only where the linear
kernels were measured row-invariant on this machine (`rows_invariant`). Otherwise
every forward has one fixed shape: `FIXED_ROWS` rows of one padded width, filled up
with copies of its first row, so a continuation gets the same bits alone, among
others, or in another order (on AMX: 1.9x faster than one forward per row).
Together with the block-aligned prefill (`nightowl.llm._prefix_cache`), cold,
prefix-cached, batched and one-at-a-time scores are then bit-for-bit equal
(tests/llm/test_score_paths.py, for every dtype this CPU runs natively).
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from nightowl.llm._prefix_cache import PrefixCache, cached_prefill
from nightowl.llm.base import TokenLogprob

if TYPE_CHECKING:
    import torch

#: continuation rows x prompt tokens per scoring forward (bounds the repeated KV cache)
SCORE_CHUNK_TOKENS = 24_000
#: scored (prompt, continuations) pairs remembered per model
SCORE_MEMO_ENTRIES = 16
#: scoring rows are padded to a multiple of this in reduced precision (an AMX tile)
ROW_MULTIPLE = 16
#: rows per forward where the kernels are not row-invariant: every forward has this shape
FIXED_ROWS = 8


def rows_invariant(weight: Any) -> bool:
    """Whether a linear layer gives each row the same bits whatever the batch's size.

    Measured once per loaded model on one of its own weights (a few milliseconds): the
    CPU's GEMM kernels may pick another blocking for more rows, and in bf16 that
    changes results. Row counts are multiples of `ROW_MULTIPLE`, as scoring uses them.
    """
    import torch
    import torch.nn.functional as F  # noqa: N812

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8 * ROW_MULTIPLE, weight.shape[1], generator=gen).to(weight.dtype)
    with torch.inference_mode():
        whole = F.linear(x, weight)
        for rows in (ROW_MULTIPLE, 2 * ROW_MULTIPLE, 5 * ROW_MULTIPLE):
            if not torch.equal(F.linear(x[:rows], weight), whole[:rows]):
                return False
    return True


class ScoreMemo:
    """The last few scorings by exact token ids, so a step sampled again costs nothing.

    An adaptive vote draws several batches over the same prompt and choices; the
    scores are a pure function of the token ids, so the second draw reuses the first's.
    Use under the model's lock.
    """

    def __init__(self, max_entries: int = SCORE_MEMO_ENTRIES) -> None:
        """Remember at most ``max_entries`` scorings."""
        self.max_entries = max_entries
        self.hits = 0
        self._store: OrderedDict[tuple[Any, ...], list[list[float]]] = OrderedDict()

    @staticmethod
    def key(p_ids: list[int], c_ids: list[list[int]]) -> tuple[Any, ...]:
        """The memo key of one scoring."""
        return (tuple(p_ids), tuple(tuple(c) for c in c_ids))

    def get(self, key: tuple[Any, ...]) -> list[list[float]] | None:
        """A copy of the remembered per-token log-probs, or None."""
        got = self._store.get(key)
        if got is None:
            return None
        self._store.move_to_end(key)
        self.hits += 1
        return [list(row) for row in got]

    def put(self, key: tuple[Any, ...], value: list[list[float]]) -> None:
        """Remember a scoring; the least recently used goes beyond ``max_entries``."""
        self._store[key] = [list(row) for row in value]
        while len(self._store) > self.max_entries:
            self._store.popitem(last=False)

    def clear(self) -> None:
        """Forget every scoring."""
        self._store.clear()


def score_batched(
    model: Any,
    cache_kw: str,
    prefixes: PrefixCache,
    p_ids: list[int],
    c_ids: list[list[int]],
    pad_id: int,
    *,
    chunk_tokens: int | None = None,
    row_multiple: int = 1,
    batch_rows: bool = True,
) -> tuple[list[list[float]], int]:
    """Per-token log-probs of each continuation after ``p_ids``, and reused prefix tokens.

    Call under the model's lock. ``p_ids`` and every continuation must be non-empty.
    ``row_multiple`` pads every row to a multiple of that many tokens; ``batch_rows``
    False runs fixed-shape forwards of `FIXED_ROWS` rows of one width (the module doc),
    whatever ``chunk_tokens`` says.
    """
    import torch

    budget = SCORE_CHUNK_TOKENS if chunk_tokens is None else chunk_tokens
    results: list[list[float]] = [[] for _ in c_ids]
    # A fixed shape depends on the prompt's length alone, never on ``chunk_tokens``.
    fixed = 0 if batch_rows else max(1, min(FIXED_ROWS, SCORE_CHUNK_TOKENS // len(p_ids)))
    size = fixed or max(1, budget // len(p_ids))
    groups = _groups(c_ids, row_multiple, size, by_width=bool(fixed))
    with torch.inference_mode():
        base, reused = (None, 0)
        if len(p_ids) > 1:
            base, reused = cached_prefill(model, cache_kw, prefixes, p_ids[:-1])
        last = p_ids[-1]
        for n, group in enumerate(groups):
            width = 1 + max(len(c_ids[i]) for i in group)
            width += -width % row_multiple
            rows = [[last, *c_ids[i]] + [pad_id] * (width - 1 - len(c_ids[i])) for i in group]
            rows += [rows[0]] * (fixed - len(rows))  # filler rows keep the shape fixed
            kw: dict[str, Any] = {}
            if base is not None:
                # the last group may consume the base cache; earlier ones work on copies
                kv = base if n == len(groups) - 1 else copy.deepcopy(base)
                if len(rows) > 1:
                    kv.batch_repeat_interleave(len(rows))
                kw[cache_kw] = kv
            logits = model(input_ids=torch.tensor(rows), use_cache=base is not None, **kw).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            for j, i in enumerate(group):
                cont = c_ids[i]
                picked = logp[j, torch.arange(len(cont)), torch.tensor(cont)]
                results[i] = picked.tolist()
    return results, reused


def _groups(
    c_ids: list[list[int]], row_multiple: int, size: int, *, by_width: bool
) -> list[list[int]]:
    """Continuation indices per forward: in order, or by padded width (fixed shapes)."""
    if not by_width:
        return [list(range(lo, min(lo + size, len(c_ids)))) for lo in range(0, len(c_ids), size)]
    buckets: dict[int, list[int]] = {}
    for i, c in enumerate(c_ids):
        width = 1 + len(c)
        buckets.setdefault(width + -width % row_multiple, []).append(i)
    return [
        idx[lo : lo + size] for _, idx in sorted(buckets.items()) for lo in range(0, len(idx), size)
    ]


def pick_choices(scores: list[float], n: int, temperature: float, seed: int | None) -> list[int]:
    """Indices of ``n`` picks: argmax at temperature 0, else samples from softmax(s/T)."""
    import torch

    values = torch.tensor(scores, dtype=torch.float64)
    if temperature <= 0:
        return [int(values.argmax())] * n
    probs = torch.softmax(values / temperature, dim=0)
    gen = torch.Generator()
    if seed is not None:
        gen.manual_seed(seed)
    else:
        gen.seed()
    picks: list[int] = torch.multinomial(probs, n, replacement=True, generator=gen).tolist()
    return picks


def token_logprobs(
    tokenizer: Any, logits: tuple[torch.Tensor, ...], row: int, toks: list[int], top: int
) -> tuple[TokenLogprob, ...]:
    """Token log-probs (and ``top`` alternatives) of one generated row from its logits."""
    import torch

    result = []
    for step, tok in enumerate(toks):
        logp = torch.log_softmax(logits[step][row].float(), dim=-1)
        alts: tuple[tuple[str, float], ...] = ()
        if top > 0:
            vals, idx = logp.topk(top)
            alts = tuple(
                (tokenizer.decode([i]), v) for i, v in zip(idx.tolist(), vals.tolist(), strict=True)
            )
        lp = logp[tok].item()
        result.append(
            TokenLogprob(
                token=tokenizer.decode([tok]),
                logprob=lp if math.isfinite(lp) else -1e9,
                top=alts,
            )
        )
    return tuple(result)


__all__ = [
    "FIXED_ROWS",
    "ROW_MULTIPLE",
    "SCORE_CHUNK_TOKENS",
    "ScoreMemo",
    "pick_choices",
    "rows_invariant",
    "score_batched",
    "token_logprobs",
]

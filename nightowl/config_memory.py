"""The ``memory`` section of the settings: knobs of the built-in demo memory.

`MemorySettings` is ``Settings.memory`` (`nightowl.config`): set it with environment
variables ``NIGHTOWL_MEMORY__<FIELD>`` (e.g. ``NIGHTOWL_MEMORY__GOAL_VALUES=keep``,
``NIGHTOWL_MEMORY__W_HIST=0.3``) or a ``[memory]`` table in the project's ``nightowl.toml``.
It lives one layer below ``nightowl.config`` so that the settings and the memory share it.
``threads`` left unset follows the top-level ``threads``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MemorySettings(BaseModel):
    """Knobs of the demo memory (defaults are what the demo and benchmarks use)."""

    model_config = ConfigDict(extra="forbid")

    threads: int = Field(default=1, ge=1, description="faiss OpenMP threads")
    hnsw_threshold: int = Field(
        default=20_000, ge=1, description="rows above which the goal index is HNSW"
    )
    step_hnsw_threshold: int | None = Field(
        default=None,
        ge=1,
        description="rows above which the obs/hist indexes are HNSW; None: always flat. "
        "Retrieval only reads step vectors by id (exact scoring inside the top "
        "episodes), so HNSW there costs build time and memory and buys only the raw "
        "global `search`",
    )
    hnsw_m: int = Field(default=32, ge=4)
    ef_construction: int = Field(default=64, ge=8)
    ef_search: int = Field(default=64, ge=8)
    history_len: int = Field(
        default=4, ge=0, description="previous actions in the goal+history key"
    )
    max_text_chars: int = Field(
        default=1000, ge=50, description="texts are cut to this before embedding"
    )
    w_obs: float = Field(default=1.0, ge=0, description="weight of observation similarity per step")
    w_hist: float = Field(
        default=0.5, ge=0, description="weight of goal+history similarity per step"
    )
    save_interval_s: float = Field(
        default=30.0,
        ge=0,
        description="indexes are saved after a write at most this often (and on close)",
    )
    refresh_interval_s: float | None = Field(
        default=5.0,
        ge=0,
        description="retrieve checks SQL for other processes' writes at most this often "
        "(0: every call; None: never, call refresh() yourself)",
    )
    step_cache_size: int = Field(
        default=20_000, ge=0, description="retrieved step records kept in memory (LRU)"
    )
    verify_texts_on_open: bool = Field(
        default=True,
        description="at open, re-hash every stored text and re-embed the changed ones "
        "(O(stored steps): ~20 s at 100k steps on a loaded 2-core machine); False "
        "trusts SQL's hashes, and `rebuild(reembed=...)` verifies on demand",
    )
    query_cache_size: int = Field(
        default=4096, ge=0, description="query texts whose vectors are kept (LRU)"
    )
    use_gpu: bool | Literal["auto"] = "auto"
    goal_values: Literal["mask", "keep"] = Field(
        default="mask",
        description="'mask': the goal enters the goal and goal+history keys with its quoted "
        "values and numbers replaced by placeholders, so that tasks of one template (send "
        "$25 to 'Ann' / $40 to 'Bo') find each other rather than tasks that share a value; "
        "'keep': the goal as written",
    )

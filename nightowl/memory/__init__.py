"""Demo memory: recorded steps, demo episodes, embeddings, FAISS indexes, retrieval.

The agent codes against the `DemoStore` and `StepLog` interfaces (`nightowl.memory.base`);
`DemoMemory` (`nightowl.memory.store`) is the SQL + FAISS implementation, `SqlStepLog`
(`nightowl.memory.steps`) the recorded steps of a database alone::

    mem = DemoMemory(db, embedder)            # embedder defaults to all-MiniLM-L6-v2
    mem.record_steps(episode_id, steps)       # any episode, for replay/audit
    mem.add_episode(episode_id, goal, steps)  # make a (successful) episode a demo
    windows = mem.retrieve(goal, observation, history, k_episodes=4, k_steps=2, window=2)
"""

from nightowl.memory.base import DemoStore, StepLog
from nightowl.memory.embedder import (
    Embedder,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    build_embedder,
)
from nightowl.memory.steps import SqlStepLog
from nightowl.memory.store import (
    DemoMemory,
    DemoWindow,
    EpisodeDemo,
    MemorySettings,
    MemoryStats,
    StepRecord,
)

__all__ = [
    "DemoMemory",
    "DemoStore",
    "DemoWindow",
    "Embedder",
    "EpisodeDemo",
    "HashingEmbedder",
    "MemorySettings",
    "MemoryStats",
    "SentenceTransformerEmbedder",
    "SqlStepLog",
    "StepLog",
    "StepRecord",
    "build_embedder",
]

"""Demo memory: recorded steps, demo episodes, embeddings, FAISS indexes, retrieval.

The agent codes against the `DemoStore` interface (`nightowl.memory.base`);
`DemoMemory` (`nightowl.memory.store`) is the SQL + FAISS implementation::

    mem = DemoMemory(db, embedder)            # embedder defaults to all-MiniLM-L6-v2
    mem.record_steps(episode_id, steps)       # any episode, for replay/audit
    mem.add_episode(episode_id, goal, steps)  # make a (successful) episode a demo
    windows = mem.retrieve(goal, observation, history, k_episodes=4, k_steps=2, window=2)
"""

from nightowl.memory.base import DemoStore
from nightowl.memory.embedder import (
    Embedder,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    build_embedder,
)
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
    "StepRecord",
    "build_embedder",
]

"""`DemoStore`: the interface the agent loop and demo collection use.

A demo store keeps every recorded step of every episode (the audit record), remembers
which episodes are demos, and returns demo windows relevant to a state. `DemoMemory`
(SQL + FAISS) is the implementation nightowl ships; another store (a vector database,
a remote service) implements the abstract methods and registers with the conformance
suite in ``tests/conformance/test_demo_store.py``. The convenience methods are built on
the abstract ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

from nightowl.memory.records import (
    DemoWindow,
    EpisodeDemo,
    HistoryItem,
    StepRecord,
    as_step_records,
)


class DemoStore(ABC):
    """Recorded steps, demo episodes, and retrieval of demo windows."""

    # --- required -------------------------------------------------------------------------
    @abstractmethod
    def record_steps(
        self, episode_id: str, steps: Sequence[StepRecord | dict[str, Any]]
    ) -> list[int]:
        """Save steps of any episode, upserting on (episode_id, idx); their ids in order.

        Raises:
            StoreError: the store cannot write.
        """

    @abstractmethod
    def episode_steps(self, episode_id: str) -> list[StepRecord]:
        """Every recorded step of an episode, ordered by idx, ids set ([] if none)."""

    @abstractmethod
    def add_episodes(self, demos: Sequence[EpisodeDemo]) -> list[int]:
        """Record the episodes' steps and make each a demo (all or nothing); demo ids.

        Adding an episode that is already a demo replaces that demo.

        Raises:
            StoreError: an episode is unknown (nothing is stored).
            ValueError: an episode repeats a step idx or appears twice.
        """

    @abstractmethod
    def retrieve(
        self,
        goal: str,
        observation: str,
        history: Sequence[HistoryItem] = (),
        k_episodes: int = 4,
        k_steps: int = 2,
        window: int = 2,
        exclude_task_ids: Iterable[str] = (),
        *,
        exclude_episode_ids: Iterable[str] = (),
    ) -> list[DemoWindow]:
        """Demo windows for the current state.

        Args:
            goal: the current task's goal.
            observation: the current observation.
            history: earlier steps of the current episode, oldest first, each an
                ``(observation, action)`` pair or just the action string.
            k_episodes: at most this many demo episodes (by goal similarity).
            k_steps: matched steps per episode (by observation + goal/history).
            window: steps kept either side of each matched step.
            exclude_task_ids: task ids never returned (e.g. the task being solved).
            exclude_episode_ids: episode ids never returned.

        Returns:
            windows ordered by episode rank, then step index; the same query on the
            same store gives the same answer; [] when the store holds no demos. The
            returned steps are copies (mutating them changes nothing stored).
        """

    @abstractmethod
    def delete_episode(self, episode_id: str) -> bool:
        """Stop using one episode as a demo (its steps stay); False if it was none."""

    @abstractmethod
    def delete_run(self, run_id: str) -> int:
        """Stop using every episode of a run as a demo; returns how many demos went."""

    # --- convenience ----------------------------------------------------------------------
    def add_episode(
        self,
        episode_id: str,
        goal: str,
        steps: Sequence[StepRecord | dict[str, Any]],
        source: str = "collect",
        *,
        env: str | None = None,
        task_id: str | None = None,
    ) -> int:
        """Store one episode's steps and make it a demo; returns the demo id.

        ``env``/``task_id`` default to what the ledger knows about the episode.
        """
        demo = EpisodeDemo(
            episode_id=episode_id,
            goal=goal,
            steps=as_step_records(steps),
            source=source,
            env=env,
            task_id=task_id,
        )
        return self.add_episodes([demo])[0]

    def record_step(self, episode_id: str, step: StepRecord) -> int:
        """Save one step; returns its id."""
        return self.record_steps(episode_id, [step])[0]

    def flush(self) -> None:  # noqa: B027 - optional hook, nothing to persist by default
        """Persist anything kept only in memory (default: nothing)."""

    def close(self) -> None:
        """Release resources; the default flushes."""
        self.flush()

    def __enter__(self) -> DemoStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

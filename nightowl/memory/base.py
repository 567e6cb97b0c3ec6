"""`StepLog` and `DemoStore`: the interfaces the agent loop and demo collection use.

A step log keeps every recorded step of every episode (the audit record): the agent
loop records each acted step through it. A demo store is a step log that also
remembers which episodes are demos and returns demo windows relevant to a state.
`DemoMemory` (SQL + FAISS) is the demo store nightowl ships, `SqlStepLog` the step log
of a database without the demo part (no embedder, no indexes); another store (a vector
database, a remote service) implements the abstract methods and registers with the
conformance suites in ``tests/conformance/test_demo_store.py`` and
``tests/conformance/test_step_log.py``. The convenience methods are built on the
abstract ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, Self

from nightowl.memory._records import (
    DemoWindow,
    EpisodeDemo,
    HistoryItem,
    StepRecord,
    as_step_records,
)


class StepLog(ABC):
    """Recorded steps of every episode, keyed by (episode_id, idx)."""

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
    def record_new_steps(
        self,
        episode_id: str,
        steps: Sequence[StepRecord | dict[str, Any]],
        *,
        within: Any = None,
    ) -> None:
        """Save the steps whose (episode_id, idx) is not recorded yet; recorded ones stay.

        Recording the same step again changes nothing (the first write stands): the
        agent loop relies on it when a resumed node writes its step a second time.

        Args:
            episode_id: the episode (known to the ledger).
            steps: the steps (a repeated idx: the first one counts).
            within: the caller's open write transaction on the store's database (a
                SQLAlchemy ``Session`` for SQL stores), so that the steps commit or roll
                back with the caller's own rows; None: a transaction of the store's own.

        Raises:
            StoreError: the store cannot write (``within`` None).
        """

    @abstractmethod
    def episode_steps(self, episode_id: str) -> list[StepRecord]:
        """Every recorded step of an episode, ordered by idx, ids set ([] if none)."""

    # --- convenience ----------------------------------------------------------------------
    def record_step(self, episode_id: str, step: StepRecord) -> int:
        """Save one step; returns its id."""
        return self.record_steps(episode_id, [step])[0]


class DemoStore(StepLog):
    """Recorded steps (a `StepLog`), demo episodes, and retrieval of demo windows."""

    # --- required -------------------------------------------------------------------------
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

    def refresh(self, *, force: bool = False) -> bool:
        """Pick up demos other processes or hosts wrote since this store was opened.

        True when something was reloaded; the default (a store that always reads through
        to its backend) has nothing to reload.
        """
        return False

    def flush(self) -> None:  # noqa: B027 - optional hook, nothing to persist by default
        """Persist anything kept only in memory (default: nothing)."""

    def close(self) -> None:
        """Release resources; the default flushes."""
        self.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

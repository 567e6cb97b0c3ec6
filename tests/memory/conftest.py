"""Fixtures for the demo-memory tests: a ledger run, demo texts, memories."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nightowl.ledger import Ledger
from nightowl.memory import DemoMemory, HashingEmbedder, MemorySettings, StepRecord

COOKING = (
    "cook a meal: slice the yellow potato, fry it and eat the meal",
    [
        (
            "You are in a kitchen. You see a fridge and a counter. A knife is on the counter.",
            "open fridge",
        ),
        ("You open the fridge, revealing a yellow potato.", "take yellow potato from fridge"),
        ("You take the yellow potato from the fridge.", "take knife from counter"),
        ("You take the knife from the counter.", "slice yellow potato with knife"),
        ("You slice the yellow potato.", "cook yellow potato with stove"),
        ("You fried the yellow potato.", "prepare meal"),
        ("Adding the meal to your inventory.", "eat meal"),
    ],
)
COIN = (
    "find the coin: explore the rooms and take the coin",
    [
        ("You are in the hallway. There is a door to the north and an exit east.", "go north"),
        ("You are in the bedroom. Nothing interesting here. An exit leads west.", "go west"),
        ("You are in the garden. You see a shiny coin on the grass.", "take coin"),
    ],
)
KEY = (
    "unlock the chest with the key and take the treasure",
    [
        (
            "You are in the attic. A small key lies on the floor next to an old chest.",
            "take small key",
        ),
        ("You pick up the small key.", "unlock chest with small key"),
        ("The chest is unlocked.", "open chest"),
        ("The chest opens and reveals a golden treasure.", "take treasure"),
    ],
)
DEMOS = {"cook-1": COOKING, "coin-1": COIN, "key-1": KEY}


def steps_of(pairs: list[tuple[str, str]], actor: str = "teacher") -> list[StepRecord]:
    return [
        StepRecord(
            idx=i, observation=o, action=a, actor=actor, reward=0.0, done=i == len(pairs) - 1
        )
        for i, (o, a) in enumerate(pairs)
    ]


@pytest.fixture
def ledger(db: Any) -> Ledger:
    return Ledger(db)


@pytest.fixture
def run_id(ledger: Ledger) -> str:
    return ledger.start_run("collect-test", "collect", {})


@pytest.fixture
def make_mem(db: Any, tmp_path: Path) -> Callable[..., DemoMemory]:
    """Open a DemoMemory on ``db`` with the hashing fake (indexes in tmp_path)."""

    def _make(embedder: Any = None, index_dir: Path | None = None, **settings: Any) -> DemoMemory:
        settings.setdefault("save_interval_s", 0.0)
        return DemoMemory(
            db,
            embedder or HashingEmbedder(),
            index_dir or tmp_path / "indexes",
            MemorySettings(**settings),
        )

    return _make


@pytest.fixture
def add_demo(ledger: Ledger, run_id: str) -> Callable[..., str]:
    """Record an episode in the ledger and add it to a memory as a demo."""

    def _add(
        mem: DemoMemory,
        task_id: str,
        goal: str,
        pairs: list[tuple[str, str]],
        run: str | None = None,
        source: str = "collect",
    ) -> str:
        ep = ledger.start_episode(run or run_id, task_id, "tw", "train")
        mem.add_episode(ep, goal, steps_of(pairs), source=source)
        return ep

    return _add


@pytest.fixture
def filled(make_mem: Callable[..., DemoMemory], add_demo: Callable[..., str]) -> DemoMemory:
    mem = make_mem()
    for task_id, (goal, pairs) in DEMOS.items():
        add_demo(mem, task_id, goal, pairs)
    return mem

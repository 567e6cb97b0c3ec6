"""Fixtures: an `Assistant` over scripted fake models (control logic) on real SQLite."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from nightowl.chat import Assistant, AssistantConfig
from nightowl.chat.cascade import ModelTeacher
from nightowl.config import Prices
from nightowl.ledger import Ledger, MeteredModel
from nightowl.llm.base import ModelBackend
from nightowl.memory import HashingEmbedder

STUDENT_PRICES = Prices(input=0.1, output=0.4)
TEACHER_PRICES = Prices(input=2.5, output=10.0)


@pytest.fixture
def make_assistant(db) -> Callable[..., Assistant]:  # type: ignore[no-untyped-def]
    """Build an Assistant from fake backends (FunctionModel: test fakes) and a real DB."""

    def build(student: ModelBackend, teacher: ModelBackend | None = None, **cfg) -> Assistant:  # type: ignore[no-untyped-def]
        ledger = Ledger(db)
        run_id = ledger.start_run("chat-test", kind="chat")
        t = None
        if teacher is not None:
            t = ModelTeacher(MeteredModel(teacher, ledger, TEACHER_PRICES, run_id=run_id,
                                          role="teacher"))
        return Assistant(
            student=student, teacher=t, db=db, ledger=ledger, run_id=run_id,
            prices=STUDENT_PRICES, embedder=HashingEmbedder(dim=256),
            config=AssistantConfig(**cfg),
        )

    return build

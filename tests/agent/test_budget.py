import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nightowl.agent.budget import Budget, EpisodeBudget
from nightowl.errors import BudgetExceededError


def test_charge_is_all_or_nothing():
    b = Budget(steps=2, cost_usd=0.01)
    b.charge(steps=1, cost_usd=0.004)
    with pytest.raises(BudgetExceededError):
        b.charge(steps=1, cost_usd=0.007)
    assert b.used == {"steps": 1, "cost_usd": 0.004}
    assert b.can_afford(steps=1, cost_usd=0.006)
    assert math.isclose(b.remaining("cost_usd"), 0.006)
    assert b.remaining("tokens") == math.inf


def test_remaining_ratio_scarcest_governs():
    b = Budget(steps=10, teacher_calls=4)
    assert b.remaining_ratio() == 1.0
    b.charge(steps=2, teacher_calls=3)
    assert b.remaining_ratio() == pytest.approx(0.25)
    assert Budget().remaining_ratio() == 1.0
    assert b.exhausted() is None
    b.charge(teacher_calls=1)
    assert b.exhausted() == "teacher_calls"


def test_roundtrip_and_episode_budget():
    b = EpisodeBudget(max_steps=5, max_cost_usd=0.1).make()
    b.charge(steps=1)
    c = Budget.from_dict(b.to_dict())
    assert c.used == b.used and c.limits == b.limits
    assert "steps 1/5" in c.describe()


@settings(max_examples=200, deadline=None)
@given(
    limit=st.floats(0, 1, allow_nan=False),
    charges=st.lists(st.floats(0, 0.5, allow_nan=False), max_size=30),
)
def test_never_exceeded(limit, charges):
    b = Budget(cost_usd=limit)
    for c in charges:
        if b.can_afford(cost_usd=c):
            b.charge(cost_usd=c)
        else:
            with pytest.raises(BudgetExceededError):
                b.charge(cost_usd=c)
        assert b.used_of("cost_usd") <= limit + 1e-9

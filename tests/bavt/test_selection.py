"""Selection by V^(1/r): concentrates on the best node as r -> 0, spreads as r -> 1."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from nightowl.agent.search.bavt import selection_probs, weighted_choice

values_st = st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=2, max_size=12)


def entropy(ps: list[float]) -> float:
    return -sum(p * math.log(p) for p in ps if p > 0)


@given(values_st)
def test_probabilities_are_a_distribution(values: list[float]) -> None:
    for r in (1.0, 0.5, 0.1, 0.01, 0.0):
        ps = selection_probs(values, r)
        assert len(ps) == len(values)
        assert all(p >= 0 for p in ps)
        assert math.isclose(sum(ps), 1.0, rel_tol=1e-9)


@given(values_st)
def test_concentrates_on_best_as_r_goes_to_zero(values: list[float]) -> None:
    best = max(values)
    # A clear winner: the best beats the runner-up by at least 10% (relative).
    others = [v for v in values if v < best]
    if not others or max(others) > best / 1.1:
        return
    n_best = sum(1 for v in values if v == best)
    ps = selection_probs(values, 1e-3)
    mass_on_best = sum(p for p, v in zip(ps, values, strict=True) if v == best)
    assert mass_on_best > 0.999
    # Ties at the top share the mass equally.
    for p, v in zip(ps, values, strict=True):
        if v == best:
            assert math.isclose(p, 1.0 / n_best, rel_tol=1e-6)


@given(values_st)
def test_spreads_as_r_goes_to_one(values: list[float]) -> None:
    # Entropy is non-increasing as r shrinks (r = 1 is the broadest).
    hs = [entropy(selection_probs(values, r)) for r in (1.0, 0.7, 0.4, 0.2, 0.05)]
    for a, b in zip(hs, hs[1:], strict=False):
        assert b <= a + 1e-9
    # At r = 1 selection is proportional to value.
    ps = selection_probs(values, 1.0)
    z = sum(values)
    for p, v in zip(ps, values, strict=True):
        assert math.isclose(p, v / z, rel_tol=1e-6)


@given(values_st)
def test_best_node_probability_grows_as_budget_runs_out(values: list[float]) -> None:
    i = values.index(max(values))
    p_prev = 0.0
    for r in (1.0, 0.5, 0.25, 0.1, 0.01):
        p = selection_probs(values, r)[i]
        assert p >= p_prev - 1e-12
        p_prev = p


@settings(max_examples=30)
@given(st.integers(min_value=0, max_value=2**31))
def test_sampling_is_deterministic_under_a_seed(seed: int) -> None:
    ps = selection_probs([0.2, 0.5, 0.9, 0.4], 0.6)
    a = [weighted_choice(random.Random(seed), ps) for _ in range(5)]
    b = [weighted_choice(random.Random(seed), ps) for _ in range(5)]
    assert a == b


def test_empirical_frequencies_follow_probabilities() -> None:
    values = [0.2, 0.4, 0.8]
    rng = random.Random(7)
    for r, top_share_min in ((1.0, 0.5), (0.1, 0.99)):
        ps = selection_probs(values, r)
        counts = [0, 0, 0]
        for _ in range(4000):
            counts[weighted_choice(rng, ps)] += 1
        assert counts[2] / 4000 >= top_share_min - 0.05
        assert abs(counts[2] / 4000 - ps[2]) < 0.03

"""Stateful GSM: context/query split and multi-query derivation (real reasoning-gym data)."""

from __future__ import annotations

from nightowl.sleeptime.gsm import (
    derive_queries,
    is_correct,
    load_stateful_gsm,
    parse_number,
    split_question,
)


def test_split_keeps_context_and_final_question() -> None:
    q = (
        "In Ms. Johnson's class of 100 students, 80% are players. It costs $2.50 each. "
        "How many students are leaving early? Give the result as your final answer. "
        "Do not include units."
    )
    ctx, query = split_question(q)
    assert ctx == "In Ms. Johnson's class of 100 students, 80% are players. It costs $2.50 each."
    assert query == "How many students are leaving early?"
    assert split_question("No question here.") is None
    assert split_question("Just one question?") is None


def test_derived_queries_use_variables_not_in_text() -> None:
    ctx = "There are 12 students playing basketball and twice that number playing volleyball."
    variables = {"tennis_players": 12, "volleyball_players": 24, "sports": ["a"], "flag": True}
    qs = derive_queries(ctx, "How many in total?", 36.0, variables)
    assert [q.kind for q in qs] == ["original", "derived"]
    assert qs[1].answer == 24 and "'volleyball players'" in qs[1].text


def test_loaded_contexts_have_three_distinct_queries_with_answers() -> None:
    contexts = load_stateful_gsm(6, seed=42)
    assert len(contexts) == 6
    for c in contexts:
        assert len(c.queries) >= 3
        assert c.queries[0].kind == "original"
        assert len({q.text for q in c.queries}) == len(c.queries)
        assert len({q.answer for q in c.queries}) == len(c.queries)
        # the context never contains the final question
        assert c.queries[0].text.split(" Give the result")[0] not in c.context
        assert c.context in c.source_question
    assert load_stateful_gsm(6, seed=42) == contexts  # deterministic


def test_scoring_is_numeric() -> None:
    assert parse_number("so 3 + 4 = 7.\nAnswer: 1,234") == 1234
    assert parse_number("the result is 42") == 42
    assert is_correct("Answer: 70.0", 70) and not is_correct("Answer: 71", 70)
    assert not is_correct("no idea", 70)

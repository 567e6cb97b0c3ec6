"""Code actions (AppWorld) vote by syntax tree and are acted on as written."""

import pytest

from nightowl.agent.acceptance import Unanimity
from nightowl.distill.acceptance import tally
from nightowl.distill.parser import canonical_action, code_of, parse_action

LOGIN = "token = apis.venmo.login(username='ava@x.com', password=pw)['access_token']"


def test_a_code_action_keeps_its_case_quotes_and_lines():
    two_lines = "note = apis.simple_note.search_notes(access_token=token, query='Groceries')[0]\n" \
                "print(note['Title'])"
    for text in (LOGIN, two_lines, f"```python\n{two_lines}\n```", f"Action: {LOGIN}"):
        p = parse_action(text)
        assert p.method == "code" and p.action in (LOGIN, two_lines), p


@pytest.mark.parametrize("same", [
    'token = apis.venmo.login(username="ava@x.com", password=pw)["access_token"]',
    "token = apis.venmo.login( username='ava@x.com',password=pw )['access_token']  # log in",
])
def test_formatting_and_comments_do_not_split_the_vote(same):
    assert canonical_action(same) == canonical_action(LOGIN)
    assert tally([LOGIN, same]) == ((canonical_action(LOGIN), 2.0),)


@pytest.mark.parametrize("other", [
    "token = apis.venmo.login(username='AVA@x.com', password=pw)['access_token']",
    "token = apis.spotify.login(username='ava@x.com', password=pw)['access_token']",
])
def test_different_values_or_calls_are_different_votes(other):
    assert canonical_action(other) != canonical_action(LOGIN)


@pytest.mark.parametrize("text", ["take coin", "look", "Go North.", "go to countertop 1",
                                  "(3 + 4) * 2", "examine book (2"])
def test_text_actions_are_not_code(text):
    assert code_of(text) is None
    assert canonical_action(text) == parse_action(text).action


async def test_unanimity_accepts_reformatted_code_and_the_tier_acts_on_a_sample():
    samples = [LOGIN, LOGIN.replace("'", '"'), LOGIN + "  # again"]

    async def draw(k):
        return samples[:k]

    verdict = await Unanimity(3).judge(draw)
    assert verdict.accepted and verdict.action == canonical_action(LOGIN)

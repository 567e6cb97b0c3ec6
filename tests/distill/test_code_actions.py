"""Code actions (AppWorld) vote by syntax tree and are acted on as written."""

import pytest

from nightowl.agent.acceptance import Unanimity
from nightowl.agent.budget import Budget
from nightowl.agent.ladder import StepContext
from nightowl.agent.tiers import StudentTier
from nightowl.config import SMALL_HOSTED_PRICES
from nightowl.distill.acceptance import tally
from nightowl.distill.parser import canonical_action, code_of, parse_action
from nightowl.distill.prompt import DemoStepView, DemoView, PromptBuilder, code_text
from nightowl.errors import ConfigError
from nightowl.llm.scripted import FunctionModel

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


TWO_LINES = ("passwords = {p['account_name']: p['password'] for p in "
             "apis.supervisor.show_account_passwords()}\n\n"
             "token = apis.venmo.login(username='ava@x.com', password=passwords['venmo'])"
             "['access_token']   ")


def code_prompt(fmt: str) -> str:
    demo = DemoView(goal="Pay Chloe $12 on Venmo.", task_id="appworld/v-pay/train/0", steps=(
        DemoStepView(observation="You work for Ava.", action=TWO_LINES),
        DemoStepView(observation="Execution successful.", action="apis.supervisor.complete_task()"),
    ))
    return PromptBuilder(action_format=fmt).build(  # type: ignore[arg-type]
        goal="Pay Ben $7 on Venmo.", observation="Execution successful.",
        history=[("You work for Ava.", TWO_LINES)], demos=[demo])


def test_the_code_format_shows_code_actions_whole_and_the_line_format_squashes_them():
    whole = TWO_LINES.replace("\n\n", "\n").rstrip()  # blank lines and trailing spaces go
    code = code_prompt("code")
    assert code.count(f"Action: {whole}\n") == 2  # the demo step and the history step
    assert code.endswith("Observation: Execution successful.\nAction:")
    line = code_prompt("line")
    assert whole not in line and "Action: passwords = {p['account_name']" in line
    assert " ... " in line.split("Action: ")[1].splitlines()[0]


def test_code_text_cuts_at_a_line_end():
    assert code_text("a = f(1)\nb = g(2)\nc = h(3)", 18) == "a = f(1)\nb = g(2)"
    assert code_text("x" * 50, 10) == "x" * 10


def test_the_format_sets_where_a_sample_stops_and_how_long_it_may_be():
    line, code = PromptBuilder(), PromptBuilder(action_format="code")
    assert line.sample_stop == ("\n",) and line.sample_max_tokens == 16
    assert "\nObservation:" in code.sample_stop and "\n" not in code.sample_stop
    assert code.sample_max_tokens > 100
    with pytest.raises(ConfigError, match="action_format"):
        PromptBuilder(action_format="yaml")  # type: ignore[arg-type]


async def test_a_code_student_samples_to_the_next_observation_and_acts_on_all_lines():
    """Scripted fake model: every sample is the same two-line code action."""
    model = FunctionModel(lambda req: TWO_LINES)
    tier = StudentTier(model, prices=SMALL_HOSTED_PRICES, rule=Unanimity(3),
                       builder=PromptBuilder(action_format="code"))
    ctx = StepContext(run_id="r", episode_id="e", task_id="appworld/v-pay/dev/3", step=0,
                      goal="Pay Ben $7 on Venmo.", observation="You work for Ava.",
                      valid_actions=(), budget=Budget())
    out = await tier.decide(ctx)
    assert out.accepted and out.action == code_of(TWO_LINES) and "\n" in out.action
    [req] = model.calls
    assert req.stop == tier.builder.sample_stop and req.max_tokens == tier.builder.sample_max_tokens

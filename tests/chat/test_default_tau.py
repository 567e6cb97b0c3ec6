"""The default tau accepts a 2-of-3 agreement (share exactly 2/3); an explicit 0.67 does not."""

import pytest

from nightowl.chat import AssistantConfig
from nightowl.chat.cascade import DEFAULT_TAU
from nightowl.llm.base import GenerationRequest
from nightowl.llm.scripted import FunctionModel


def two_of_three(request: GenerationRequest) -> list[str]:
    return ["The answer is 12.", "The answer is 12.", "It is 13."][: request.n]


def teacher_fn(request: GenerationRequest) -> str:
    return "Teacher: 12."


def test_config_default_is_two_thirds():
    assert AssistantConfig().tau == DEFAULT_TAU == 2 / 3


@pytest.mark.parametrize(("tau", "tier"), [(None, "student"), (0.67, "teacher")])
async def test_two_of_three_agreement(make_assistant, tau, tier) -> None:  # type: ignore[no-untyped-def]
    student, teacher = FunctionModel(two_of_three), FunctionModel(teacher_fn)
    kw = {} if tau is None else {"tau": tau}
    a = make_assistant(student, teacher, n=3, **kw)
    reply = await a.chat([{"role": "user", "content": "What is 3 * 4?"}])
    assert reply.agreement is not None and reply.agreement.share == pytest.approx(2 / 3)
    assert reply.tier == tier


def test_startup_line_names_tiers_and_default_tau():
    from nightowl.cli._serve import startup_line
    from nightowl.config import load_settings

    line = startup_line(load_settings(), student=None, teacher=None, oracle=None, n=3,
                        tau=None, sleep=False, auth=True)
    assert "agreement >= 2/3" in line and "no teacher" in line and "smollm2" in line
    line = startup_line(load_settings(), student="s", teacher="big", oracle=None, n=5,
                        tau=0.8, sleep=True, auth=False)
    assert "teacher big" in line and ">= 4/5" in line and "sleep-time on" in line

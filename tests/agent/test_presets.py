"""Ladder presets: inputs validated before anything starts; tiers built from the same inputs."""

import pytest

from nightowl.agent.presets import BUILTIN_PRESETS, build_ladder, validate_ladder
from nightowl.agent.search.tier import BavtTier
from nightowl.agent.tiers import OracleTier, StudentTier
from nightowl.config import ModelSpec, load_settings
from nightowl.errors import ConfigError, UnknownNameError
from nightowl.llm.scripted import FunctionModel


@pytest.fixture()
def settings(tmp_path):
    base = load_settings(home=tmp_path)
    models = dict(base.models)
    models["fake"] = ModelSpec(
        backend="scripted", params={"function": "tests.agent.fakes:first_choice"},
        prices=base.models["smollm2"].prices,
    )
    return load_settings(home=tmp_path, models=models, student_model="fake")


def test_every_preset_validates_with_defaults(settings):
    for preset in BUILTIN_PRESETS:
        choice = validate_ladder(preset, None, None, "oracle", settings)
        assert choice.preset == preset
        assert (choice.rule is None) == (preset == "teacher")
    assert validate_ladder("margin", None, None, "oracle", settings).rule.uses_scores


@pytest.mark.parametrize(
    ("preset", "rule", "student", "teacher", "error", "match"),
    [
        ("nope", None, None, "oracle", UnknownNameError, "ladder"),
        ("cascade", "unanimity:x", None, "oracle", ConfigError, "rule"),
        ("margin", "unanimity:3", None, "oracle", ConfigError, "score rule"),
        ("cascade", None, "no-such-model", "oracle", UnknownNameError, "no-such-model"),
        ("cascade", None, None, "no-such-teacher", UnknownNameError, "no-such-teacher"),
    ],
)
def test_bad_inputs_raise_one_line_errors(settings, preset, rule, student, teacher, error, match):
    with pytest.raises(error, match=match) as info:
        validate_ladder(preset, rule, student, teacher, settings)
    assert "\n" not in str(info.value)


def test_bad_fallback(settings):
    with pytest.raises(ConfigError, match="fallback"):
        validate_ladder("cascade", None, None, "oracle", settings, fallback="maybe")


def test_teacher_only_preset_never_builds_the_student(settings):
    built: list[str] = []

    def student_backend(name):
        built.append(name)
        return FunctionModel(lambda req: "x")

    ladder = build_ladder("teacher", settings=settings, ledger=None, run_id="r",
                          student_backend=student_backend)
    [tier] = ladder.tiers
    assert isinstance(tier, OracleTier) and built == []
    # billing the oracle asks the student's backend for a token count only
    assert tier.tokenizer.count_tokens("a b c") > 0 and built == ["fake"]


def test_bavt_preset_tiers_and_margin_rule(settings):
    make = lambda name: FunctionModel(lambda req: "x")  # noqa: E731
    ladder = build_ladder("bavt", settings=settings, ledger=None, run_id="r", student_backend=make)
    assert [type(t) for t in ladder.tiers] == [StudentTier, BavtTier, OracleTier]
    margin = build_ladder("margin", settings=settings, ledger=None, run_id="r",
                          student_backend=make, rule="margin:0.5")
    assert margin.tiers[0].rule.uses_scores
    with pytest.raises(ConfigError, match="score rule"):
        build_ladder("margin", settings=settings, ledger=None, run_id="r",
                     student_backend=make, rule="unanimity:2")


@pytest.mark.parametrize("preset", ["student", "student+demos", "cascade", "margin"])
def test_every_student_tier_takes_the_backtrack_and_repeat_policies(settings, preset):
    make = lambda name: FunctionModel(lambda req: "x")  # noqa: E731
    default = build_ladder(preset, settings=settings, ledger=None, run_id="r",
                           student_backend=make)
    assert default.tiers[0].backtrack == "avoid"
    ladder = build_ladder(preset, settings=settings, ledger=None, run_id="r",
                          student_backend=make, backtrack="allow", repeats="escalate")
    student = ladder.tiers[0]
    assert isinstance(student, StudentTier) and student.backtrack == "allow"
    if preset in ("cascade", "margin"):
        assert student.repeats == "escalate"

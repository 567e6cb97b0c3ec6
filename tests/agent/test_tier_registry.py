"""A new tier is one module plus one preset that names it (docs/extending.md).

The toy tier below lives in this file only: a preset registered here names its factory
as ``"tests.agent.test_tier_registry:toy_tier"``; from there the ladder puts it between
the student and the teacher, a real TWX run escalates disagreements to it, and its
decisions are recorded like any tier's. Nothing in nightowl/ was edited for it.
"""

import pytest

from nightowl.agent.budget import EpisodeBudget
from nightowl.agent.ladder import StepContext, Tier, TierDecision, TierParts, accept, escalate
from nightowl.agent.presets import PRESETS, Preset, build_ladder, ladder_syntax, register_preset
from nightowl.app import Nightowl, RunSpec, run_tasks
from nightowl.config import ModelSpec, load_settings
from nightowl.envs.registry import select_tasks
from nightowl.errors import ConfigError
from nightowl.memory.embedder import HashingEmbedder


class ToyTier(Tier):
    """On even steps takes the first valid action that takes nothing; escalates on odd ones."""

    name = "toy"
    actor = "toy"
    #: (step, accepted) of every decision any instance made
    seen: list[tuple[int, bool]] = []

    def __init__(self, parts: TierParts) -> None:
        self.run_id = parts.run_id

    async def decide(self, ctx: StepContext) -> TierDecision:
        moves = sorted(a for a in ctx.valid_actions if not a.startswith("take"))
        act = ctx.step % 2 == 0 and bool(moves)
        ToyTier.seen.append((ctx.step, act))
        if act:
            return accept(self.name, self.actor, moves[0])
        return escalate(self.name, self.actor, "odd step")


def toy_tier(parts: TierParts) -> ToyTier:
    """The factory a preset names."""
    return ToyTier(parts)


TOY = Preset(name="toy-cascade", help="student -> toy tier -> teacher", rule="unanimity:3",
             escalations=("tests.agent.test_tier_registry:toy_tier",))


@pytest.fixture()
def toy_preset():
    register_preset(TOY)
    yield TOY
    PRESETS.unregister(TOY.name)


def _settings(tmp_path):
    base = load_settings(home=tmp_path)
    models = {**base.models, "fake": ModelSpec(
        backend="scripted", params={"function": "tests.agent.fakes:cycling_choice"},
        prices=base.models["smollm2"].prices)}
    return load_settings(home=tmp_path, models=models, student_model="fake")


def test_a_registered_preset_puts_the_tier_between_student_and_teacher(toy_preset, tmp_path):
    assert "toy-cascade" in ladder_syntax()
    with Nightowl.open(_settings(tmp_path), embedder=HashingEmbedder()) as app:
        ladder = build_ladder("toy-cascade", settings=app.settings, ledger=None, run_id="r",
                              student_backend=app.backend)
    assert [t.name for t in ladder.tiers] == ["student", "toy", "teacher"]
    assert ladder.tiers[1].run_id == "r"
    with pytest.raises(ValueError, match="already registered"):
        register_preset(Preset(name="toy-cascade", help="another"))


async def test_a_run_escalates_to_the_toy_tier_and_records_its_decisions(toy_preset, tmp_path):
    ToyTier.seen.clear()
    with Nightowl.open(_settings(tmp_path), embedder=HashingEmbedder()) as app:
        ids = select_tasks("twx", "test", 1, game="coin")
        summary = await run_tasks(app, RunSpec(name="toy", env="twx", split="test",
                                               task_ids=ids, ladder="toy-cascade",
                                               retrieve=False, concurrency=1,
                                               budget=EpisodeBudget(max_steps=6)))
    [episode] = summary.episodes_detail
    # the cycling student never agrees: every step goes to the toy tier, which acts on
    # even steps and passes odd ones to the (oracle) teacher
    assert [step for step, _ in ToyTier.seen] == list(range(episode["steps"]))
    teacher_steps = sum(not acted for _, acted in ToyTier.seen)
    assert episode["teacher_calls"] == teacher_steps > 0
    assert sum(acted for _, acted in ToyTier.seen) > 0


def test_a_factory_that_cannot_be_imported_is_a_config_error(tmp_path):
    bad = Preset(name="toy-broken", help="x", rule="unanimity:3",
                 escalations=("tests.agent.nowhere:tier",))
    register_preset(bad)
    try:
        with Nightowl.open(_settings(tmp_path), embedder=HashingEmbedder()) as app:
            with pytest.raises(ConfigError, match="cannot be imported"):
                build_ladder("toy-broken", settings=app.settings, ledger=None, run_id="r",
                             student_backend=app.backend)
    finally:
        PRESETS.unregister("toy-broken")

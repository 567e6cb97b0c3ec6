"""Ladder presets: turn a preset name into tiers, and validate a preset before a run.

`build_ladder` turns a preset name ("teacher", "student", "student+demos", "cascade",
"margin", "bavt") into tiers over the resources it is given (settings, ledger, a
student-backend provider: `nightowl.app.Nightowl` is one); `validate_ladder` checks a
preset, rule and model names without building or loading anything.
"""

from __future__ import annotations

from typing import Any, Protocol

from nightowl.agent.acceptance import AcceptanceRule, Unanimity, parse_rule
from nightowl.agent.ladder import Ladder, Tier
from nightowl.agent.tiers import OracleTier, StudentTier, TeacherTier
from nightowl.config import Prices, Settings
from nightowl.distill.prompt import PromptBuilder
from nightowl.errors import ConfigError, UnknownNameError

LADDER_PRESETS: dict[str, str] = {
    "teacher": "the teacher acts at every step (teacher-only baseline)",
    "student": "the student acts alone, greedy, no demos",
    "student+demos": "the student acts alone, greedy, with retrieved demos",
    "cascade": "student with demos + acceptance rule; disagreement escalates to the teacher",
    "margin": "student with demos + logprob-margin rule; low margin escalates to the teacher",
    "bavt": "as cascade, but disagreement first escalates to a BAVT search (student as "
    "proposer and critic), then to the teacher",
}


class LadderResources(Protocol):
    """What `build_ladder` needs from the composition root."""

    settings: Settings
    ledger: Any

    def student_backend(self, name: str | None = None) -> Any:
        """The backend of a registry model (default: the student)."""


def validate_ladder(
    preset: str,
    settings: Settings,
    *,
    rule: AcceptanceRule | str | None = None,
    student: str | None = None,
    teacher: str = "oracle",
) -> AcceptanceRule | None:
    """Check a preset, its rule and model names; returns the parsed rule (if any).

    Raises:
        UnknownNameError: unknown preset or model name.
        ConfigError: a rule that does not parse, or a non-score rule with ``margin``.
    """
    if preset not in LADDER_PRESETS:
        raise UnknownNameError("ladder", preset, sorted(LADDER_PRESETS))
    if teacher != "oracle":
        settings.model(teacher)
    if preset != "teacher":
        settings.model(student or settings.student_model)
    parsed = parse_rule(rule) if isinstance(rule, str) else rule
    if preset == "margin" and parsed is not None and not parsed.uses_scores:
        raise ConfigError(
            f"--ladder margin needs a score rule (margin:T), not {parsed.describe()['rule']!r}"
        )
    return parsed


def build_ladder(
    preset: str,
    *,
    wb: LadderResources,
    run_id: str,
    student: str | None = None,
    teacher: str = "oracle",
    rule: AcceptanceRule | str | None = None,
    temperature: float = 0.5,
    builder: PromptBuilder | None = None,
    fallback: str = "best",
    avoid_repeats: bool = True,
) -> Ladder:
    """Tiers for a preset (see `LADDER_PRESETS`)."""
    from nightowl.ledger import MeteredModel

    rule = validate_ladder(preset, wb.settings, rule=rule, student=student, teacher=teacher)
    settings = wb.settings
    builder = builder or PromptBuilder()
    tiers: list[Tier] = []

    def teacher_tier() -> Tier:
        if teacher == "oracle":
            return OracleTier(
                ledger=wb.ledger,
                prices=settings.model(settings.teacher_price_model).prices,
                tokenizer=_Tokenizer(wb, student),
                output_tokens=settings.oracle_output_tokens,
                builder=builder,
            )
        from nightowl.llm.registry import build_backend

        spec = settings.model(teacher)
        model = MeteredModel(
            build_backend(teacher, settings), wb.ledger, spec.prices, run_id=run_id, role="teacher"
        )
        return TeacherTier(model, prices=spec.prices, builder=builder)

    if preset == "teacher":
        return Ladder([teacher_tier()], fallback="end")
    sname = student or settings.student_model
    sprices: Prices = settings.model(sname).prices
    smodel = MeteredModel(
        wb.student_backend(sname), wb.ledger, sprices, run_id=run_id, role="student"
    )
    if preset in ("student", "student+demos"):
        tiers.append(
            StudentTier(
                smodel,
                prices=sprices,
                rule=Unanimity(1),
                builder=builder,
                use_demos=preset == "student+demos",
                temperature=0.0,
            )
        )
        return Ladder(tiers, fallback="best")
    if preset == "margin":
        rule = rule or parse_rule("margin:1.0")
    rule = rule or parse_rule("unanimity:3")
    tiers.append(
        StudentTier(
            smodel, prices=sprices, rule=rule, builder=builder, temperature=temperature,
            avoid_repeats=avoid_repeats,
        )
    )
    if preset == "bavt":
        from nightowl.agent.bavt_tier import BavtTier

        tiers.append(
            BavtTier(
                smodel.with_role("bavt"),
                critic_model=smodel.with_role("critic"),
                prices=sprices,
                ledger=wb.ledger,
            )
        )
    tiers.append(teacher_tier())
    if fallback not in ("best", "end"):
        raise ConfigError(f"fallback must be 'best' or 'end', not {fallback!r}")
    return Ladder(tiers, fallback=fallback)  # type: ignore[arg-type]


class _Tokenizer:
    """A real tokenizer for billing the oracle teacher (the student model's)."""

    def __init__(self, wb: LadderResources, student: str | None) -> None:
        self.wb = wb
        self.student = student

    def count_tokens(self, text: str) -> int:
        return int(self.wb.student_backend(self.student).count_tokens(text))

"""Ladder presets: names ("teacher", "cascade", "bavt", ...) turned into tiers.

`validate_ladder` checks a preset, rule, fallback and model names *before* anything starts
or is recorded and returns them as a `LadderChoice`; `ladder_from` builds the tiers from
a choice (a run builds from its plan's, `nightowl.app.plan.RunPlan`: nothing is decided
twice); `build_ladder` is both in one call, for scripts and tests.

Other packages add presets without editing this one, through the entry point group
``nightowl.presets``: ``[project.entry-points."nightowl.presets"]`` with
``toy-cascade = "toy_env_plugin.backend:TOY_CASCADE"`` (a `Preset` object) makes
``--ladder toy-cascade`` work once the package is installed (examples/toy_env_plugin).
`PRESETS` holds both; listing it reads entry point metadata only, and a plugin's module
is imported when its preset is first looked up. A built-in name always wins.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal, cast

from nightowl.agent.acceptance import AcceptanceRule, Unanimity, parse_rule
from nightowl.errors import ConfigError, UnknownNameError
from nightowl.plugins import entry_point_targets, load_target

if TYPE_CHECKING:  # the tiers are imported by `build_ladder`: help texts import this module
    from nightowl.agent.ladder import Ladder, Tier
    from nightowl.agent.tiers import BacktrackPolicy, RepeatPolicy
    from nightowl.config import Settings
    from nightowl.distill.prompt import PromptBuilder
    from nightowl.llm.base import ModelBackend


@dataclass(frozen=True, kw_only=True)
class Preset:
    """A ladder preset: its tiers and the student's default rule.

    Attributes:
        name: the ``--ladder`` name.
        help: one line for help texts.
        student: "none" (teacher only), "alone" (the student acts alone, greedy, no
            teacher) or "cascade" (its acceptance rule escalates to the teacher).
        demos: the student retrieves demos.
        rule: the acceptance rule when none is given.
        scores: the rule must be a score rule (``uses_scores``).
        escalations: tiers between the student and the teacher, as ``"module:factory"``
            strings of functions from `nightowl.agent.ladder.TierParts` to a `Tier`
            (imported when a ladder is built, so help texts import nothing): the
            ``bavt`` preset's is ``"nightowl.agent.search.tier:bavt_tier"``. A new tier is
            its module plus one preset that names it (`register_preset`, or an entry
            point).
    """

    name: str
    help: str
    student: Literal["none", "alone", "cascade"] = "cascade"
    demos: bool = True
    rule: str | None = None
    scores: bool = False
    escalations: tuple[str, ...] = ()


#: the built-in ladder presets
BUILTIN_PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(name="teacher", help="the teacher acts at every step (teacher-only baseline)",
           student="none", demos=False),
    Preset(name="student", help="the student acts alone, greedy, no demos", student="alone",
           demos=False),
    Preset(name="student+demos", help="the student acts alone, greedy, with retrieved demos",
           student="alone"),
    Preset(name="cascade", help="student with demos + acceptance rule; disagreement escalates "
           "to the teacher", rule="unanimity:3"),
    Preset(name="margin", help="student with demos + logprob-margin rule; low margin escalates "
           "to the teacher", rule="margin:1.0", scores=True),
    Preset(name="bavt", help="as cascade, but disagreement first escalates to a BAVT search "
           "(student as proposer and critic), then to the teacher", rule="unanimity:3",
           escalations=("nightowl.agent.search.tier:bavt_tier",)),
)}

#: the entry point group other packages register presets under
ENTRY_POINT_GROUP = "nightowl.presets"


@functools.cache
def plugin_presets() -> dict[str, str]:
    """Presets other installed packages register (name -> "module:obj").

    Reads entry point metadata only (nothing is imported). Cached per process;
    `plugin_presets.cache_clear()` re-reads them.
    """
    return entry_point_targets(ENTRY_POINT_GROUP)


@functools.cache
def _load_plugin_preset(name: str, target: str) -> Preset:
    try:
        obj = load_target(target)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"ladder {name!r} ({target}) cannot be imported: {exc}") from None
    if not isinstance(obj, Preset):
        raise ConfigError(f"ladder {name!r} ({target}) is a {type(obj).__name__}, not a Preset")
    return obj if obj.name == name else dataclasses.replace(obj, name=name)


def _tier_factory(preset: str, target: str) -> Callable[[Any], Tier]:
    try:
        factory = load_target(target)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"ladder {preset!r}: tier {target!r} cannot be imported: {exc}") from None
    if not callable(factory):
        raise ConfigError(f"ladder {preset!r}: tier {target!r} is not a factory function")
    return cast(Callable[[Any], "Tier"], factory)


class PresetRegistry(Mapping[str, Preset]):
    """The built-in presets, then plugins' (built-in names win).

    Iterating and ``in`` read entry point metadata only; looking a plugin's preset up
    imports its module (a broken one is a one-line `ConfigError`).
    """

    def __init__(self, builtins: Mapping[str, Preset]) -> None:
        self._builtins = dict(builtins)

    def __getitem__(self, name: str) -> Preset:
        if name in self._builtins:
            return self._builtins[name]
        target = plugin_presets().get(name)
        if target is None:
            raise KeyError(name)
        return _load_plugin_preset(name, target)

    def __contains__(self, name: object) -> bool:
        return name in self._builtins or name in plugin_presets()

    def __iter__(self) -> Iterator[str]:
        yield from self._builtins
        yield from (n for n in plugin_presets() if n not in self._builtins)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def register(self, preset: Preset) -> Preset:
        """Add a preset in-process (a plugin package can use an entry point instead)."""
        if preset.name in self._builtins and self._builtins[preset.name] != preset:
            raise ValueError(f"ladder preset {preset.name!r} is already registered")
        self._builtins[preset.name] = preset
        return preset

    def unregister(self, name: str) -> None:
        """Remove a preset added with `register` (tests)."""
        if name in BUILTIN_PRESETS:
            raise ValueError(f"{name!r} is a built-in preset")
        self._builtins.pop(name, None)


#: the registry of ladder presets (built-in ones, registered ones and plugins')
PRESETS: PresetRegistry = PresetRegistry(BUILTIN_PRESETS)
register_preset = PRESETS.register
ORACLE = "oracle"


def ladder_syntax(sep: str = "|") -> str:
    """Every preset name, for help texts: ``teacher|student|...`` (plugins' last).

    Cheap: plugins' names come from entry point metadata, their modules are not imported.
    """
    return sep.join(PRESETS)


BackendFactory = Callable[[str], "ModelBackend"]


def preset_for_rule(rule: str) -> str:
    """The ladder preset that runs an acceptance rule spec ("teacher" for teacher-only).

    Score rules (``margin:1``, ``demo-agree``, ...) run on the one-pass ``margin``
    ladder; voting rules (``unanimity:3``, ...) on the sampling ``cascade``.
    """
    if rule == "teacher":
        return "teacher"
    return "margin" if parse_rule(rule).uses_scores else "cascade"


@dataclass(frozen=True, kw_only=True)
class LadderChoice:
    """Validated ladder inputs.

    Attributes:
        preset: the preset name.
        rule: the student's acceptance rule (None for presets without one).
        student: the student model name (teacher-only: its tokenizer bills the oracle).
        teacher: the teacher model name, or "oracle".
        fallback: "best" or "end".
    """

    preset: str
    rule: AcceptanceRule | None
    student: str
    teacher: str
    fallback: Literal["best", "end"]


def validate_ladder(
    preset: str,
    rule: AcceptanceRule | str | None,
    student: str | None,
    teacher: str,
    settings: Settings,
    *,
    fallback: str = "best",
) -> LadderChoice:
    """Check ladder inputs; raise a one-line `ConfigError`/`UnknownNameError` if bad.

    ``student=None`` is the settings' student (for scripts; a run plan passes the one it
    resolved). Touches nothing: no model is loaded, nothing is recorded.
    """
    p = PRESETS.get(preset)
    if p is None:
        raise UnknownNameError("ladder", preset, sorted(PRESETS))
    if fallback not in ("best", "end"):
        raise ConfigError(f"fallback must be 'best' or 'end', not {fallback!r}")
    if teacher != ORACLE:
        settings.model(teacher)
    parsed = parse_rule(rule) if isinstance(rule, str) else rule
    sname = student or settings.student_model
    # A rule given to a preset without one (teacher, student, student+demos) is checked
    # but not used: callers such as the showcase pass one rule to every arm.
    if p.student == "none":
        return LadderChoice(preset=preset, rule=None, student=sname, teacher=teacher,
                            fallback="end")
    settings.model(sname)
    if p.student == "alone":
        parsed = Unanimity(1)  # greedy: one sample, accepted
    elif p.scores and parsed is not None and not parsed.uses_scores:
        raise ConfigError(
            f"--ladder {preset} needs a score rule (e.g. margin:1.0), not {parsed.name!r}"
        )
    if parsed is None and p.rule:
        parsed = parse_rule(p.rule)
    return LadderChoice(
        preset=preset, rule=parsed, student=sname, teacher=teacher,
        fallback=cast(Literal["best", "end"], "best" if p.student == "alone" else fallback),
    )


def build_ladder(
    preset: str,
    *,
    settings: Settings,
    ledger: Any,
    run_id: str,
    student_backend: BackendFactory,
    student: str | None = None,
    teacher: str = ORACLE,
    rule: AcceptanceRule | str | None = None,
    temperature: float = 0.5,
    builder: PromptBuilder | None = None,
    fallback: str = "best",
    repeats: RepeatPolicy = "explore",
    backtrack: BacktrackPolicy = "avoid",
) -> Ladder:
    """Tiers for a preset (see `PRESETS`): `validate_ladder`, then `ladder_from`.

    Args:
        preset: a `PRESETS` name.
        settings: model registry, prices, defaults.
        ledger: where calls are recorded (None: nowhere).
        run_id: the run calls are recorded under.
        student_backend: makes a backend from a model name (the app's model cache), the
            teacher's too.
        student: the student model (default: ``settings.student_model``).
        teacher: a model name, or "oracle" (the environment's expert).
        rule: the acceptance rule (default: the preset's).
        temperature: the student's sampling temperature for voting rules.
        builder: the prompt builder.
        fallback: "best" or "end" when every tier escalates.
        repeats: what a student that would repeat an action in the same state does:
            "explore" (take another action) or "escalate" (ask the next tier).
        backtrack: "avoid" (never walk back through the exit just used while another
            is open) or "allow".
    """
    choice = validate_ladder(preset, rule, student, teacher, settings, fallback=fallback)
    return ladder_from(
        choice, settings=settings, ledger=ledger, run_id=run_id,
        student_backend=student_backend, temperature=temperature, builder=builder,
        repeats=repeats, backtrack=backtrack,
    )


def ladder_from(
    choice: LadderChoice,
    *,
    settings: Settings,
    ledger: Any,
    run_id: str,
    student_backend: BackendFactory,
    temperature: float = 0.5,
    builder: PromptBuilder | None = None,
    repeats: RepeatPolicy = "explore",
    backtrack: BacktrackPolicy = "avoid",
) -> Ladder:
    """The tiers of a validated `LadderChoice` (nothing is looked up again but prices).

    ``settings`` gives the registry's prices and the oracle's billing; the other
    arguments are as in `build_ladder`.
    """
    from nightowl.agent.ladder import Ladder, TierParts
    from nightowl.agent.tiers import OracleTier, StudentTier, TeacherTier
    from nightowl.distill.prompt import PromptBuilder
    from nightowl.ledger.metered import MeteredModel

    p = PRESETS[choice.preset]
    builder = builder or PromptBuilder()
    sname, teacher = choice.student, choice.teacher

    def teacher_tier() -> Tier:
        if teacher == ORACLE:
            return OracleTier(
                ledger=ledger,
                prices=settings.model(settings.teacher_price_model).prices,
                # the student's tokenizer counts the billed prompt; only count_tokens is
                # called, so the student's backend is made on first use (never if unused)
                tokenizer=SimpleNamespace(
                    count_tokens=lambda text: int(student_backend(sname).count_tokens(text))
                ),
                output_tokens=settings.oracle_output_tokens,
                builder=builder.for_teacher(),
            )
        spec = settings.model(teacher)
        model = MeteredModel(
            student_backend(teacher), ledger, spec.prices, run_id=run_id, role="teacher"
        )
        return TeacherTier(model, prices=spec.prices, builder=builder.for_teacher())

    if p.student == "none":
        return Ladder([teacher_tier()], fallback="end")
    sprices = settings.model(sname).prices
    smodel = MeteredModel(student_backend(sname), ledger, sprices, run_id=run_id, role="student")
    assert choice.rule is not None
    alone = p.student == "alone"  # greedy, never avoiding repeats, no tier above it
    student = StudentTier(
        smodel, prices=sprices, rule=choice.rule, builder=builder, use_demos=p.demos,
        temperature=0.0 if alone else temperature, avoid_repeats=not alone,
        repeats="explore" if alone else repeats, backtrack=backtrack,
    )
    if alone:
        return Ladder([student], fallback="best")
    parts = TierParts(student=smodel, prices=sprices, ledger=ledger, run_id=run_id)
    escalations = [_tier_factory(choice.preset, target)(parts) for target in p.escalations]
    return Ladder([student, *escalations, teacher_tier()], fallback=choice.fallback)

"""The run plan: a `RunSpec` validated and resolved once; every run builds from it.

`RunSpec` is the input (a command's options, a script's or an API request): names and
numbers as given, defaults left open. `RunSpec.resolved` is the one
place that checks it and decides what a run needs:

- the student: its registry name (the settings' student unless one is named) and its
  dtype (`resolve_student`, the only reader of ``settings.student_model`` on a run's
  path);
- the teacher, the ladder preset, its acceptance rule as an object and the fallback
  (`nightowl.agent.presets.validate_ladder`);
- the episode budget: a budget that names no ``max_steps`` gets the environment's
  default (`default_budget_steps`: `DEFAULT_MAX_STEPS` unless the environment declares
  its own).

The result, `RunPlan`, is immutable. `run_tasks`, `collect_demos`, `calibrate`, the
showcase and a distributed run's episode messages take it; an episode message carries
the plan as JSON, so a worker builds from the plan it was sent and resolves nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator

from nightowl.agent.acceptance import AcceptanceRule, parse_rule
from nightowl.agent.budget import DEFAULT_MAX_STEPS, EpisodeBudget
from nightowl.agent.presets import PRESETS, LadderChoice, Preset, validate_ladder
from nightowl.agent.tiers import BacktrackPolicy, RepeatPolicy, check_policies
from nightowl.config import Settings
from nightowl.distill.prompt import ActionFormat, PromptBuilder
from nightowl.envs.registry import env_class
from nightowl.errors import ConfigError
from nightowl.llm.dtype import KNOWN as KNOWN_DTYPES
from nightowl.llm.machine import ScoringMachine

if TYPE_CHECKING:
    from nightowl.app.root import Nightowl
    from nightowl.llm.base import ModelBackend

#: the backend whose dtype `--student-dtype` sets (an in-process student)
IN_PROCESS = "transformers"


@dataclass(kw_only=True)
class RunSpec:
    """What to run: one ladder over a task list, as given (`resolved` decides the rest).

    ``student=None`` means the settings' student; ``student_dtype=None`` the registry's
    dtype (chosen per machine). A ``budget`` that does not name ``max_steps`` gets the
    environment's default step budget (`DEFAULT_MAX_STEPS` unless it declares its own).
    """

    name: str
    env: str
    split: str
    task_ids: list[str]
    ladder: str = "cascade"
    rule: str | None = None
    temperature: float = 0.5
    #: a student's repeated action in the same state: "explore" or "escalate" (StudentTier)
    repeats: RepeatPolicy = "explore"
    #: the move back through the exit just used: "avoid" or "allow" (StudentTier)
    backtrack: BacktrackPolicy = "avoid"
    teacher: str = "oracle"
    student: str | None = None
    #: the in-process student's dtype (``--student-dtype``; None: the registry's)
    student_dtype: str | None = None
    budget: EpisodeBudget = field(default_factory=EpisodeBudget)
    retrieve: bool = True
    concurrency: int = 4
    store_escalations: bool = False
    k_episodes: int | None = None  # None: the prompt builder's (chosen by bench/icd_matrix.py)
    window: int | None = None
    demos_per: str = "step"  # or "episode": retrieve once, the prompt prefix stays cached
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    kind: str = "run"
    #: the machine a calibrated rule's scores came from (`nightowl run --calibration`)
    calibrated_on: ScoringMachine | None = None

    def resolved(self, settings: Settings) -> RunPlan:
        """This spec checked and everything a run needs decided, once (see the module docstring).

        Touches nothing: no model is loaded, nothing is recorded.

        Raises:
            UnknownNameError: unknown environment, ladder preset or model.
            ConfigError: a rule that does not parse or does not fit the preset, a bad
                ``demos_per``, repeat or backtrack policy, or dtype.
        """
        steps = default_budget_steps(self.env)  # unknown env / missing extra: a clear error now
        if self.demos_per not in ("step", "episode"):
            raise ConfigError(f"demos_per must be 'step' or 'episode', not {self.demos_per!r}")
        try:
            check_policies(self.repeats, self.backtrack)  # the student tier's own check
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        student = resolve_student(settings, self.student, self.student_dtype)
        choice = validate_ladder(self.ladder, self.rule, student.name, self.teacher, settings)
        # every field a plan shares with the spec is taken as given, but what was decided here
        given = {f.name: getattr(self, f.name) for f in fields(self)}
        return RunPlan(**{
            **{name: value for name, value in given.items() if name in RunPlan.model_fields},
            "ladder": choice.preset, "rule": choice.rule, "rule_given": self.rule,
            "fallback": choice.fallback, "teacher": choice.teacher, "student": student,
            "budget": self.budget.with_default_steps(steps),
        })


class StudentChoice(BaseModel):
    """The run's student: its registry name and the dtype it runs in (None: the registry's)."""

    model_config = ConfigDict(frozen=True)

    name: str
    dtype: str | None = None

    def settings(self, settings: Settings) -> Settings:
        """``settings`` with the student's registry entry in this dtype (as is without one)."""
        if self.dtype is None:
            return settings
        spec = settings.model(self.name)
        models = dict(settings.models)
        models[self.name] = spec.model_copy(update={"params": {**spec.params, "dtype": self.dtype}})
        return settings.model_copy(update={"models": models})

    def backends(self, app: Nightowl) -> Callable[[str], ModelBackend]:
        """A backend factory by model name: the root's, with this dtype for the student."""
        if self.dtype is None:
            return app.backend
        from nightowl.llm.registry import build_backend

        with_dtype = self.settings(app.settings)

        def make(name: str) -> ModelBackend:
            return build_backend(name, with_dtype) if name == self.name else app.backend(name)

        return make

    def backend(self, app: Nightowl) -> ModelBackend:
        """The student's backend (cached per process, like every registry backend)."""
        return self.backends(app)(self.name)


def resolve_student(
    settings: Settings, name: str | None = None, dtype: str | None = None
) -> StudentChoice:
    """The student of a run: ``name`` (default ``settings.student_model``) and its dtype.

    The one place a run reads ``settings.student_model``. ``dtype`` sets the registry
    entry's ``dtype`` param for an in-process (transformers) student; a served or
    scripted student has none to set, and the dtype is dropped (as `nightowl demo`
    always did). The student's registry name is checked where the ladder uses the
    student (`validate_ladder`).

    Raises:
        ConfigError: an unknown dtype.
        UnknownNameError: a dtype for a student that is not in the registry.
    """
    student = name or settings.student_model
    if not dtype:
        return StudentChoice(name=student)
    if dtype not in KNOWN_DTYPES:
        raise ConfigError(f"--student-dtype must be one of {', '.join(KNOWN_DTYPES)}, "
                          f"not {dtype!r}")
    if settings.model(student).backend != IN_PROCESS:
        return StudentChoice(name=student)
    return StudentChoice(name=student, dtype=dtype)


def student_prompt(
    env: str, *, k_episodes: int | None = None, window: int | None = None
) -> PromptBuilder:
    """The student's prompt builder for ``env``: its action format, and retrieval advice.

    The environment also says whether demos are shown with the current goal's values.

    ``k_episodes`` / ``window`` of None keep the builder's defaults.
    """
    cls = env_class(env)
    builder = PromptBuilder(
        action_format=cast(ActionFormat, cls.action_format),
        adapt_values=cls.adapt_demo_values,
    )
    return replace(builder, k_episodes=k_episodes or builder.k_episodes,
                   window=window or builder.window)


def default_budget_steps(env: str) -> int:
    """The step budget of an episode of ``env`` when a run names none.

    Raises:
        UnknownNameError: an unknown environment (or one whose extra is missing).
    """
    return getattr(env_class(env), "default_budget_steps", None) or DEFAULT_MAX_STEPS


def _as_rule(value: Any) -> AcceptanceRule | None:
    """A plan's rule: the object (in process) or its spec (from JSON, a worker's message)."""
    if value is None or isinstance(value, AcceptanceRule):
        return value
    if isinstance(value, str):
        return parse_rule(value)
    raise ValueError(f"not an acceptance rule: {value!r}")


#: a rule object in a plan, written as its ``--rule`` spec in JSON
PlanRule = Annotated[
    AcceptanceRule | None,
    PlainValidator(_as_rule),
    PlainSerializer(lambda rule: None if rule is None else rule.spec(), return_type=str | None),
]


class RunPlan(BaseModel):
    """A run, decided: what `run_tasks` builds the ladder, budget and loop from.

    Made by `RunSpec.resolved` (never by hand); immutable. A copy with other task ids
    (`with_tasks`) or, in a distributed run, one task and the run id, is the same plan.

    Attributes:
        ladder: the preset's name (`preset` is the preset).
        rule: the student tier's acceptance rule (None for teacher-only).
        rule_given: the ``--rule`` spec as given (None: the preset's default).
        student: the student's name and dtype (teacher-only: its tokenizer bills the
            oracle).
        budget: per-episode limits; ``max_steps`` is always decided.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    kind: str = "run"
    env: str
    split: str
    task_ids: tuple[str, ...] = ()
    ladder: str
    rule: PlanRule = None
    rule_given: str | None = None
    fallback: Literal["best", "end"] = "best"
    temperature: float = 0.5
    repeats: RepeatPolicy = "explore"
    backtrack: BacktrackPolicy = "avoid"
    teacher: str = "oracle"
    student: StudentChoice
    budget: EpisodeBudget
    retrieve: bool = True
    store_escalations: bool = False
    concurrency: int = 4
    k_episodes: int | None = None
    window: int | None = None
    demos_per: Literal["step", "episode"] = "step"
    env_kwargs: dict[str, Any] = {}
    run_id: str | None = None
    calibrated_on: ScoringMachine | None = None

    @property
    def preset(self) -> Preset:
        """The ladder preset."""
        return PRESETS[self.ladder]

    @property
    def uses_demos(self) -> bool:
        """Whether the student retrieves demos (a demo preset with retrieval on)."""
        return self.preset.demos and self.retrieve

    @property
    def ladder_choice(self) -> LadderChoice:
        """What `nightowl.agent.presets.ladder_from` builds the tiers from."""
        return LadderChoice(preset=self.ladder, rule=self.rule, student=self.student.name,
                            teacher=self.teacher, fallback=self.fallback)

    def with_tasks(self, task_ids: list[str] | tuple[str, ...]) -> RunPlan:
        """The same plan over other tasks."""
        return self.model_copy(update={"task_ids": tuple(task_ids)})


def as_plan(settings: Settings, spec: RunSpec | RunPlan) -> RunPlan:
    """A plan as is; a spec resolved (`RunSpec.resolved`)."""
    return spec if isinstance(spec, RunPlan) else spec.resolved(settings)


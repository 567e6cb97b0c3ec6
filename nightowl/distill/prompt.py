"""Student prompt builder: completion-style, bounded, stably ordered.

The prompt is plain text in the "Goal: / Observation: / Action:" shape (the embedded
SmolLM2 rambles under its chat template but continues such trajectories well):

1. a fixed instruction block (identical for every call: the longest shared prefix),
2. retrieved demos, formatted as trajectories, in a deterministic order (by task id,
   then first step), each window and observation cut to a bound,
3. the current goal, the last ``history`` (observation, action) pairs and the current
   observation, in exactly the demos' format,
4. ``Action:`` -- the model continues with " <action>".

The current step has the same shape as every demo step. A small model copies the
pattern of its examples; a last block that differs from them (e.g. an extra
``Valid actions:`` line the demos lack) breaks the copy: on TextWorld-Express dev states
removing only that line took the student's top-1 agreement with the expert (with demos)
from 33% to 100% on simonsays, 25% to 88% on mapreader, 75% to 100% on peckingorder and
12% to 62% on sorting (``bench/icd_matrix.py``, docs/icd.md).
Validity is enforced by scoring only the valid actions, not by listing them; where they
are listed (``valid_actions_in="both"``) the demo steps list theirs the same way.

``scoring`` says how the scored valid actions are ranked (see `nightowl.distill.scoring`):
the summed log-probability, its per-token mean, or either minus the same action's
log-probability after a content-free prompt (contextual calibration).

Everything is bounded (characters per observation, steps per demo, number of demos,
history length), so prompts do not grow with episode length. Putting the fixed parts
first keeps a prefix-caching server (vLLM) reusing them across steps and samples.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from nightowl.distill.demo_values import adapt, value_map
from nightowl.errors import ConfigError

#: where valid actions are listed: nowhere (scoring enforces them), only in the current
#: step (the old format, which breaks the demo pattern), or in demos and current step
ValidShown = Literal["none", "current", "both"]
#: how scored actions are ranked (`nightowl.distill.scoring.rank_scores`)
Scoring = Literal["sum", "mean", "calibrated", "calibrated-mean"]
SCORINGS: tuple[str, ...] = get_args(Scoring)
#: how actions are written: one line (text games) or code (AppWorld: several lines)
ActionFormat = Literal["line", "code"]
ACTION_FORMATS: tuple[str, ...] = get_args(ActionFormat)
#: one-line actions: characters shown, tokens a free-text sample may take
LINE_ACTION_CHARS = 100
LINE_SAMPLE_TOKENS = 16

DEFAULT_INSTRUCTIONS = (
    "You are an agent in a text game. Read the goal and the observation, then answer "
    "with the single next action. Examples of successful games come first."
)

_WS = re.compile(r"\s+")


def squash(text: str, limit: int) -> str:
    """One line, whitespace collapsed, cut to ``limit`` characters.

    Long texts keep their head (where games say where you are) and their tail (where
    they list exits and results), joined by " ... ".
    """
    t = _WS.sub(" ", (text or "")).strip()
    if limit > 0 and len(t) > limit:
        head = limit // 3
        tail = limit - head
        t = t[:head].rstrip() + " ... " + t[-tail:].lstrip()
    return t


def code_text(code: str, limit: int) -> str:
    """A code action as the prompt shows it, at most ``limit`` characters.

    Its lines are kept, blank ones and trailing spaces dropped, cut at a line end (a
    first line longer than ``limit`` is cut within).
    """
    lines = [ln.rstrip() for ln in (code or "").strip().splitlines() if ln.strip()]
    kept: list[str] = []
    used = 0
    for ln in lines:
        if kept and used + len(ln) + 1 > limit:
            break
        kept.append(ln if kept else ln[:limit])
        used += len(ln) + 1
    return "\n".join(kept)


@dataclass(frozen=True, kw_only=True)
class DemoStepView:
    """One demo step as the prompt needs it."""

    observation: str
    action: str
    valid_actions: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class DemoView:
    """One retrieved demo window as the prompt needs it."""

    goal: str
    task_id: str
    steps: tuple[DemoStepView, ...]
    first_idx: int = 0
    #: position in ``steps`` of the step retrieval matched best (None: not known)
    best: int | None = None

    def kept(self, n: int) -> tuple[DemoStepView, ...]:
        """At most ``n`` consecutive steps: around the best-matched step when known.

        The best hit keeps up to ``n // 2`` steps after it and the rest before, so the
        step most like the current state is shown with what led to it and what came
        next. Without a known hit: the first ``n`` steps.
        """
        if len(self.steps) <= n:
            return self.steps
        if self.best is None or not 0 <= self.best < len(self.steps):
            return self.steps[:n]
        after = min(n // 2, len(self.steps) - 1 - self.best)
        start = max(0, self.best - (n - 1 - after))
        return self.steps[start : start + n]


def field_of(obj: Any, name: str, default: Any = None) -> Any:
    """``obj[name]`` of a dict, else the attribute ``name`` (``default`` when absent)."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def as_demo_view(window: Any) -> DemoView:
    """Adapt a memory `DemoWindow` (or a dict, or a DemoView) by duck typing."""
    if isinstance(window, DemoView):
        return window
    steps = []
    first = None
    best_idx = field_of(window, "best_idx", None)
    best = None  # the position of the step whose idx is best_idx
    for s in field_of(window, "steps", ()) or ():
        obs = field_of(s, "observation", None)
        steps.append(DemoStepView(
            observation=str((field_of(s, "obs", "") if obs is None else obs) or ""),
            action=str(field_of(s, "action", "")),
            valid_actions=tuple(str(a) for a in field_of(s, "valid_actions", None) or ()),
        ))
        idx = field_of(s, "idx", None)
        if idx is not None and first is None:
            first = int(idx)
        if best_idx is not None and idx is not None and int(idx) == int(best_idx):
            best = len(steps) - 1
    return DemoView(
        goal=str(field_of(window, "goal", "") or ""),
        task_id=str(field_of(window, "task_id", "") or ""),
        steps=tuple(steps),
        first_idx=first if first is not None else int(field_of(window, "start", 0) or 0),
        best=best,
    )


@dataclass(kw_only=True)
class PromptBuilder:
    """Builds the student's (and the oracle teacher's billing) prompt.

    Defaults are the benchmark's best on TextWorld-Express and TextWorld dev states
    (``bench/icd_matrix.py``, docs/icd.md): demos and current step in one format, no
    valid-action list, per-token mean log-probabilities (equal to the sum's top-1 on 6
    of 7 measured families, better on TextWorld cooking: 88% vs 75%).

    Attributes:
        instructions: the fixed first block.
        max_demos: demo windows kept (after stable ordering).
        max_demo_steps: steps kept per demo window (around its best-matched step).
        demo_obs_chars: characters kept per demo observation.
        history: recent (observation, action) pairs of the current episode kept.
        history_obs_chars: characters kept per history observation.
        obs_chars: characters kept of the current observation.
        max_valid_actions: valid actions listed (the rest are summarised by count).
        valid_actions_in: where valid actions are listed ("none", "current", "both").
        scoring: how scored valid actions are ranked (`nightowl.distill.scoring`).
        k_episodes: demo episodes to retrieve (advice for the loop's retrieval).
        window: demo steps either side of a retrieved step (advice for retrieval).
        variant: a label for run records (e.g. the benchmark variant it came from).
        action_format: ``"line"`` -- an action is one line (shown squashed to 100
            characters; a sample stops at the newline); ``"code"`` -- an action is code
            of several lines (shown whole up to ``code_chars``; a sample stops before
            the next step (``Observation:``), or after ``code_sample_tokens``).
            The environment says which (`Environment.action_format`).
        code_chars: characters of a code action shown in demos and history.
        code_sample_tokens: the generation cap of a sampled code action.
        earlier_actions: the last this-many actions before the history steps, listed in
            one line ("Earlier actions: go to desk 1; open drawer 2"), so the prompt
            keeps track of a long search without growing by whole steps (0: none).
        adapt_values: show each demo whose goal is the current goal with some words
            replaced with those words replaced in all its text (goal, observations,
            actions), so the student copies the current goal's values, not the demo's
            (`nightowl.distill.demo_values`). The environment says whether
            (`Environment.adapt_demo_values`).
    """

    instructions: str = DEFAULT_INSTRUCTIONS
    max_demos: int = 2
    max_demo_steps: int = 6
    demo_obs_chars: int = 120
    history: int = 2
    history_obs_chars: int = 100
    obs_chars: int = 300
    max_valid_actions: int = 40
    valid_actions_in: ValidShown = "none"
    scoring: Scoring = "mean"
    k_episodes: int = 2
    window: int = 3
    variant: str = "plain"
    action_format: ActionFormat = "line"
    code_chars: int = 600
    code_sample_tokens: int = 128
    earlier_actions: int = 0
    adapt_values: bool = False

    def __post_init__(self) -> None:
        if self.valid_actions_in not in ("none", "current", "both"):
            raise ConfigError(
                f"valid_actions_in must be none, current or both, not {self.valid_actions_in!r}"
            )
        for name, known in (("scoring", SCORINGS), ("action_format", ACTION_FORMATS)):
            if getattr(self, name) not in known:
                raise ConfigError(
                    f"{name} must be one of {', '.join(known)}, not {getattr(self, name)!r}"
                )

    @property
    def sample_stop(self) -> tuple[str, ...]:
        """Where a sampled action ends.

        A line: at its end. Code (whose lines may be apart by blank ones): before the
        next step's ``Observation:``, ``Action:`` or ``Goal:``.
        """
        if self.action_format == "code":
            return ("\nObservation:", "\nAction:", "\nGoal:")
        return ("\n",)

    @property
    def sample_max_tokens(self) -> int:
        """The generation cap of one sampled action."""
        return self.code_sample_tokens if self.action_format == "code" else LINE_SAMPLE_TOKENS

    def action_text(self, action: str) -> str:
        """An action as demos and history show it (code keeps its lines)."""
        if self.action_format == "code":
            return code_text(action, self.code_chars)
        return squash(action, LINE_ACTION_CHARS)

    def describe(self) -> dict[str, Any]:
        """The prompt and scoring configuration, for run metadata."""
        return {k: getattr(self, k) for k in (
            "variant", "valid_actions_in", "scoring", "max_demos", "max_demo_steps",
            "demo_obs_chars", "history", "history_obs_chars", "obs_chars", "k_episodes",
            "window", "action_format", "earlier_actions", "adapt_values",
        )}

    def for_teacher(self) -> PromptBuilder:
        """The same builder listing the current step's valid actions.

        A teacher LLM (and the oracle teacher's bill) gets the valid actions in its
        prompt: it reads instructions instead of copying patterns.
        """
        shown: ValidShown = "both" if self.valid_actions_in == "both" else "current"
        return replace(self, valid_actions_in=shown)

    def _valid_line(self, valid_actions: Sequence[str]) -> str:
        acts = sorted(valid_actions)
        shown = acts[: self.max_valid_actions]
        more = f" (+{len(acts) - len(shown)} more)" if len(acts) > len(shown) else ""
        return "Valid actions: " + ", ".join(shown) + more

    def demo_block(self, demos: Sequence[Any], goal: str = "") -> str:
        """The demos, deterministically ordered and bounded.

        With `adapt_values`, each demo's values are replaced by ``goal``'s.
        """
        views = [as_demo_view(d) for d in demos]
        views = [v for v in views if v.steps][: self.max_demos]
        views.sort(key=lambda v: (v.task_id, v.first_idx, v.goal))
        blocks = []
        for v in views:
            pairs = value_map(v.goal, goal) if self.adapt_values and goal else {}
            lines = [f"Goal: {squash(adapt(v.goal, pairs), 300)}"]
            for s in v.kept(self.max_demo_steps):
                obs = adapt(s.observation, pairs)
                lines.append(f"Observation: {squash(obs, self.demo_obs_chars)}")
                if self.valid_actions_in == "both" and s.valid_actions:
                    lines.append(self._valid_line(s.valid_actions))
                lines.append(f"Action: {self.action_text(adapt(s.action, pairs))}")
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)

    def build(
        self,
        *,
        goal: str,
        observation: str,
        history: Sequence[tuple[str, str]] = (),
        valid_actions: Sequence[str] | None = None,
        demos: Sequence[Any] = (),
    ) -> str:
        """The full prompt, ending in ``Action:`` (the model continues with " <action>")."""
        parts = [self.instructions.strip()]
        demo_text = self.demo_block(demos, goal)
        if demo_text:
            parts.append(demo_text)
        cur = [f"Goal: {squash(goal, 300)}"]
        hist = list(history)[-self.history :] if self.history > 0 else []
        earlier = list(history)[: len(history) - len(hist)][-self.earlier_actions :]
        if self.earlier_actions > 0 and earlier:
            line = "; ".join(squash(a, LINE_ACTION_CHARS) for _, a in earlier)
            cur.append(f"Earlier actions: {line}")
        for obs, act in hist:
            cur.append(f"Observation: {squash(obs, self.history_obs_chars)}")
            cur.append(f"Action: {self.action_text(act)}")
        cur.append(f"Observation: {squash(observation, self.obs_chars)}")
        if valid_actions and self.valid_actions_in != "none":
            cur.append(self._valid_line(valid_actions))
        cur.append("Action:")
        parts.append("\n".join(cur))
        return "\n\n".join(parts)

    def content_free(self, demos: Sequence[Any] = ()) -> str:
        """The prompt with a content-free current step ("N/A"), for calibrated scoring.

        It shares the real prompt's prefix (instructions and demos), so a backend with
        prefix caching pays only for the short last block.
        """
        return self.build(goal="N/A", observation="N/A", demos=demos)


def continuation(action: str) -> str:
    """How an action continues the prompt (the text scored for constrained choice)."""
    return " " + action.strip()

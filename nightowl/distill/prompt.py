"""Student prompt builder: completion-style, bounded, stably ordered.

The prompt is plain text in the "Goal: / Observation: / Action:" shape (the embedded
SmolLM2 rambles under its chat template but continues such trajectories well):

1. a fixed instruction block (identical for every call: the longest shared prefix),
2. retrieved demos, formatted as trajectories, in a deterministic order (by task id,
   then first step), each window and observation cut to a bound,
3. the current goal, the last ``history`` (observation, action) pairs, the current
   observation, and the valid actions when known,
4. ``Action:`` -- the model continues with " <action>".

Everything is bounded (characters per observation, steps per demo, number of demos,
history length), so prompts do not grow with episode length. Putting the fixed parts
first keeps a prefix-caching server (vLLM) reusing them across steps and samples.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True, kw_only=True)
class DemoStepView:
    """One demo step as the prompt needs it."""

    observation: str
    action: str


@dataclass(frozen=True, kw_only=True)
class DemoView:
    """One retrieved demo window as the prompt needs it."""

    goal: str
    task_id: str
    steps: tuple[DemoStepView, ...]
    first_idx: int = 0


def as_demo_view(window: Any) -> DemoView:
    """Adapt a memory `DemoWindow` (or a dict, or a DemoView) by duck typing."""
    if isinstance(window, DemoView):
        return window

    def get(obj: Any, name: str, default: Any = None) -> Any:
        if isinstance(obj, dict):
            return obj.get(name, default)
        return getattr(obj, name, default)

    steps = []
    first = None
    for s in get(window, "steps", ()) or ():
        obs = get(s, "observation", None)
        if obs is None:
            obs = get(s, "obs", "")
        steps.append(DemoStepView(observation=str(obs or ""), action=str(get(s, "action", ""))))
        idx = get(s, "idx", None)
        if idx is not None and first is None:
            first = int(idx)
    return DemoView(
        goal=str(get(window, "goal", "") or ""),
        task_id=str(get(window, "task_id", "") or ""),
        steps=tuple(steps),
        first_idx=first if first is not None else int(get(window, "start", 0) or 0),
    )


@dataclass(kw_only=True)
class PromptBuilder:
    """Builds the student's (and the oracle teacher's billing) prompt.

    Attributes:
        instructions: the fixed first block.
        max_demos: demo windows kept (after stable ordering).
        max_demo_steps: steps kept per demo window.
        demo_obs_chars: characters kept per demo observation (the tail).
        history: recent (observation, action) pairs of the current episode kept.
        history_obs_chars: characters kept per history observation.
        obs_chars: characters kept of the current observation.
        max_valid_actions: valid actions listed (the rest are summarised by count).
        list_valid_actions: whether to list valid actions at all.
    """

    instructions: str = DEFAULT_INSTRUCTIONS
    max_demos: int = 2
    max_demo_steps: int = 6
    demo_obs_chars: int = 120
    history: int = 2
    history_obs_chars: int = 100
    obs_chars: int = 300
    max_valid_actions: int = 40
    list_valid_actions: bool = True

    def demo_block(self, demos: Sequence[Any]) -> str:
        """The demos, deterministically ordered and bounded."""
        views = [as_demo_view(d) for d in demos]
        views = [v for v in views if v.steps][: self.max_demos]
        views.sort(key=lambda v: (v.task_id, v.first_idx, v.goal))
        blocks = []
        for v in views:
            lines = [f"Goal: {squash(v.goal, 300)}"]
            for s in v.steps[: self.max_demo_steps]:
                lines.append(f"Observation: {squash(s.observation, self.demo_obs_chars)}")
                lines.append(f"Action: {squash(s.action, 100)}")
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
        demo_text = self.demo_block(demos)
        if demo_text:
            parts.append(demo_text)
        cur = [f"Goal: {squash(goal, 300)}"]
        hist = list(history)[-self.history :] if self.history > 0 else []
        for obs, act in hist:
            cur.append(f"Observation: {squash(obs, self.history_obs_chars)}")
            cur.append(f"Action: {squash(act, 100)}")
        cur.append(f"Observation: {squash(observation, self.obs_chars)}")
        if valid_actions and self.list_valid_actions:
            acts = sorted(valid_actions)
            shown = acts[: self.max_valid_actions]
            more = f" (+{len(acts) - len(shown)} more)" if len(acts) > len(shown) else ""
            cur.append("Valid actions: " + ", ".join(shown) + more)
        cur.append("Action:")
        parts.append("\n".join(cur))
        return "\n\n".join(parts)


def continuation(action: str) -> str:
    """How an action continues the prompt (the text scored for constrained choice)."""
    return " " + action.strip()

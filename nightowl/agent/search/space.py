"""The environment side of tree search: execute on clones, format prompts, parse actions.

A `SearchSpace` wraps a live `Environment` that can snapshot. The search never steps the
live state directly: every expansion restores a node's snapshot, steps one action and
snapshots the child; `restore_root` puts the environment back where the search found it.

Final actions (e.g. ``answer[...]`` in question answering) are *not* executed during
search: executing them would reveal the environment's verdict, which an agent does not
see before it commits. They become terminal nodes valued by the critic. Actions of text
games are executed, and a game's own "won" message is an observation like any other.

Prompts are completion-style ("Action: ... / Observation: ..."), which small models
follow far better than chat templates; the budget line (remaining / used) is shown.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nightowl.envs.base import Environment, Snapshot, StepResult

_BRACKETED = re.compile(r"^([a-z_]+)\s*\[\s*([^\[\]]*[^\[\]\s][^\[\]]*)\]?\s*$", re.IGNORECASE)
_PREFIX = re.compile(r"^\s*(?:action\s*\d*\s*[:>-]\s*|>\s*)", re.IGNORECASE)


def action_key(action: str) -> str:
    """Lower-case, whitespace-squeezed, punctuation kept (duplicate detection, voting).

    Unlike `nightowl.distill.parser.normalize_action`, punctuation is kept: search
    actions such as ``search[Paris, France]`` differ by it.
    """
    return " ".join(action.lower().split())


@dataclass(frozen=True, kw_only=True)
class Step:
    """One executed (or final) step on a path."""

    action: str
    observation: str


class SearchSpace:
    """Search over one environment from its current state.

    Args:
        env: a live environment with ``can_snapshot``. Its conventions are read from it:
            ``search_instructions`` (one paragraph on top of every prompt),
            ``is_final_action`` (which actions end the episode without being executed
            during search; default: none), ``answer_prefix`` / ``answer_suffix`` (how to
            force a final answer, e.g. "answer[" / "]"; None when it has no answer
            action) and ``search_order_free`` (the state depends only on the *set* of
            actions taken, true for side-effect-free search tools, which makes more
            duplicates detectable).
        header: the task as the prompt shows it (goal, current observation).
        demos: worked examples in the same format (already formatted).
        valid_actions: actions valid at the root, when known.
        max_obs_chars: characters of each observation shown in prompts.
    """

    def __init__(
        self,
        env: Environment,
        *,
        header: str,
        demos: str = "",
        valid_actions: Sequence[str] | None = None,
        max_obs_chars: int = 600,
    ) -> None:
        if not env.can_snapshot:
            raise ValueError(f"environment {env.name!r} cannot snapshot")
        self.env = env
        self.header = header
        self.instructions: str = getattr(env, "search_instructions", "")
        self.demos = demos
        self.valid_actions = tuple(valid_actions) if valid_actions else None
        self._is_final = getattr(env, "is_final_action", None) or (lambda a: False)
        self.answer_prefix: str | None = getattr(env, "answer_prefix", None)
        self.answer_suffix: str = getattr(env, "answer_suffix", "")
        self.order_free = bool(getattr(env, "search_order_free", False))
        self.max_obs_chars = max_obs_chars
        self.root: Snapshot = env.snapshot()

    @classmethod
    def from_env(
        cls,
        env: Environment,
        *,
        goal: str,
        observation: str = "",
        valid_actions: Sequence[str] | None = None,
        history: Sequence[tuple[str, str]] = (),
        demos: str = "",
        max_obs_chars: int = 600,
    ) -> SearchSpace:
        """A space for ``env``'s current state.

        ``history`` is the loop's recent ``(observation, action)`` pairs, shown before
        the root.
        """
        lines = [f"Goal: {goal}"] if goal else []
        for obs, act in history:
            lines.append(f"Observation: {obs.strip()}\nAction: {act}")
        if observation and observation.strip() != goal.strip():
            lines.append(f"Observation: {observation.strip()}")
        return cls(env, header="\n".join(lines), demos=demos, valid_actions=valid_actions,
                   max_obs_chars=max_obs_chars)

    # --- environment ----------------------------------------------------------------
    def is_final(self, action: str) -> bool:
        """Whether ``action`` ends the episode (scored, not executed)."""
        return bool(self._is_final(action))

    def execute(self, snapshot: Snapshot, action: str) -> tuple[StepResult, Snapshot]:
        """Step ``action`` from ``snapshot`` on the environment; return the child state."""
        self.env.restore(snapshot)
        result = self.env.step(action)
        return result, self.env.snapshot()

    def restore_root(self) -> None:
        """Put the environment back in the state the search started from."""
        self.env.restore(self.root)

    def state_key(self, actions: Sequence[str]) -> Any:
        """Identity of the state reached by ``actions`` from the root."""
        norm = [action_key(a) for a in actions]
        return frozenset(norm) if self.order_free else tuple(norm)

    # --- prompts ----------------------------------------------------------------------
    def _obs(self, text: str) -> str:
        text = text.strip()
        if len(text) > self.max_obs_chars:
            text = text[: self.max_obs_chars] + " ..."
        return text

    def _steps(self, path: Sequence[Step]) -> str:
        return "".join(f"Action: {s.action}\nObservation: {self._obs(s.observation)}\n"
                       for s in path)

    def _valid_line(self, valid: Sequence[str] | None) -> str:
        return "Valid actions: " + ", ".join(list(valid)[:40]) + "\n" if valid else ""

    def prompt(
        self, path: Sequence[Step], budget: str, valid: Sequence[str] | None = None
    ) -> str:
        """The proposal prompt for the state at the end of ``path``; ends with "Action:"."""
        parts = []
        if self.instructions:
            parts.append(self.instructions.strip() + "\n\n")
        if self.demos:
            parts.append(self.demos.rstrip() + "\n\n")
        parts.append(self.header.strip() + "\n")
        parts.append(budget + "\n")
        parts.append(self._steps(path))
        parts.append(self._valid_line(valid if path else (valid or self.valid_actions)))
        parts.append("Action:")
        return "".join(parts)

    def critic_prompt(self, path: Sequence[Step], new: Step) -> str:
        """The residual critic's view: the task, the steps so far, and the new step."""
        parts = []
        if self.instructions:
            parts.append(self.instructions.strip() + "\n")
        parts.append(self.header.strip() + "\n")
        parts.append(f"Steps so far:\n{self._steps(path)}" if path else "Steps so far: none.\n")
        parts.append(f"New step:\nAction: {new.action}\nObservation: {self._obs(new.observation)}")
        return "".join(parts)

    # --- parsing ----------------------------------------------------------------------
    def parse(self, text: str, valid: Sequence[str] | None = None) -> str | None:
        """The action in a model reply (first line, chatter stripped), or None.

        When valid actions are known the reply is mapped to the closest one
        (normalised string similarity >= 0.6); otherwise it must be non-empty.
        """
        line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
        line = _PREFIX.sub("", line).strip().strip("`\"'").strip()
        if not line:
            return None
        valid = valid if valid is not None else self.valid_actions
        if valid:
            table = {action_key(v): v for v in valid}
            key = action_key(line)
            if key in table:
                return table[key]
            close = difflib.get_close_matches(key, list(table), n=1, cutoff=0.6)
            return table[close[0]] if close else None
        if self.answer_prefix is not None:
            # Bracketed commands (search[...], answer[...]): tolerate a missing "]".
            m = _BRACKETED.match(line)
            if m is None:
                return None
            return f"{m.group(1).lower()}[{m.group(2).strip()}]"
        return line

    def make_answer(self, text: str) -> str | None:
        """A final action from forced-answer text, or None when there is no answer action."""
        if self.answer_prefix is None:
            return None
        text = text.strip().split("\n")[0].strip().rstrip(self.answer_suffix or "\0").strip()
        if not text:
            return None
        return f"{self.answer_prefix}{text}{self.answer_suffix}"


def format_demo(header: str, steps: Sequence[Step]) -> str:
    """A worked example in the prompt's own format (for ``demos=``)."""
    out = [header.strip() + "\n"]
    for s in steps:
        out.append(f"Action: {s.action}\n")
        if s.observation:
            out.append(f"Observation: {s.observation.strip()}\n")
    return "".join(out)

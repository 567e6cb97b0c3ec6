"""ALFWorld (extra ``alfworld``): ALFWorld's TextWorld engine, games and experts.

Games are played by TextWorld's PDDL engine with ALFWorld's own wrapper stack
(`AlfredDemangler`, `AlfredInfos`, `AlfredExpert`), the stack `AlfredTWEnv.init_env`
builds. Two catalogues:

* generated games (always): ``alfworld/<type>/<split>/<seed>`` with ``type`` one of
  pick, look, clean, heat, cool, pick2 (the six ALFWorld task types), written on first
  use by `nightowl.envs.alfworld_gen` under ``<cache_dir>/games`` and kept only if
  both the PDDL planner and the handcoded expert solve them. Seeds: train 0.., dev
  10000.., test 20000.. (test games use ALFRED's held-out scenes).
* official games (when ``$ALFWORLD_DATA/json_2.1.1`` exists, i.e. after
  ``alfworld-download``): ``alfworld/official-<type>/<split>/<n>``, the n-th game of
  the type in ALFWorld's standard split (train -> train, dev -> valid_seen, test ->
  valid_unseen), listed with `AlfredTWEnv.collect_game_files`.

The expert is ALFWorld's handcoded expert (default; state-aware: it observes every
command actually taken, so it keeps playing after the agent deviates), the PDDL
planner (``expert="planner"``: replans from the current state at every step), or the
imitable expert (``expert="imitable"``, `nightowl.envs.imitable_alfworld`): it acts
only on the episode's text and on statistics learned from train games, so a student
can agree with it; its games run without ALFWorld's expert wrapper and without facts.
With ``notes="search"`` or ``notes="plan"`` each observation ends with one line from the
same knowledge (`nightowl.envs.alfworld_notes`), so a student sees why the expert does
what it does.
The handcoded expert's random choices are seeded per task, so an expert episode
replays identically. Snapshots are action lists restored by replay.
"""

from __future__ import annotations

import contextlib
import io
import os
from functools import cached_property
from pathlib import Path
from typing import Any

from nightowl.envs import alfworld_gen
from nightowl.envs.alfworld_gen import TASK_TYPES
from nightowl.envs.base import Split, TaskSpec
from nightowl.envs.common import EngineStep, Episode, ReplayEnvironment, cache_dir_for
from nightowl.errors import EnvError, MissingExtraError, UnknownNameError

#: generated-game seeds per split
SPLIT_SEEDS: dict[str, range] = {
    "train": range(500),
    "dev": range(10_000, 10_050),
    "test": range(20_000, 20_050),
}
#: nightowl split -> ALFWorld's `AlfredTWEnv` split for the official games
OFFICIAL_SPLITS = {
    "train": "train",
    "dev": "eval_in_distribution",
    "test": "eval_out_of_distribution",
}
OFFICIAL_DIRS = {"train": "train", "dev": "valid_seen", "test": "valid_unseen"}
INVALID_FEEDBACK = "Nothing happens."
#: the experts an instance can use (``expert=``); the first is the default
EXPERTS = ("handcoded", "planner", "imitable")
#: what an observation may end with (``notes=``): nothing, the search notes, or the plan
#: notes (`nightowl.envs.alfworld_notes`)
NOTES = ("none", "search", "plan")


def import_alfworld(cache_dir: Path) -> Any:
    """Import alfworld with ``ALFWORLD_DATA`` pointing into the cache (not ``~/.cache``)."""
    os.environ.setdefault("ALFWORLD_DATA", str((cache_dir / "data").resolve()))
    try:
        import alfworld.agents.environment.alfred_tw_env as tw_env
        import alfworld.agents.expert.handcoded_expert  # noqa: F401
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in {"alfworld", "textworld", "fast_downward"}:
            raise MissingExtraError("ALFWorld", "alfworld", "alfworld") from None
        raise
    return tw_env


class AlfWorldEnv(ReplayEnvironment):
    """ALFWorld text games: generated (six task types) and, when installed, official."""

    name = "alfworld"
    has_expert = True
    default_max_steps = 50

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        max_steps: int | None = None,
        expert: str = "handcoded",
        notes: str = "none",
    ) -> None:
        super().__init__(max_steps=max_steps)
        if expert not in EXPERTS:
            raise UnknownNameError("alfworld expert", expert, list(EXPERTS))
        if notes not in NOTES:
            raise UnknownNameError("alfworld notes", notes, list(NOTES))
        self.notes = notes
        self.cache_dir = cache_dir_for("alfworld", cache_dir)
        self.games_dir = self.cache_dir / "games"
        self.expert = expert
        self._tw = import_alfworld(self.cache_dir)
        self.data_dir = Path(os.environ["ALFWORLD_DATA"])
        self.games = tuple(TASK_TYPES) + tuple(f"official-{t}" for t in self._official_types())
        self._env: Any = None
        self._state: Any = None
        # what the episode has shown: first observation, then (action, feedback) pairs
        self._first_text = self._goal = ""
        self._trace: list[tuple[str, str]] = []

    # --- catalogue ----------------------------------------------------------------------
    def seeds(self, game: str, split: Split) -> list[int]:
        """Generated games: the split's seed range; official: indexes into the split."""
        if game.startswith("official-"):
            return list(range(len(self._official_games(split).get(game, []))))
        return list(SPLIT_SEEDS[split])

    def game_params(self, game: str) -> dict[str, Any]:
        """The ALFWorld task type and where games come from."""
        kind = game.removeprefix("official-")
        source = "official" if game.startswith("official-") else "generated"
        return {"task_type": TASK_TYPES[kind], "source": source}

    def _official_types(self) -> list[str]:
        return [
            t
            for t in TASK_TYPES
            if any(self._official_games(s).get(f"official-{t}") for s in OFFICIAL_DIRS)
        ]

    @cached_property
    def _official_index(self) -> dict[str, dict[str, list[str]]]:
        root = self.data_dir / "json_2.1.1"
        config = {
            "dataset": {
                "data_path": str(root / OFFICIAL_DIRS["train"]),
                "eval_id_data_path": str(root / OFFICIAL_DIRS["dev"]),
                "eval_ood_data_path": str(root / OFFICIAL_DIRS["test"]),
                "num_train_games": -1,
                "num_eval_games": -1,
            },
            "env": {"task_types": [1, 2, 3, 4, 5, 6], "goal_desc_human_anns_prob": 0.0},
        }
        by_type = {v: k for k, v in TASK_TYPES.items()}
        out: dict[str, dict[str, list[str]]] = {}
        for split, tw_split in OFFICIAL_SPLITS.items():
            found: dict[str, list[str]] = {}
            # ALFWorld prints its progress (and a tqdm bar): keep it off the CLI's stdout
            quiet = io.StringIO()
            try:
                with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                    files = self._tw.AlfredTWEnv(config, train_eval=tw_split).game_files
            except Exception:  # noqa: BLE001 - a partial download lists nothing
                files = []
            for f in sorted(files):
                ttype = Path(f).parent.parent.name.split("-")[0]
                if ttype in by_type:
                    found.setdefault(f"official-{by_type[ttype]}", []).append(f)
            out[split] = found
        return out

    def _official_games(self, split: str) -> dict[str, list[str]]:
        if not (self.data_dir / "json_2.1.1").is_dir():
            return {}
        return self._official_index.get(split, {})

    # --- engine -------------------------------------------------------------------------
    def gamefile(self, spec: TaskSpec) -> Path:
        """The game file of a task (generated on first use)."""
        if spec.game.startswith("official-"):
            return Path(self._official_games(spec.split)[spec.game][spec.seed])
        return alfworld_gen.generate(
            self.games_dir, spec.game, spec.split, spec.seed, max_steps=self.default_max_steps
        )

    def _start(self, spec: TaskSpec) -> tuple[str, str, tuple[str, ...] | None, dict[str, Any]]:
        self.close()
        try:
            gamefile = self.gamefile(spec)
        except RuntimeError as exc:
            raise EnvError(f"alfworld: cannot build {spec.task_id}: {exc}") from exc
        # The generator verified the expert with this same seed for its random choices.
        self._env = alfworld_gen.start_game(
            gamefile, expert=None if self.expert == "imitable" else self.expert,
            rng_seed=spec.task_id,
        )
        self._state = self._env.reset()
        text = self._state.feedback.strip()
        self._first_text, self._trace = text, []
        self._goal = (
            text.rsplit("Your task is to:", 1)[-1].strip().rstrip(".")
            if "Your task is to:" in text
            else text
        )
        info = {"gamefile": str(gamefile), "expert": self.expert, "notes": self.notes}
        return self._goal, self._noted(text), self._valid(), info

    def _valid(self) -> tuple[str, ...]:
        return tuple(self._state["admissible_commands"] or ())

    def _engine_step(self, action: str) -> EngineStep:
        valid = self._valid()
        self._state, _, done = self._env.step(action)
        text = (self._state.feedback or "").strip() or INVALID_FEEDBACK
        won = bool(self._state["won"])
        invalid = text == INVALID_FEEDBACK or action not in valid
        self._trace.append((action, text))
        return EngineStep(
            text=self._noted(text),
            score=float(won),
            done=bool(done) or won,
            won=won,
            valid_actions=self._valid(),
            invalid=invalid,
        )

    def _noted(self, text: str) -> str:
        """``text``, with the notes line appended (``notes="search"`` or ``"plan"``)."""
        if self.notes == "none":
            return text
        from nightowl.envs.alfworld_notes import plan_note, search_note

        note = plan_note if self.notes == "plan" else search_note
        line = note(self._imitable, self._goal, self._first_text, self._trace)
        return f"{text}\n{line}" if line else text

    @cached_property
    def _imitable(self) -> Any:
        from nightowl.envs.imitable_alfworld import ImitableAlfredExpert, train_stats

        return ImitableAlfredExpert(train_stats(self.cache_dir))

    def _expert(self, episode: Episode) -> str | None:
        if self.expert == "imitable":  # the goal, the texts so far and the valid actions only
            return self._imitable.act(  # type: ignore[no-any-return]
                episode.goal, self._first_text, self._trace, episode.valid_actions or ()
            )
        plan = self._state["extra.expert_plan"] if self._state is not None else None
        return plan[0] if plan else None

    def close(self) -> None:
        """Close the running TextWorld game."""
        if self._env is not None:
            with contextlib.suppress(Exception):  # closing a dead game is not an error
                self._env.close()
            self._env = None

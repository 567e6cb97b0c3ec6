"""TextWorld adapter (``tw``): games generated locally by TextWorld's challenge generators.

Games (``cooking``, ``coin_collector``, ``treasure_hunter``, ``simple``) are generated
on first use from (challenge, settings, seed, TextWorld version) and cached as
``<cache_dir>/<game>-<seed>-<hash>.z8`` (+ its ``.json``), where ``cache_dir`` defaults
to ``<settings.resolved_cache_dir>/textworld``. Generation takes seconds per game (Inform 7
compiles it); a cached game starts in ~0.1 s. Inform 7 writes a scratch ``~/Inform``
folder while compiling, so ``HOME`` points into the cache folder during compilation
(under a lock; restored afterwards).

Expert: TextWorld's ``policy_commands`` (``expert="policy"``, the default), a winning
command sequence recomputed by its logic engine from the *current* state, so it stays
correct after any deviation; it is None only when no winning sequence exists (the game
is lost). ``expert="imitable"`` (`nightowl.envs.imitable_textworld`) acts only on the
episode's text instead (cooking: explore for the kitchen, read the cookbook, gather
and prepare what it says; coin_collector / treasure_hunter: follow the route the goal
describes); its games request no ``policy_commands`` at all. With ``notes="plan"`` a
cooking game's observations end with one line on the imitable expert's plan
(`nightowl.envs.imitable_textworld.cooking_note`: cookbook read or not, what is still to
take and to do), so a student sees why that expert does what it does.

Snapshots replay the action list by default: a replay costs a reset (~50 ms when the
game is already loaded) plus ~15 ms per action, while a native copy (``env.copy()``: the
Z-machine and TextWorld's state tracking) costs ~0.5 s both to take and to restore
(bench/envs.py). ``native_snapshots=True`` switches to native copies, which pay off
only for snapshots deeper than ~30 actions.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from nightowl.envs._tw_engine import TEXTWORLD_ENGINE_LOCK
from nightowl.envs.base import Snapshot, Split, TaskSpec
from nightowl.envs.common import EngineStep, Episode, ReplayEnvironment, cache_dir_for
from nightowl.errors import EnvError, MissingExtraError, UnknownNameError

try:
    import textworld
    import textworld.challenges
    from textworld import EnvInfos, GameOptions
except ImportError as exc:  # the envs extra; say what is missing
    raise MissingExtraError("TextWorld", "envs", "textworld") from exc

#: our game name -> TextWorld challenge name
CHALLENGES: dict[str, str] = {
    "cooking": "tw-cooking",
    "coin_collector": "tw-coin_collector",
    "treasure_hunter": "tw-treasure_hunter",
    "simple": "tw-simple",
}
GAMES: tuple[str, ...] = tuple(CHALLENGES)

#: small defaults (cooking as in the in-context-distillation probe); ``game_params=`` overrides
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "cooking": {
        "recipe": 1,
        "take": 1,
        "go": 6,
        "open": True,
        "cook": False,
        "cut": False,
        "drop": False,
        "recipe_seed": 0,
    },
    "coin_collector": {"level": 5},
    "treasure_hunter": {"level": 3},
    "simple": {"rewards": "dense", "goal": "detailed"},
}

#: a split's seeds are `ReplayEnvironment.split_seeds`; cooking also switches TextWorld's
#: food split (train/valid/test) and simple its object set (test=True only for our test split)
_COOKING_SPLIT = {"train": "train", "dev": "valid", "test": "test"}

INFOS = EnvInfos(
    admissible_commands=True,
    policy_commands=True,
    objective=True,
    won=True,
    lost=True,
    score=True,
    max_score=True,
)

#: what an imitable expert's game requests: no policy_commands (the privileged plan)
PLAYER_INFOS = EnvInfos(
    admissible_commands=True, objective=True, won=True, lost=True, score=True, max_score=True
)
#: the experts an instance can use (``expert=``); the first is the default
EXPERTS = ("policy", "imitable")
#: what an observation may end with (``notes=``): nothing, or the cooking plan notes
NOTES = ("none", "plan")
#: games with an imitable expert
IMITABLE_GAMES = ("cooking", "coin_collector", "treasure_hunter")

_BANNER_LINE = re.compile(r"^[^A-Za-z]*$")


def challenge_settings(game: str, params: dict[str, Any], split: Split) -> dict[str, Any]:
    """The settings dict TextWorld's challenge ``make`` receives."""
    settings = dict(params)
    if game == "cooking":
        settings["split"] = _COOKING_SPLIT[split]
    elif game == "simple":
        settings["test"] = split == "test"
    return settings


def game_path(cache_dir: Path, game: str, settings: dict[str, Any], seed: int) -> Path:
    """Where the game for (game, settings, seed) is cached."""
    fields = {"challenge": CHALLENGES[game], "settings": settings, "seed": seed}
    key = json.dumps({**fields, "tw": textworld.__version__}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return cache_dir / f"{game}-{seed}-{digest}.z8"


def generate_game(cache_dir: Path, game: str, settings: dict[str, Any], seed: int) -> Path:
    """Generate (or find in the cache) a TextWorld game; returns the ``.z8`` path."""
    path = game_path(cache_dir, game, settings, seed)
    if path.is_file() and path.with_suffix(".json").is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    _, make, _ = textworld.challenges.CHALLENGES[CHALLENGES[game]]
    with TEXTWORLD_ENGINE_LOCK:  # generation and start share one parser (`_tw_engine`)
        if path.is_file() and path.with_suffix(".json").is_file():
            return path
        tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=cache_dir))
        home = cache_dir / ".inform-home"
        home.mkdir(exist_ok=True)
        old_home = os.environ.get("HOME")
        try:
            opts = GameOptions()
            opts.seeds = seed
            opts.path = str(tmp / path.name)
            opts.force_recompile = True
            os.environ["HOME"] = str(home)  # Inform 7 writes ~/Inform while compiling
            made = make(dict(settings), opts)
            built = Path(textworld.generator.compile_game(made, opts))
            # json first: a .z8 without its .json is never visible to readers
            os.replace(built.with_suffix(".json"), path.with_suffix(".json"))
            os.replace(built, path)
        except Exception as exc:
            raise EnvError(f"TextWorld could not generate {game} seed {seed}: {exc}") from exc
        finally:
            if old_home is None:
                os.environ.pop("HOME", None)
            else:
                os.environ["HOME"] = old_home
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _quiet_jericho() -> warnings.catch_warnings:
    """Silence Jericho's "not fully supported" warning for TextWorld's games.

    It concerns Jericho's own score detection; TextWorld keeps the score itself.
    """
    return warnings.catch_warnings(action="ignore")


def _clean_feedback(text: str) -> str:
    """Drop the ASCII-art banner and surrounding blank lines."""
    lines = text.splitlines()
    while lines and _BANNER_LINE.match(lines[0]):
        lines.pop(0)
    return "\n".join(lines).strip()


class TextWorldEnv(ReplayEnvironment):
    """Locally generated TextWorld games with state-aware policy-command experts."""

    name = "tw"
    has_expert = True
    games = GAMES
    default_max_steps = 50

    def __init__(
        self,
        *,
        max_steps: int | None = None,
        games: list[str] | tuple[str, ...] | None = None,
        game_params: dict[str, dict[str, Any]] | None = None,
        cache_dir: Path | None = None,
        native_snapshots: bool = False,
        expert: str = "policy",
        notes: str = "none",
    ) -> None:
        super().__init__(max_steps=max_steps, games=games)
        if expert not in EXPERTS:
            raise UnknownNameError("tw expert", expert, list(EXPERTS))
        if notes not in NOTES:
            raise UnknownNameError("tw notes", notes, list(NOTES))
        self.expert = expert
        self.notes = notes
        self.native_snapshots = native_snapshots
        self._params = self._merge_params(DEFAULT_PARAMS, game_params)
        self.cache_dir = cache_dir_for("textworld", cache_dir)
        self._tw: Any = None
        self._tw_path: Path | None = None
        self._state: Any = None
        # what the episode has shown (the imitable expert's input)
        self._first_text = ""
        self._trace: list[tuple[str, str]] = []

    # --- catalogue ----------------------------------------------------------------------
    def game_params(self, game: str) -> dict[str, Any]:
        """The challenge settings used for ``game`` (before the per-split keys)."""
        return dict(self._params[game])

    def game_file(self, task_id: str) -> Path:
        """The task's compiled game (generated now if it is not cached)."""
        spec = self.spec(task_id)
        settings = challenge_settings(spec.game, self._params[spec.game], spec.split)
        return generate_game(self.cache_dir, spec.game, settings, spec.seed)

    # --- engine -------------------------------------------------------------------------
    def _start(self, spec: TaskSpec) -> tuple[str, str, tuple[str, ...] | None, dict[str, Any]]:
        if self.expert == "imitable" and spec.game not in IMITABLE_GAMES:
            raise EnvError(f"tw: no imitable expert for {spec.game!r} "
                           f"(games with one: {', '.join(IMITABLE_GAMES)})")
        path = self.game_file(spec.task_id)
        if self._tw is None or self._tw_path != path:
            self._close_tw()
            infos = PLAYER_INFOS if self.expert == "imitable" else INFOS
            try:
                with TEXTWORLD_ENGINE_LOCK, _quiet_jericho():
                    self._tw = textworld.start(str(path), request_infos=infos)
            except Exception as exc:
                raise EnvError(f"TextWorld could not start {path}: {exc}") from exc
            self._tw_path = path
        with _quiet_jericho():
            state = self._tw.reset()
        self._state = state
        info = {"params": self.game_params(spec.game), "max_score": state["max_score"],
                "expert": self.expert, "notes": self.notes}
        valid = tuple(state["admissible_commands"] or ())
        self._first_text, self._trace = _clean_feedback(state.feedback), []
        return str(state["objective"] or ""), self._noted(self._first_text, spec.game), valid, info

    def _engine_step(self, action: str) -> EngineStep:
        before = {a.lower() for a in (self.episode.valid_actions or ())}
        state, _, done = self._tw.step(action)
        self._state = state
        won, lost = bool(state["won"]), bool(state["lost"])
        text = _clean_feedback(state.feedback) or "Nothing happens."
        self._trace.append((action, text))
        return EngineStep(
            text=self._noted(text, self.episode.spec.game),
            score=float(state["score"] or 0),
            done=bool(done) or won or lost,
            won=won,
            valid_actions=tuple(state["admissible_commands"] or ()),
            invalid=action.lower() not in before,
            info={"lost": lost, "max_score": state["max_score"]},
        )

    def _noted(self, text: str, game: str) -> str:
        """``text``, with the cooking plan line appended when ``notes="plan"``."""
        if self.notes == "none" or game != "cooking":
            return text
        from nightowl.envs.imitable_textworld import cooking_note

        return f"{text}\n{cooking_note(self._first_text, self._trace)}"

    def _expert(self, episode: Episode) -> str | None:
        if self.expert == "imitable":
            from nightowl.envs.imitable_textworld import cooking_action, route_action

            act = cooking_action if episode.spec.game == "cooking" else route_action
            return act(episode.goal, self._first_text, self._trace, episode.valid_actions or ())
        policy = self._state["policy_commands"] if self._state is not None else None
        return str(policy[0]) if policy else None

    # --- native snapshots ---------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Action list, plus a native engine copy when ``native_snapshots`` is on."""
        if not self.native_snapshots:
            return super().snapshot()
        ep = self.episode
        seen = (self._first_text, list(self._trace))  # the imitable expert's input
        native = (self._copy_tw(self._tw), self._state, copy.deepcopy(ep), seen)
        return Snapshot(task_id=ep.spec.task_id, actions=tuple(ep.actions), native=native)

    def restore(self, snapshot: Snapshot) -> None:
        """Restore a native copy when there is one (and it is ours), else replay."""
        native = snapshot.native
        if not (isinstance(native, tuple) and len(native) == 4):
            super().restore(snapshot)
            return
        env, state, episode, (first_text, trace) = native
        self._first_text, self._trace = first_text, list(trace)
        self._close_tw()
        self._tw = self._copy_tw(env)  # keep the snapshot reusable
        self._tw_path = self.game_file(snapshot.task_id)
        self._state = state
        self._episode = copy.deepcopy(episode)

    @staticmethod
    def _copy_tw(env: Any) -> Any:
        with _quiet_jericho():
            return env.copy()

    def _close_tw(self) -> None:
        if self._tw is not None:
            with contextlib.suppress(Exception):  # closing a finished engine may fail harmlessly
                self._tw.close()
        self._tw, self._tw_path = None, None

    def close(self) -> None:
        """Close the game engine."""
        self._close_tw()

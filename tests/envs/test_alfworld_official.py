"""ALFWorld official games (issue 25): the same commands run on ``$ALFWORLD_DATA``.

The official data (``alfworld-download``) cannot be fetched here, so the fixture builds a
tiny data dir in its layout from nightowl's own generated games:
``json_2.1.1/{train,valid_seen,valid_unseen}/<task_type>-<Object>-<Mrecep|None>-<Parent>-
<scene>/trial_T.../{game.tw-pddl,traj_data.json}`` -- what
`AlfredTWEnv.collect_game_files` walks (a ``traj_data.json`` with ``task_type``, a
``game.tw-pddl`` whose ``solvable`` is true; paths with ``movable``/``Sliced`` skipped)
and what the handcoded expert reads (``pddl_params`` next to the game file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conformance.env_suite import REPO

pytestmark = pytest.mark.alfworld

#: official split dir -> (generated game type, its split, seed) copied into it
LAYOUT = {
    "train": [("pick", "train", 0), ("pick", "train", 1), ("look", "train", 0)],
    "valid_seen": [("pick", "dev", 10000)],
    "valid_unseen": [("pick", "test", 20000), ("look", "test", 20000)],
}
#: games ``collect_game_files`` must skip (not counted): an unsolvable one, and a sliced
#: object's and a movable receptacle's task dirs (named as in the official data)
SKIPPED = {"train": ("unsolvable", "movable"), "valid_unseen": ("sliced",)}
#: the catalogue the fixture should give: game -> split -> number of games
COUNTS = {
    "official-pick": {"train": 2, "dev": 1, "test": 1},
    "official-look": {"train": 1, "dev": 0, "test": 1},
}


def _official_dir(split_dir: Path, traj: dict, trial: str, skip: str = "") -> Path:
    p = traj["pddl_params"]
    ttype = "pick_and_place_with_movable_recep" if skip == "movable" else traj["task_type"]
    obj = p["object_target"] + ("Sliced" if skip == "sliced" else "")
    name = (f"{ttype}-{obj}-{p['mrecep_target'] or 'None'}-{p['parent_target']}-"
            f"{traj['scene']['scene_num']}")
    return split_dir / name / trial


def _write_game(folder: Path, gamefile: Path, split: str, *, solvable: bool = True) -> None:
    folder.mkdir(parents=True)
    game = json.loads(gamefile.read_text())
    game["solvable"] = solvable
    (folder / "game.tw-pddl").write_text(json.dumps(game))
    traj = json.loads((gamefile.parent / "traj_data.json").read_text())
    traj.pop("nightowl", None)  # an official traj_data carries no generator record
    traj.update(task_id=folder.name, split=split)
    (folder / "traj_data.json").write_text(json.dumps(traj))
    (folder / "initial_state.pddl").write_text(game["pddl_problem"])


@pytest.fixture(scope="module")
def official_data(tmp_path_factory) -> Path:
    """An ``$ALFWORLD_DATA`` with six solvable games (plus three skipped) in the official
    layout, copied from generated games (cached under ``.nightowl/cache/alfworld``)."""
    pytest.importorskip("alfworld", reason="needs the alfworld extra (make test-envs)")
    from nightowl.envs import alfworld_gen

    games = Path(os.environ.get("NIGHTOWL_TEST_ALFWORLD_CACHE",
                                REPO / ".nightowl/cache/alfworld")) / "games"
    data = tmp_path_factory.mktemp("alfworld-data")
    for k, (split, entries) in enumerate(LAYOUT.items()):
        for i, (game, gen_split, seed) in enumerate(entries):
            gamefile = alfworld_gen.generate(games, game, gen_split, seed)
            traj = json.loads((gamefile.parent / "traj_data.json").read_text())
            trial = f"trial_T2019090{k}_0{i}0000_000000"
            _write_game(_official_dir(data / "json_2.1.1" / split, traj, trial), gamefile, split)
        for skip in SKIPPED.get(split, ()):
            gamefile = alfworld_gen.generate(games, "pick", "train", 0)
            traj = json.loads((gamefile.parent / "traj_data.json").read_text())
            folder = _official_dir(data / "json_2.1.1" / split, traj, "trial_T20190909_9", skip)
            _write_game(folder, gamefile, split, solvable=skip != "unsolvable")
    return data


@pytest.fixture(scope="module")
def env(official_data):
    from nightowl.envs.registry import make_env

    with pytest.MonkeyPatch.context() as mp:  # read when the environment is built
        mp.setenv("ALFWORLD_DATA", str(official_data))
        e = make_env("alfworld")
    yield e
    e.close()


@pytest.fixture
def cli_home(official_data, tmp_path, monkeypatch):
    """A fresh home and SQLite ledger for the CLI, with ``ALFWORLD_DATA`` on the fixture."""
    from nightowl.config import get_settings
    from tests.agent.fakes import fake_student_env

    fake_student_env(monkeypatch, tmp_path)
    monkeypatch.setenv("ALFWORLD_DATA", str(official_data))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_catalogue_lists_official_games_per_split(env, official_data):
    assert env.data_dir == official_data
    assert env.games == ("pick", "look", "clean", "heat", "cool", "pick2",
                         "official-pick", "official-look")
    for game, counts in COUNTS.items():
        for split, n in counts.items():
            ids = env.task_ids(split, game)
            assert ids == [f"alfworld/{game}/{split}/{i}" for i in range(n)], (game, split)
    spec = env.spec("alfworld/official-look/test/0")
    assert spec.params == {"task_type": "look_at_obj_in_light", "source": "official"}
    # index order is the sorted game paths of ALFWorld's split dir
    train = [Path(env.gamefile(env.spec(f"alfworld/official-pick/train/{i}"))) for i in (0, 1)]
    assert all(p.parent.parent.parent == official_data / "json_2.1.1" / "train" for p in train)
    assert train == sorted(train)
    dev = env.gamefile(env.spec("alfworld/official-pick/dev/0"))
    assert dev.parent.parent.parent.name == "valid_seen"
    test = env.gamefile(env.spec("alfworld/official-pick/test/0"))
    assert test.parent.parent.parent.name == "valid_unseen"
    assert not any(s in str(p) for p in (*train, dev, test) for s in ("movable", "Sliced"))


def test_cli_tasks_lists_official_ids(cli_home, monkeypatch, capsys):
    from tests.cli.test_json import _main

    code, out, err = _main(monkeypatch, capsys, "envs", "tasks", "alfworld", "--split", "train",
                           "--game", "official-pick")
    assert code == 0, err
    # stdout holds the ids only (ALFWorld's own progress prints stay off it)
    assert [line.split("\t")[0] for line in out.splitlines()] == [
        "alfworld/official-pick/train/0", "alfworld/official-pick/train/1"]


@pytest.mark.parametrize("task_id", ["alfworld/official-pick/train/1",
                                     "alfworld/official-look/test/0"])
def test_expert_wins_official_game(env, task_id):
    obs = env.reset(task_id)
    assert "Your task is to" in obs.text and obs.goal
    assert obs.info["gamefile"].startswith(str(env.data_dir / "json_2.1.1"))
    assert obs.valid_actions and "look" in obs.valid_actions
    res = None
    for _ in range(env.default_max_steps):
        res = env.step(env.expert_action())
        if res.done:
            break
    assert res is not None and res.won and res.score == 1.0


def test_cli_run_teacher_wins_official_test_game(cli_home, monkeypatch, capsys):
    from nightowl.app.runs import RunSummary
    from tests.cli.test_json import _main

    code, out, err = _main(monkeypatch, capsys, "run", "--env", "alfworld", "--game",
                           "official-pick", "--split", "test", "--tasks", "1", "--ladder",
                           "teacher", "--concurrency", "1", "--json")
    assert code == 0, err
    summ = RunSummary.model_validate_json(out)  # nothing but the JSON on stdout
    assert summ.episodes == 1 and summ.ladder == "teacher"
    (episode,) = summ.episodes_detail
    assert episode["task_id"] == "alfworld/official-pick/test/0"
    assert episode["success"] is True and not episode["error"], episode
    assert summ.successes == 1


@pytest.mark.parametrize(
    ("task_id", "message"),
    [
        ("alfworld/official-pick/test/1", "unknown seed for alfworld/official-pick/test (0-0) '1'"),
        ("alfworld/official-look/dev/0", "unknown seed for alfworld/official-look/dev (none) '0'"),
        ("alfworld/official-heat/train/0", "unknown alfworld game 'official-heat'"),
    ],
)
def test_unknown_official_game_or_index_is_a_clear_error(env, task_id, message):
    from nightowl.errors import UnknownNameError

    with pytest.raises(UnknownNameError) as exc:
        env.reset(task_id)
    assert message in str(exc.value)
    if "game" in message:
        assert "official-pick" in str(exc.value)  # the known games are listed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task-ids", "alfworld/official-pick/dev/3"],
         "unknown dev task of alfworld 'alfworld/official-pick/dev/3'"),
        (["--game", "official-pick", "--split", "dev", "--offset", "1"],
         "unknown offset into the 1 dev tasks of alfworld/official-pick (0..0) '1'"),
        (["--game", "official-look", "--split", "dev"],
         "unknown dev tasks of 'alfworld/official-look'"),
    ],
)
def test_cli_run_past_the_split_is_a_one_line_error(cli_home, monkeypatch, capsys, args, message):
    from tests.cli.test_json import _main

    code, _, err = _main(monkeypatch, capsys, "run", "--env", "alfworld", *args)
    assert code != 0 and "Traceback" not in err
    assert message in err

"""`nightowl envs list/tasks/play`."""

import json

from typer.testing import CliRunner

from nightowl.cli.main import app

runner = CliRunner()


def test_list_shows_every_environment_with_counts():
    res = runner.invoke(app, ["envs", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert list(rows)[:3] == ["twx", "tw", "sciworld"]
    assert {"alfworld", "appworld", "multihop"} <= set(rows)
    assert rows["twx"]["counts"] == {"train": 8000, "dev": 8000, "test": 8000}
    assert rows["sciworld"]["counts"]["test"] > 0 and rows["sciworld"]["installed"]
    table = runner.invoke(app, ["envs", "list"])
    assert table.exit_code == 0 and "twx" in table.output and "8,000" in table.output


def test_tasks_lists_ids_of_a_split():
    args = ["envs", "tasks", "twx", "--split", "test", "--game", "coin", "--limit", "2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("twx/coin/test/20000\t")
    assert lines[1].startswith("twx/coin/test/20001")
    assert "998 more" in lines[2]
    bad = runner.invoke(app, ["envs", "tasks", "twx", "--split", "holdout"])
    assert bad.exit_code == 2


def test_play_expert_wins_with_progress():
    # mapreader: its gold path is a shortest path (7 steps here); coin's is a random walk
    # whose length depends on the JVM's global RNG, i.e. on the games generated before
    args = ["envs", "play", "twx/mapreader/test/20000", "--expert", "--max-steps", "20"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "take coin" in res.output and "won" in res.output


def test_play_interactive_reads_actions():
    res = runner.invoke(app, ["envs", "play", "twx/coin/test/20003"], input="xyzzy\nvalid\nquit\n")
    assert res.exit_code == 0, res.output
    assert "(invalid)" in res.output and "take coin" not in res.output.split("valid")[0]


def test_play_unknown_task_is_a_one_line_error():
    res = runner.invoke(app, ["envs", "play", "twx/chess/test/1", "--expert"])
    assert res.exit_code == 2
    assert "unknown twx game 'chess'" in res.output and "coin" in res.output

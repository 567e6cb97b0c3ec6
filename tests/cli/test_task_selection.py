"""`nightowl run` picks tasks as a user would: a slice of a split (--offset, --tasks),
named ids (--task-ids) or a file of ids (--task-file); bad ids are clear errors."""

import pytest

from nightowl.app.runs import RunSummary
from nightowl.envs.registry import check_task_ids, select_tasks
from nightowl.errors import UnknownNameError
from tests.cli.test_json import _main


def _ran(monkeypatch, capsys, *args: str) -> list[str]:  # type: ignore[no-untyped-def]
    code, out, err = _main(monkeypatch, capsys, "run", "--env", "twx", "--max-steps", "2",
                           "--ladder", "teacher", "--concurrency", "1", "--json", *args)
    assert code == 0, err
    summary = RunSummary.model_validate_json(out)
    return [e["task_id"] for e in summary.episodes_detail]


def test_offset_takes_the_next_slice(fake_setup, monkeypatch, capsys):
    first4 = select_tasks("twx", "test", 4, game="coin")
    got = _ran(monkeypatch, capsys, "--game", "coin", "--tasks", "2", "--offset", "2")
    assert sorted(got) == sorted(first4[2:4])


def test_task_ids_and_task_file(fake_setup, monkeypatch, capsys, tmp_path):
    ids = select_tasks("twx", "dev", 3, game="coin")
    got = _ran(monkeypatch, capsys, "--task-ids", f"{ids[2]},{ids[0]}")
    assert sorted(got) == sorted([ids[2], ids[0]])
    listing = tmp_path / "tasks.txt"
    listing.write_text(f"# two dev tasks\n{ids[1]}\n\n{ids[0]}  # the first\n")
    got = _ran(monkeypatch, capsys, "--task-file", str(listing))
    assert sorted(got) == sorted([ids[1], ids[0]])


@pytest.mark.parametrize("bad", ["twx/coin/test/nope", "tw/coin/test/1", "twx/coin/test/99999999",
                                 "twx/coin"])
def test_bad_task_ids_are_user_errors(fake_setup, monkeypatch, capsys, bad):
    with pytest.raises(UnknownNameError):
        check_task_ids("twx", [bad])
    code, _, err = _main(monkeypatch, capsys, "run", "--env", "twx", "--task-ids", bad)
    assert code != 0 and "Traceback" not in err and "unknown" in err


def test_offset_past_the_end_is_an_error(fake_setup, monkeypatch, capsys):
    n = len(select_tasks("twx", "dev", 10_000, game="coin"))
    code, _, err = _main(monkeypatch, capsys, "run", "--env", "twx", "--game", "coin",
                         "--split", "dev", "--offset", str(n))
    assert code != 0 and "offset" in err

"""--json on the reporting commands: stdout is one JSON document that validates against
the command's pydantic schema (`nightowl schema NAME`); progress goes to stderr."""

import json
import sys

import pytest
from typer.testing import CliRunner

from nightowl.cli._schemas import json_schema, schemas
from nightowl.cli.main import app, main

runner = CliRunner()


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sys, "argv", ["nightowl", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_collect_and_run_json(fake_setup, monkeypatch, capsys):
    from nightowl.app.collect import CollectResult
    from nightowl.app.runs import RunSummary

    code, out, _ = _main(monkeypatch, capsys, "collect", "--env", "twx", "--game", "coin",
                         "--tasks", "1", "--max-steps", "2", "--json")
    assert code == 0, out
    col = CollectResult.model_validate_json(out)
    assert col.episodes == 1
    code, out, err = _main(monkeypatch, capsys, "run", "--env", "twx", "--game", "coin",
                           "--tasks", "1", "--max-steps", "3", "--ladder", "teacher", "--json")
    assert code == 0, err
    summ = RunSummary.model_validate_json(out)  # nothing but the JSON on stdout
    assert summ.episodes == 1 and summ.ladder == "teacher"
    code, out, _ = _main(monkeypatch, capsys, "ledger", "show", summ.run_id, "--json",
                         "--episodes")
    data = json.loads(out)
    assert data["report"]["run_id"] == summ.run_id
    assert len(data["episodes"]) == 1 and data["episodes"][0]["task_id"].startswith("twx")


def test_keys_list_json_never_prints_the_key(fake_setup):
    from nightowl.chat import KeyStore
    from nightowl.storage import open_db

    plaintext, key = KeyStore(open_db(url=fake_setup)).create("ci", budget_usd=1.5)
    res = runner.invoke(app, ["keys", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert rows[0]["id"] == key.id and rows[0]["budget_usd"] == 1.5
    assert plaintext not in res.output


@pytest.mark.parametrize("name", sorted(schemas()))
def test_every_schema_prints(name):
    res = runner.invoke(app, ["schema", name])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == json_schema(name)


def test_unknown_schema_lists_known(monkeypatch, capsys):
    code, _, err = _main(monkeypatch, capsys, "schema", "nope")
    assert code == 2 and "run" in err


def test_collect_twice_skips_then_replaces_never_duplicates(fake_setup, monkeypatch, capsys):
    from nightowl.app.collect import CollectResult
    from nightowl.config import load_settings
    from nightowl.memory.collected import collected_demos
    from nightowl.storage import open_db

    args = ("collect", "--env", "twx", "--game", "coin", "--tasks", "2", "--max-steps", "40",
            "--json")
    first = CollectResult.model_validate_json(_main(monkeypatch, capsys, *args)[1])
    assert first.successes == 2 and first.demos_added == 2  # the oracle wins coin
    db = open_db(load_settings())

    def demos() -> dict[str, list[str]]:
        from nightowl.envs.registry import select_tasks

        return collected_demos(db, "twx", select_tasks("twx", "train", 2, game="coin"),
                               "oracle")

    before = demos()
    assert all(len(v) == 1 for v in before.values()) and len(before) == first.successes
    second = CollectResult.model_validate_json(_main(monkeypatch, capsys, *args)[1])
    assert sorted(second.skipped) == sorted(before) and second.demos_added == 0
    assert demos() == before  # skipped: nothing new
    code, out, err = _main(monkeypatch, capsys, *args, "--existing", "replace")
    third = CollectResult.model_validate_json(out)
    assert code == 0 and third.skipped == [] and third.replaced == third.demos_added == 2
    after = demos()
    assert set(after) == set(before) and all(len(v) == 1 for v in after.values())
    assert all(after[t] != before[t] for t in after), (before, after, third)
    code, _, err = _main(monkeypatch, capsys, *args, "--existing", "both")
    assert code == 2 and "--existing must be 'skip' or 'replace'" in err

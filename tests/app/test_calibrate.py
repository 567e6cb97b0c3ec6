"""`calibrate` end to end with the real embedded student: score dev states, play rules on dev."""

from __future__ import annotations

import pytest

from nightowl.app import CalibrateOptions, CollectRequest, Nightowl, calibrate_rules, collect_demos
from nightowl.config import load_settings
from nightowl.memory.embedder import HashingEmbedder


@pytest.fixture(scope="module")
def has_smollm2():
    from nightowl.llm.registry import build_backend

    try:
        build_backend("smollm2")
    except Exception as exc:  # pragma: no cover - weights missing on this machine
        pytest.skip(f"embedded model unavailable: {exc}")


async def test_calibrate_plays_frontier_rules_on_dev(tmp_path, has_smollm2):
    with Nightowl.open(load_settings(home=tmp_path), embedder=HashingEmbedder()) as app:
        await collect_demos(app, CollectRequest(env="twx", game="simonsays", tasks=4))
        demos_before = app.memory.stats().demos
        events: list = []
        rep = await calibrate_rules(app, CalibrateOptions(
            env="twx", game="simonsays", tasks=1, min_states=4, target=0.9, verify=2,
            temperatures=[0.5], ns=[1, 3], margins=[0.0, 2.0], rollout_max_steps=8),
            progress=events.append)
        runs = [r for r in app.ledger.list_runs() if r.kind == "calibrate"]
        demos_after = app.memory.stats().demos
    assert rep.predicted_choice is not None
    # the evidence floor: one task of simonsays scores ~3 states < 4, so a second is
    # walked, and the rules are played on both
    assert rep.states >= 4 and len(rep.dev_task_ids) == 2
    from nightowl.app.events import PhaseAdvanced, PhaseStarted

    more = [e for e in events if isinstance(e, PhaseStarted) and e.key == "calibrate-more"]
    assert len(more) == 1 and "--min-states 4" in more[0].label  # its own progress bar
    assert sum(isinstance(e, PhaseAdvanced) and e.key == "calibrate-more" for e in events) == 1
    teacher, *played = rep.rollouts
    assert teacher["spec"] == "teacher" and teacher["dev_episodes"] == 2
    assert teacher["dev_success"] == 1.0  # the oracle wins simonsays
    # the first rule is played with the student exploring on repeats; a replay with
    # repeats escalated comes only after that lost a dev episode (one rollout more)
    assert 1 <= len(played) <= 3 and len(runs) == 1 + len(played)
    assert played[0]["repeats"] == "explore"
    if any(p["repeats"] == "escalate" for p in played):
        assert played[0]["dev_success"] < 0.9 and played[1]["repeats"] == "escalate"
    assert all(p["dev_episodes"] == 2 and p["dev_cost_per_episode"] > 0 for p in played)
    assert demos_after == demos_before  # dev rollouts never become demos
    if rep.student_pays:  # the choice is a played rule that kept success and saved enough
        assert rep.chosen in played and rep.chosen["dev_success"] >= 0.9
        assert rep.chosen["dev_cost_per_episode"] * 1.2 <= teacher["dev_cost_per_episode"]
    else:
        assert rep.chosen["spec"] == "teacher" and "cannot pay" in rep.verdict
    # the CLI table shows the measured dev columns for the rules that were played
    from rich.console import Console

    from nightowl.cli._tables import calibration_table

    con = Console(record=True, width=200)
    con.print(calibration_table(rep))
    text = con.export_text()
    assert "dev success" in text and f"{played[0]['dev_successes']}/2" in text
    # each played rule's dev saving, and the saving calibrate required of it
    from nightowl.distill.calibrate import required_saving

    assert "x cheaper (needs)" in text
    need = required_saving(played[-1], teacher, 1.2, 0.8)
    assert f"({need:.2f}x)" in text or need == float("inf") and "(infx)" in text
    assert text.count(" *") == 1  # exactly one chosen row
    assert "teacher only" in text
    full = Console(record=True, width=200)
    full.print(calibration_table(rep, all_rules=True))
    n_rows = sum(1 for line in full.export_text().splitlines() if "$" in line)
    assert n_rows == len(rep.candidates)  # --all-rules: every candidate has a row
    shown = sum(1 for line in text.splitlines() if "$" in line)
    assert shown < n_rows and "more candidates off the predicted frontier" in text
    narrow = Console(record=True, width=80)  # nothing cut at 80 columns
    narrow.print(calibration_table(rep))
    text80 = narrow.export_text()
    assert "…" not in text80 and "x cheaper (needs)" in text80 and " *" in text80


async def test_dev_rollouts_escalate_repeats_where_exploring_lost_episodes(monkeypatch):
    """Control logic only (a scripted stand-in for `run_tasks`, no model): the first rule
    is played exploring; it loses dev episodes, so it is replayed with repeats escalated
    and every later rule is played that way too."""
    from types import SimpleNamespace

    import nightowl.app.calibrate as cal

    specs: list = []

    async def scripted_run_tasks(app, spec, progress=None):
        specs.append(spec)
        won = {"teacher": 3, "explore": 1, "escalate": 3}[
            "teacher" if spec.ladder == "teacher" else spec.repeats]
        cost = 1.0 if spec.ladder == "teacher" else 0.1
        return SimpleNamespace(run_id=f"r{len(specs)}", episodes=3, successes=won,
                               success_rate=won / 3, cost_per_episode=cost,
                               teacher_share=0.5, steps_per_episode=4.0)

    monkeypatch.setattr(cal, "run_tasks", scripted_run_tasks)
    pool = [{"rule": f"unanimity:{n}", "spec": f"unanimity:{n}", "temperature": 0.5,
             "predicted_success": n / 10, "predicted_cost_per_episode": n / 100}
            for n in (1, 2, 3)]
    opts = cal.CalibrateOptions(env="twx", game="coin", verify=2, target=0.9)
    teacher, rows = await cal.play_on_dev(None, opts, pool, pool[2], ["a", "b", "c"])
    assert teacher["dev_success"] == 1.0
    assert [(r["spec"], r["repeats"]) for r in rows] == [
        ("unanimity:1", "explore"),  # lost 2 of 3: dropped
        ("unanimity:1", "escalate"),
        ("unanimity:2", "escalate"),
    ]
    assert [s.repeats for s in specs[1:]] == ["explore", "escalate", "escalate"]
    best = cal.recommend_measured(rows, teacher, opts.target, opts.min_saving,
                                  opts.confidence)
    assert best["chosen"]["repeats"] == "escalate" and best["chosen"]["spec"] == "unanimity:1"


async def test_dev_states_leave_out_the_walk_back_as_the_student_tier_does(tmp_path, has_smollm2):
    """Calibration scores the student tier's candidates: after the expert's move, the way
    back is not scored while another exit is open (real mapreader games, real student)."""
    from nightowl.app.calibrate import collect_states
    from nightowl.distill.calibrate import CalibrateOptions as Opts
    from nightowl.distill.moves import direction, walks_back

    with Nightowl.open(load_settings(home=tmp_path), embedder=HashingEmbedder()) as app:
        states, _ = await collect_states(app, Opts(env="twx", game="mapreader", tasks=2,
                                                   min_states=0, max_steps=12))
    by_key = {(s.task_id, s.step): s for s in states}
    left = [s for s in states if s.left_out]
    assert left, "no state on these paths had the way back open next to another exit"
    for s in left:
        prev = by_key[(s.task_id, s.step - 1)].expert
        assert all(walks_back(prev, a) for a in s.left_out)
        assert any(direction(a) for a in s.actions)  # another exit stays
        assert not any(walks_back(prev, a) for a in s.actions)

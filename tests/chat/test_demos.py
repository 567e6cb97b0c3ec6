"""`TenantDemoStore`: chat demos as a `DemoStore` of one tenant (the whole contract runs in
tests/conformance/test_demo_store.py); here what is particular to chat demos."""

from __future__ import annotations

from nightowl.chat import ChatDemos
from nightowl.chat.tables import ChatDemoRow
from nightowl.chat.threads import utcnow
from nightowl.ledger import Ledger
from nightowl.memory import HashingEmbedder, StepRecord

Q = "How many apples does Tom have if he buys 6 bags of 7 apples?"


def test_tenants_never_see_each_others_demos(db) -> None:  # type: ignore[no-untyped-def]
    demos = ChatDemos(db, HashingEmbedder(dim=256), Ledger(db), min_score=-1.0)
    acme, globex = demos.for_tenant("acme"), demos.for_tenant("globex")
    assert demos.for_tenant("acme") is acme
    a_id = demos.keep("acme", Q, "acme: 42", context="user: hi")
    demos.keep("acme", "What is the capital of France?", "acme: Paris")
    g_id = demos.keep("globex", Q, "globex: 42")
    wins = acme.retrieve(Q, "", k_episodes=10)
    assert [w.demo_id for w in wins][0] == a_id and len(wins) == 2
    assert all(w.steps[0].action.startswith("acme") for w in wins)
    assert [w.rank for w in wins] == [0, 1]
    assert wins[0].steps[0].observation == "user: hi" and wins[0].goal == Q
    assert [w.demo_id for w in globex.retrieve(Q, "", k_episodes=10)] == [g_id]
    # deleting by the other tenant's episode or run removes nothing of this tenant
    assert globex.delete_episode(wins[0].episode_id) is False
    assert globex.delete_run(demos.run_id("acme")) == 0
    assert acme.count() == 2
    assert demos.run_id("acme") != demos.run_id("globex")
    assert Ledger(db).get_run(demos.run_id("acme")).name == "chat:acme"


def test_readding_replaces_the_reply_and_min_score_holds(db) -> None:  # type: ignore[no-untyped-def]
    ledger = Ledger(db)
    demos = ChatDemos(db, HashingEmbedder(dim=256), ledger, min_score=0.99)
    store = demos.for_tenant("acme")
    ep = ledger.start_episode(demos.run_id("acme"), "t", env="chat")
    demo_id = store.add_episode(ep, Q, [StepRecord(idx=0, observation="", action="old")])
    assert store.retrieve(Q, "")[0].steps[0].action == "old"
    assert store.add_episode(ep, Q, [StepRecord(idx=0, observation="", action="new")]) == demo_id
    assert [s.action for s in store.episode_steps(ep)] == ["new"]
    assert [w.steps[0].action for w in store.retrieve(Q, "")] == ["new"]
    assert store.retrieve("What is the capital of France?", "") == []  # below min_score


def test_rows_from_before_episodes_are_retrieved(db) -> None:  # type: ignore[no-untyped-def]
    emb = HashingEmbedder(dim=256)
    store = ChatDemos(db, emb, Ledger(db), min_score=0.5).for_tenant("acme")
    row = ChatDemoRow(
        tenant="acme",
        question=Q,
        context="",
        reply="legacy",
        embedder=emb.model_name,
        vector=emb.embed([Q])[0].tobytes(),
        created_at=utcnow(),
    )
    db.write(lambda s: s.add(row))
    (w,) = store.retrieve(Q, "")
    assert (w.episode_id, w.task_id, w.steps[0].action) == ("", "", "legacy")

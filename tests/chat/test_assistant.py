"""The Assistant's control logic with scripted fake models (FunctionModel) on real SQLite:
cascade accept/escalate, threads, demos per tenant, budgets, sleep-time context use."""

from __future__ import annotations

import pytest

from nightowl.chat import KeyStore
from nightowl.errors import BudgetExceededError, UserError
from nightowl.ledger import Ledger
from nightowl.llm.base import GenerationRequest
from nightowl.llm.scripted import FunctionModel, last_user_message


def agreeing(request: GenerationRequest) -> list[str]:
    return ["The answer is 12."] * request.n


def split(request: GenerationRequest) -> list[str]:
    return [f"The answer is {i}." for i in range(request.n)]


def teacher_fn(request: GenerationRequest) -> str:
    return f"Teacher: the answer is 42 ({last_user_message(request)[:20]})."


async def test_student_accepted_when_samples_agree(make_assistant) -> None:  # type: ignore[no-untyped-def]
    student, teacher = FunctionModel(agreeing), FunctionModel(teacher_fn)
    a = make_assistant(student, teacher, n=3, tau=0.67)
    reply = await a.chat([{"role": "user", "content": "What is 3 * 4?"}])
    assert reply.tier == "student" and reply.text == "The answer is 12."
    assert reply.agreement is not None and reply.agreement.share == 1.0
    assert len(student.calls) == 1 and student.calls[0].n == 3  # one batched call
    assert teacher.calls == []
    assert reply.cost_usd > 0
    calls = a.ledger.model_calls(a.run_id)
    assert [c.role for c in calls] == ["student"]
    assert calls[0].cost_usd == pytest.approx(reply.cost_usd)


async def test_escalates_and_keeps_demo_for_the_tenant_only(make_assistant) -> None:  # type: ignore[no-untyped-def]
    student, teacher = FunctionModel(split), FunctionModel(teacher_fn)
    a = make_assistant(student, teacher, n=3, tau=0.67, demo_min_score=0.3)
    q = "How many apples does Tom have if he buys 6 bags of 7 apples?"
    r1 = await a.chat([{"role": "user", "content": q}], tenant="acme")
    assert r1.tier == "teacher" and r1.text.startswith("Teacher")
    assert r1.agreement is not None and r1.agreement.share == pytest.approx(1 / 3)
    roles = [c.role for c in a.ledger.model_calls(a.run_id)]
    assert roles == ["student", "teacher"]
    # A similar later question of the same tenant sees the demo in the student prompt...
    await a.chat([{"role": "user", "content": q.replace("Tom", "Ann")}], tenant="acme")
    acme_prompt = student.calls[-1].messages[0].content
    assert "Worked examples" in acme_prompt and "Teacher: the answer is 42" in acme_prompt
    # ...another tenant's never does.
    await a.chat([{"role": "user", "content": q}], tenant="globex")
    globex_prompt = student.calls[-1].messages[0].content
    assert "Teacher: the answer is 42" not in globex_prompt
    assert "Worked examples" not in globex_prompt
    assert a.demos is not None and a.demos.for_tenant("globex").count() == 1
    assert a.demos.for_tenant("acme").count() == 2


async def test_thread_keeps_history_across_assistants(make_assistant) -> None:  # type: ignore[no-untyped-def]
    student = FunctionModel(agreeing)
    a = make_assistant(student, None, n=1)
    await a.chat([{"role": "user", "content": "Tom has 3 apples."}], thread="t1")
    # A new assistant (as after a restart) on the same database; only the new message sent.
    b = make_assistant(student, None, n=1)
    r = await b.chat([{"role": "user", "content": "How many does he have?"}], thread="t1")
    assert r.revision == 4
    sent = [m.content for m in student.calls[-1].messages[1:]]
    assert sent == ["Tom has 3 apples.", "The answer is 12.", "How many does he have?"]
    # Resending the whole history (OpenAI style) appends instead of duplicating.
    history = [{"role": m.role, "content": m.content} for m in student.calls[-1].messages[1:]]
    history += [{"role": "assistant", "content": r.text}, {"role": "user", "content": "And?"}]
    r2 = await b.chat(history, thread="t1")
    assert r2.revision == 6


async def test_learned_context_replaces_old_messages(make_assistant) -> None:  # type: ignore[no-untyped-def]
    def fn(request: GenerationRequest) -> list[str]:
        if "Write the notes" in (request.messages or ())[-1].content:
            return ["NOTES: Tom has 3 apples; Ann has 5."] * request.n
        return ["The answer is 8."] * request.n

    student = FunctionModel(fn)
    a = make_assistant(student, None, n=1, sleep=True)
    await a.chat([{"role": "user", "content": "Tom has 3 apples and Ann has 5."}], thread="s")
    rec = a.threads.open("default", "s")
    c = await a.sleeper.rethink_thread(rec.id)
    assert c is not None and c.revision == 2 and "NOTES" in c.text
    r = await a.chat([{"role": "user", "content": "How many together?"}], thread="s")
    assert r.learned_revision == 2
    prompt = student.calls[-1].messages
    assert "NOTES" in prompt[0].content
    assert [m.content for m in prompt[1:]] == ["How many together?"]
    # An append keeps c'; the next turn still uses it, plus the messages after r.
    r2 = await a.chat([{"role": "user", "content": "And Tom alone?"}], thread="s")
    assert r2.learned_revision == 2
    assert len(student.calls[-1].messages) == 4
    assert a.threads.idle_threads(0.0, min_new=2)[0].id == rec.id
    roles = {c.role for c in a.ledger.model_calls(a.run_id)}
    assert "sleep" in roles


async def test_budgets_per_thread_and_key(make_assistant, db) -> None:  # type: ignore[no-untyped-def]
    a = make_assistant(FunctionModel(agreeing), None, n=1, thread_budget_usd=1e-9)
    await a.chat([{"role": "user", "content": "hi"}], thread="b")
    with pytest.raises(BudgetExceededError):
        await a.chat([{"role": "user", "content": "again"}], thread="b")
    keys = KeyStore(db)
    _, key = keys.create("k", budget_usd=1e-9)
    a2 = make_assistant(FunctionModel(agreeing), None, n=1)
    await a2.chat([{"role": "user", "content": "hi"}], key=key)
    with pytest.raises(BudgetExceededError):
        await a2.chat([{"role": "user", "content": "hi"}], key=key)


async def test_bad_messages_are_user_errors(make_assistant) -> None:  # type: ignore[no-untyped-def]
    a = make_assistant(FunctionModel(agreeing), None, n=1)
    with pytest.raises(UserError, match="role"):
        await a.chat([{"role": "wizard", "content": "x"}])
    with pytest.raises(UserError, match="last message"):
        await a.chat([{"role": "assistant", "content": "x"}])


def test_sync_wrappers(make_assistant) -> None:  # type: ignore[no-untyped-def]
    a = make_assistant(FunctionModel(agreeing), None, n=1)
    assert a.chat_sync([{"role": "user", "content": "q"}]).text == "The answer is 12."
    assert "".join(a.stream_sync([{"role": "user", "content": "q"}])) == "The answer is 12."
    assert isinstance(a.ledger, Ledger)


async def test_background_sleep_loop_rethinks_idle_threads(make_assistant) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    def fn(request: GenerationRequest) -> list[str]:
        if "Write the notes" in (request.messages or ())[-1].content:
            return ["NOTES: facts."] * request.n
        return ["The answer is 1."] * request.n

    a = make_assistant(FunctionModel(fn), None, n=1, sleep=True, sleep_idle_s=0.0)
    await a.chat([{"role": "user", "content": "Facts: a=1."}], thread="idle")
    busy = True
    a.start_sleep(poll_s=0.05, gate=lambda: not busy)
    rec = a.threads.open("default", "idle")
    await asyncio.sleep(0.3)
    assert a.threads.latest_context(rec.id) is None  # the gate says busy: no thinking
    busy = False
    for _ in range(100):
        if a.threads.latest_context(rec.id) is not None:
            break
        await asyncio.sleep(0.05)
    await a.aclose()
    learned = a.threads.latest_context(rec.id)
    assert learned is not None and learned.revision == 2


async def test_student_without_tokenizer_still_trims_and_answers(make_assistant) -> None:  # type: ignore[no-untyped-def]
    from nightowl.chat.assistant import token_counter

    class NoTokenizer(FunctionModel):  # a test fake like an HTTP backend: no local tokenizer
        def count_tokens(self, text: str) -> int:
            raise NotImplementedError("no tokenizer")

    student = NoTokenizer(agreeing)
    assert token_counter(student)("x" * 400) == 100
    from nightowl.chat._prompt import DEFAULT_SYSTEM

    # Room for the first turn (system + 64) but not for the second (system + 64 + 15).
    a = make_assistant(student, None, n=1, max_prompt_tokens=len(DEFAULT_SYSTEM) // 4 + 70)
    with pytest.raises(UserError, match="prompt limit"):
        await a.chat([{"role": "user", "content": "huge " * 300}])
    await a.chat([{"role": "user", "content": "old " * 60}], thread="long")
    r = await a.chat([{"role": "user", "content": "new question"}], thread="long")
    assert r.text == "The answer is 12."
    assert [m.content for m in student.calls[-1].messages[1:]] == [
        "The answer is 12.", "new question"]

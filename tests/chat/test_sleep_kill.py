"""A SIGKILLed per-thread sleep-time job leaves no half-written learned context."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from nightowl.chat.sleep import ThreadSleeper
from nightowl.chat.threads import ThreadStore
from nightowl.config import Prices
from nightowl.ledger import Ledger, MeteredModel
from nightowl.llm.base import ChatMessage
from nightowl.llm.scripted import FunctionModel
from nightowl.storage import open_db

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from nightowl.chat.sleep import ThreadSleeper
    from nightowl.chat.threads import ThreadStore
    from nightowl.config import Prices
    from nightowl.llm.scripted import FunctionModel
    from nightowl.storage import open_db

    async def slow(request):  # a test fake: the 'model' thinks for a long time
        Path(sys.argv[3]).write_text("thinking")
        await asyncio.sleep(60)
        return "NOTES"

    store = ThreadStore(open_db(url=sys.argv[1]))
    sleeper = ThreadSleeper(store, FunctionModel(slow), Prices())
    asyncio.run(sleeper.rethink_thread(sys.argv[2]))
    """
)


async def test_killed_rethink_writes_nothing_then_a_rerun_completes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    db = open_db(url=url)
    store = ThreadStore(db)
    rec = store.open("t", "thread")
    store.sync(rec.id, [ChatMessage(role="user", content="Tom has 3 apples.")])
    store.append(rec.id, ChatMessage(role="assistant", content="Noted."))
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, rec.id, str(marker)], env=env)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert store.latest_context(rec.id) is None
    ledger = Ledger(db)
    run = ledger.start_run("sleep-test")
    model = MeteredModel(FunctionModel(lambda r: "NOTES: Tom has 3 apples."), ledger, Prices(),
                         run_id=run, role="sleep")
    learned = await ThreadSleeper(store, model, Prices()).rethink_thread(rec.id)
    assert learned is not None and learned.revision == 2 and "Tom" in learned.text

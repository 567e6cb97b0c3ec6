"""The chat Python API: a cascade over the embedded student, an oracle teacher, a thread.

Run: ``PYTHONPATH=. python examples/chat_assistant.py``.

Uses a throw-away SQLite database; every model call lands in its cost ledger.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from nightowl import Nightowl
from nightowl.chat import AssistantConfig
from nightowl.config import load_settings

GOLD = {"What is 12 * 3?": "12 * 3 = 36. The answer is 36."}


async def main() -> None:
    """Two thread turns and a streamed one."""
    settings = load_settings(home=Path(tempfile.mkdtemp(prefix="nightowl-chat-")))
    async with Nightowl.open(settings) as no:
        assistant = no.assistant(AssistantConfig(n=3, tau=0.67, max_tokens=64), oracle=GOLD.get)
        # The second question has no gold answer: when the student's samples disagree the
        # oracle cannot help, so the student's best reply comes back (tier "student").
        for question in ["What is 12 * 3?", "And what is that plus 4?"]:
            reply = await assistant.chat([{"role": "user", "content": question}], thread="demo")
            share = reply.agreement.share if reply.agreement else None
            print(f"[{reply.tier}] agreement={share} cost=${reply.cost_usd:.6f}: {reply.text!r}")
        # Streaming: text pieces, then the full reply object.
        stream = assistant.stream([{"role": "user", "content": "Thanks!"}], thread="demo")
        async for piece in stream:
            print("stream:", piece)
        assert stream.reply is not None
        print("thread revision", stream.reply.revision)

if __name__ == "__main__":
    asyncio.run(main())

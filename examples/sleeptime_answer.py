"""Sleep-time compute from Python: add a context, think about it while idle, then ask.

    python examples/sleeptime_answer.py                  # the embedded student (slow on CPU)
    NIGHTOWL_SLEEP__MODEL=my-model python examples/sleeptime_answer.py

The learned context c' is stored in SQL; ``ask`` uses it when it is still fresh.
"""

from __future__ import annotations

import asyncio

from nightowl import Nightowl

CONTEXT = (
    "Mia has 3 boxes with 12 apples each. She gives 7 apples to Tom and buys twice as "
    "many as she gave away."
)


async def main() -> None:
    """Add a context, learn it, ask about it."""
    with Nightowl.open() as no:
        svc = no.sleep
        ctx = svc.store.add_context(CONTEXT, name="apples")
        outcome = await svc.learn(ctx.id)
        print(f"learned context: {outcome.status}, {outcome.rounds} rounds, "
              f"${outcome.cost_usd:.6f}")
        res = await svc.ask(ctx.id, "How many apples does Mia have now?", budget="low")
        print(f"answer: {res.final!r} (used c': {res.used_learned}, "
              f"{res.prompt_tokens} prompt tokens, ${res.cost_usd:.6f})")


if __name__ == "__main__":
    asyncio.run(main())

"""Child process for the kill-and-resume test: runs one episode slowly."""

import asyncio
import sys
from pathlib import Path

from nightowl.agent.acceptance import Unanimity
from nightowl.agent.budget import EpisodeBudget
from nightowl.agent.graph import AgentGraph, LoopConfig
from nightowl.agent.ladder import Ladder
from nightowl.agent.tiers import StudentTier
from nightowl.checkpoints_sqlite import open_sqlite_checkpointer as open_checkpointer
from nightowl.config import SMALL_HOSTED_PRICES
from nightowl.envs.registry import make_env
from nightowl.ledger import Ledger, MeteredModel
from nightowl.llm.scripted import FunctionModel
from nightowl.storage import open_db


def first_choice(req):
    return sorted(req.choices)[0] if req.choices else "look around"


async def run(workdir: Path, run_id: str, task_id: str, delay: float) -> dict:
    ledger = Ledger(open_db(url=f"sqlite:///{workdir}/n.db"))
    if not ledger.run_exists(run_id):
        ledger.start_run("resume", "test", {}, run_id=run_id)
    student = MeteredModel(
        FunctionModel(first_choice, delay_s=delay), ledger, SMALL_HOSTED_PRICES,
        run_id=run_id, role="student",
    )
    ladder = Ladder([StudentTier(student, prices=SMALL_HOSTED_PRICES, rule=Unanimity(2))])
    with open_checkpointer(workdir / "ck.sqlite") as saver:  # the loop's default saver
        g = AgentGraph(
            ladder=ladder, env_factory=lambda: make_env("twx"), ledger=ledger,
            config=LoopConfig(budget=EpisodeBudget(max_steps=8), retrieve=False),
            checkpointer=saver, env_name="twx",
        )
        res = await g.run_episode(run_id=run_id, task_id=task_id, split="test")
        g.close()
    return {"steps": res.steps, "resumed": res.resumed, "reason": res.reason}


if __name__ == "__main__":
    print(asyncio.run(run(Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4]))))

import pytest

from nightowl.ledger import Ledger
from nightowl.storage import open_db


@pytest.fixture()
def ledger(tmp_path):
    db = open_db(url=f"sqlite:///{tmp_path}/agent.db")
    return Ledger(db)


@pytest.fixture(scope="session")
def twx_coin_tasks():
    from nightowl.envs.registry import make_env

    env = make_env("twx")
    try:
        ids = [t.task_id for t in env.tasks("test") if "/coin/" in t.task_id]
        train = [t.task_id for t in env.tasks("train") if "/coin/" in t.task_id]
    finally:
        env.close()
    return {"test": ids[:6], "train": train[:6]}

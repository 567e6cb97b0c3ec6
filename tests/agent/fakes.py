"""Fake student functions selectable by configuration (backend "scripted")."""

import json


def fake_student_env(monkeypatch, tmp_path, *, db: str = "runs.db", student: bool = True) -> str:
    """Point the settings at a fresh home and SQLite file (the hashing embedder); with
    ``student``, the registry's student is the scripted `first_choice`. Returns the URL."""
    url = f"sqlite:///{tmp_path / db}"
    env = {"NIGHTOWL_HOME": str(tmp_path / "home"), "NIGHTOWL_DATABASE_URL": url,
           "NIGHTOWL_EMBEDDER": "hashing-fake"}
    if student:
        env["NIGHTOWL_MODELS"] = json.dumps({"fake": {
            "backend": "scripted", "params": {"function": "tests.agent.fakes:first_choice"}}})
        env["NIGHTOWL_STUDENT_MODEL"] = "fake"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return url


def first_choice(req):
    """Always the alphabetically first valid action (or a fixed free-text action)."""
    return sorted(req.choices)[0] if req.choices else "look around"


def cycling_choice(req):
    """A different valid action per sample (so samples disagree), cycling by sample index.

    Also answers BAVT's prompts: proposals get valid actions; critic/scale prompts get
    whatever the choices offer first.
    """
    if req.choices:
        return [sorted(req.choices)[i % len(req.choices)] for i in range(req.n)]
    return ["look around"] * req.n

"""A scripted note-writer for worker tests (a fake, named as such: no real model).

Worker subprocesses load it through the model registry (backend kind "scripted",
``params.function = "tests.workers.fake_model:notes"``), so they start fast and
produce deterministic notes; the registry's ``delay_s`` makes each call slow enough
to kill a worker mid-job.
"""

from __future__ import annotations

from nightowl.llm.base import GenerationRequest
from nightowl.llm.scripted import last_user_message


def notes(request: GenerationRequest) -> str:
    """Round 1 writes notes; later rounds append one line (never says DONE)."""
    user = last_user_message(request)
    if "Current notes:" not in user:
        return "Notes round 1\nQ: how many apples?\nA: 3"
    current = user.split("Current notes:", 1)[1].split("Check the notes", 1)[0].strip()
    n = current.count("Notes round") + 1
    return f"{current}\nNotes round {n}"

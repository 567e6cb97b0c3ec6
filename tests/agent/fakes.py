"""Fake student functions selectable by configuration (backend "scripted")."""


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

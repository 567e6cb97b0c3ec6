"""Fake student functions selectable by configuration (backend "scripted")."""


def first_choice(req):
    """Always the alphabetically first valid action (or a fixed free-text action)."""
    return sorted(req.choices)[0] if req.choices else "look around"

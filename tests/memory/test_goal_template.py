"""The goal template: quoted values and numbers masked, apostrophes in words kept."""

from __future__ import annotations

import pytest

from nightowl.memory._records import goal_template


@pytest.mark.parametrize(
    ("goal", "template"),
    [
        ("Send $25 to 'Ann Lee' for 'pizza'.", "Send N to '…' for '…'."),
        ('Ask Eve to pay me 50.25 for "hotel".', 'Ask Eve to pay me N for "…".'),
        ("That's it! You're done, it's 3 o'clock.", "That's it! You're done, it's N o'clock."),
        ("put a clean mug in coffeemachine", "put a clean mug in coffeemachine"),
        ("Count my notes tagged 'work' and answer with that number.",
         "Count my notes tagged '…' and answer with that number."),
        ("room2 and v1.5 stay", "room2 and v1.5 stay"),
    ],
)
def test_goal_template(goal, template):
    assert goal_template(goal) == template

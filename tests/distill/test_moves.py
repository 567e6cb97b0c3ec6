"""Compass moves and the walk back (pure)."""

import pytest

from nightowl.distill.moves import direction, is_move, walks_back, without_walk_back


@pytest.mark.parametrize(("action", "want"), [
    ("go west", "west"), ("move north", "north"), ("North", "north"), ("go  up", "up"),
    ("go to kitchen", None), ("take coin", None), ("", None), ("go", None),
])
def test_direction(action, want):
    assert direction(action) == want


def test_is_move_counts_named_moves_too():
    assert is_move("go to countertop 1") and is_move("move east") and is_move("south")
    assert not is_move("open fridge") and not is_move("")


def test_walks_back_only_the_opposite_of_the_previous_move():
    assert walks_back("go east", "go west") and walks_back("move south", "move north")
    assert walks_back("go northeast", "go southwest") and walks_back("go up", "go down")
    assert not walks_back("go east", "go east") and not walks_back("go east", "go north")
    assert not walks_back("take coin", "go west") and not walks_back(None, "go west")


def test_without_walk_back_keeps_a_dead_end_and_other_actions():
    room = ("go north", "go west", "take coin", "look")
    assert without_walk_back(room, "go east") == ("go north", "take coin", "look")
    # a dead end: walking back is the only move, so it stays
    dead_end = ("go west", "look", "inventory")
    assert without_walk_back(dead_end, "go east") == dead_end
    # the previous action was not a compass move, or nothing walks back
    assert without_walk_back(room, "take key") == room
    assert without_walk_back(room, None) == room
    assert without_walk_back(room, "go west") == room  # east is not an exit here
    assert without_walk_back((), "go east") == ()

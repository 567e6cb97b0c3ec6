"""Demo adaptation: a demo's goal values replaced by the current goal's."""

from __future__ import annotations

from dataclasses import replace

from nightowl.app.plan import student_prompt
from nightowl.distill.demo_values import adapt, value_map
from nightowl.distill.prompt import PromptBuilder

SONG_DEMO = "Take the song 'Sea Glass' out of my Spotify playlist 'Chill'."
SONG_GOAL = "Take the song 'Neon Rain' out of my Spotify playlist 'Focus'."
SONG_CODE = (
    "playlist = [p for p in apis.spotify.show_playlist_library(access_token=token) "
    "if p['title'] == 'Chill'][0]\n"
    "song = [s for s in apis.spotify.search_songs(query='Sea Glass') "
    "if s['title'] == 'Sea Glass'][0]"
)


def test_value_map_pairs_the_replaced_spans_in_order() -> None:
    assert value_map(SONG_DEMO, SONG_GOAL) == {"Sea Glass": "Neon Rain", "Chill": "Focus"}


def test_value_map_pairs_unquoted_names_and_the_parts_of_an_email() -> None:
    pairs = value_map(
        "Add Dan Evans (dan.evans@example.com) to my friends on Venmo.",
        "Add Gina Hall (gina.hall@example.com) to my friends on Venmo.",
    )
    assert pairs == {"Dan Evans": "Gina Hall", "dan": "gina", "evans": "hall"}
    code = "apis.venmo.add_friend(access_token=token, user_email='dan.evans@example.com')"
    assert adapt(code, pairs).endswith("user_email='gina.hall@example.com')")


def test_no_map_between_goals_that_are_not_variants_of_one_task() -> None:
    assert value_map(SONG_GOAL, SONG_GOAL) == {}
    # a word inserted: not one sentence with replaced values
    assert value_map("put a mug in the sink", "put a clean mug in the sink") == {}
    # less than half of the tokens shared
    assert value_map("go to the kitchen", "open the red door now") == {}
    # one demo value that would stand for two current ones
    assert value_map("move 'a' to 'a'", "move 'b' to 'c'") == {}
    assert value_map("", SONG_GOAL) == {}


def test_adapt_replaces_whole_spans_at_once_and_keeps_other_words() -> None:
    pairs = {"Work": "Home", "Home": "Garden", "5": "12"}
    text = "'Work' and 'Home' but not Workout or HomeKit; page 5 of 15; x5"
    assert adapt(text, pairs) == "'Home' and 'Garden' but not Workout or HomeKit; page 12 of 15; x5"
    # an escape just before a value is a boundary: a line appended in code
    assert adapt(r"content + '\nMiddlemarch'", {"Middlemarch": "fix the test"}) == (
        r"content + '\nfix the test'"
    )
    assert adapt("unchanged", {}) == "unchanged"


def test_prompt_shows_demos_with_the_current_goals_values_only_when_asked() -> None:
    demo = {
        "goal": SONG_DEMO,
        "task_id": "v-spotify-remove/train/0",
        "steps": [{"idx": 0, "observation": "Playlists: 'Chill', 'Party'", "action": SONG_CODE}],
    }
    plain = PromptBuilder(action_format="code")
    adapted = replace(plain, adapt_values=True)
    as_recorded = plain.build(goal=SONG_GOAL, observation="start", demos=[demo])
    shown = adapted.build(goal=SONG_GOAL, observation="start", demos=[demo])
    assert "'Sea Glass'" in as_recorded and "'Neon Rain'" not in as_recorded.split("\n\n")[1]
    demo_part = shown.split("\n\n")[1]
    assert "'Sea Glass'" not in demo_part and "'Chill'" not in demo_part
    assert f"Goal: {SONG_GOAL}" in demo_part
    assert "query='Neon Rain'" in demo_part and "== 'Focus'" in demo_part
    assert "Playlists: 'Focus', 'Party'" in demo_part
    assert adapted.describe()["adapt_values"] is True
    # the content-free prompt (calibrated scoring) has no goal to adapt to
    assert "'Sea Glass'" in adapted.content_free([demo])


def test_environments_say_whether_demos_are_adapted() -> None:
    assert student_prompt("twx").adapt_values is False

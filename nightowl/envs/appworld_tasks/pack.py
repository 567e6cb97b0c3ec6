"""nightowl's AppWorld task pack: 21 multi-step tasks over four of AppWorld's apps.

Runs inside the AppWorld interpreter (stdlib only at import time; `build_world`,
`setup` and checks receive AppWorld's model modules). Each task has an instruction,
an optional set-up on top of the shared base world, a reference solution (Python code
actions calling ``apis.<app>.<api>(...)``, the expert) and a success check that reads
the resulting database state (and the answer given to ``apis.supervisor.complete_task``).

The supervisor (the user the agent works for) logs in with the passwords from
``apis.supervisor.show_account_passwords()``, as in AppWorld.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

APPS = ("simple_note", "todoist", "venmo", "spotify")
SUPERVISOR = {"first_name": "Ava", "last_name": "Lee", "email": "ava.lee@example.com"}
PASSWORDS = {
    "simple_note": "note-pw-1",
    "todoist": "todo-pw-2",
    "venmo": "venmo-pw-3",
    "spotify": "spot-pw-4",
}
FRIENDS = [("Ben", "Carter"), ("Chloe", "Diaz"), ("Dan", "Evans"), ("Eve", "Fischer")]

NOTES = [
    ("Groceries", "milk\neggs\napples", ["home"]),
    ("Books to read", "Dune\nEmma", ["personal"]),
    ("Trip ideas", "Lisbon, Kyoto", ["travel"]),
    ("Standup notes", "ship the release", ["work"]),
    ("Quarterly goals", "hire two engineers", ["work"]),
    ("Old ideas", "a cat cafe", ["personal"]),
    ("Weekend chores", "mow the lawn\nclean the garage\nwash the car", ["home"]),
]
PROJECTS = {
    "Home": [("Buy birthday gift", False), ("Fix the sink", False), ("Pay rent", True)],
    "Work": [
        ("Write report", False),
        ("Review PR", False),
        ("Plan offsite", False),
        ("Book room", True),
    ],
    "Errands": [("Post office", False), ("Dry cleaning", False), ("Pharmacy", True)],
}
ARTISTS = [("The Lanterns", "indie"), ("Mira Sol", "pop"), ("Northbound", "rock")]
SONGS = [  # title, artist index
    ("Midnight Drive", 0),
    ("Paper Boats", 0),
    ("Golden Hour", 1),
    ("Sea Glass", 1),
    ("Old Tune", 2),
    ("Highway Lines", 2),
    ("Slow Rivers", 0),
    ("Neon Rain", 1),
]
LIBRARY = ["Golden Hour", "Paper Boats", "Old Tune", "Sea Glass", "Highway Lines"]
PLAYLISTS = {"Chill": ["Sea Glass", "Old Tune", "Slow Rivers"], "Workout": ["Highway Lines"]}


def email(first: str, last: str) -> str:
    """The demo users' email addresses."""
    return f"{first.lower()}.{last.lower()}@example.com"


def build_world(m: dict[str, Any]) -> None:
    """The base world every task starts from (deterministic)."""
    sup = m["supervisor"]
    s = sup.Supervisor.create_save(**SUPERVISOR, phone_number="5550100100", birthday="1990-04-02")
    for app, pw in PASSWORDS.items():
        sup.AccountPassword.create_save(supervisor_id=s.id, account_name=app, password=pw)
    users: dict[str, dict[str, Any]] = {}
    for app in APPS:
        users[app] = {}
        people = [(SUPERVISOR["first_name"], SUPERVISOR["last_name"])] + FRIENDS
        for first, last in people:
            pw = PASSWORDS[app] if first == SUPERVISOR["first_name"] else f"{first.lower()}-pw-0"
            users[app][first] = m[app].User.create_save(
                first_name=first,
                last_name=last,
                email=email(first, last),
                password=pw,
                verified=True,
            )
    ava = {app: users[app]["Ava"].id for app in APPS}
    for title, content, tags in NOTES:
        m["simple_note"].Note.create_save(
            user_id=ava["simple_note"], title=title, content=content, tags=tags
        )
    td = m["todoist"]
    for name, tasks in {"Inbox": [], **PROJECTS}.items():
        p = td.Project.create_save(user_id=ava["todoist"], name=name, is_inbox=name == "Inbox")
        td.ProjectCollaboratorLink.create_save(project_id=p.id, user_id=ava["todoist"])
        for i, (title, done) in enumerate(tasks):
            td.Task.create_save(
                project_id=p.id,
                user_id=ava["todoist"],
                title=title,
                priority="medium",
                order_index=i,
                is_completed=done,
            )
    vm = m["venmo"]
    me = users["venmo"]["Ava"]
    me.venmo_balance = 250.0
    me.save()
    for first in ("Ben", "Chloe"):
        vm.Friendship.create_save(user_id=me.id, friend_id=users["venmo"][first].id)
        vm.Friendship.create_save(user_id=users["venmo"][first].id, friend_id=me.id)
    vm.Transaction.create_save(
        sender_id=users["venmo"]["Ben"].id, receiver_id=me.id, amount=30.0, description="lunch"
    )
    vm.PaymentRequest.create_save(
        sender_id=users["venmo"]["Ben"].id,
        receiver_id=me.id,
        amount=18.5,
        description="movie tickets",
    )
    sp = m["spotify"]
    artists = [sp.Artist.create_save(name=n, genre=g) for n, g in ARTISTS]
    songs = {}
    for title, a in SONGS:
        songs[title] = sp.Song.create_save(
            title=title,
            artist_ids=[artists[a].id],
            duration=200,
            release_date="2020-01-01T00:00:00",
            genre=artists[a].genre,
        )
    for title in LIBRARY:
        sp.UserLibrarySong.create_save(user_id=ava["spotify"], song_id=songs[title].id)
    for title, items in PLAYLISTS.items():
        pl = sp.Playlist.create_save(title=title, user_id=ava["spotify"])
        for t in items:
            sp.PlaylistSong.create_save(playlist_id=pl.id, song_id=songs[t].id)


# --- helpers the checks use -------------------------------------------------------------
def _uid(m: dict[str, Any], app: str, first: str = "Ava") -> int:
    last = dict([(SUPERVISOR["first_name"], SUPERVISOR["last_name"]), *FRIENDS])[first]
    return m[app].User.find_one(email=email(first, last)).id


def _notes(m: dict[str, Any]) -> dict[str, Any]:
    return {n.title: n for n in m["simple_note"].Note.all() if n.user_id == _uid(m, "simple_note")}


def _tasks(m: dict[str, Any], project: str) -> dict[str, Any]:
    td = m["todoist"]
    p = td.Project.find_one(user_id=_uid(m, "todoist"), name=project)
    return {} if p is None else {t.title: t for t in td.Task.all() if t.project_id == p.id}


def _song_ids(m: dict[str, Any], *titles: str) -> list[int]:
    return [m["spotify"].Song.find_one(title=t).id for t in titles]


def _playlist_songs(m: dict[str, Any], title: str) -> set[int] | None:
    sp = m["spotify"]
    pl = sp.Playlist.find_one(user_id=_uid(m, "spotify"), title=title)
    return (
        None
        if pl is None
        else {ps.song_id for ps in sp.PlaylistSong.all() if ps.playlist_id == pl.id}
    )


def _answer_is(answer: Any, expected: Any) -> bool:
    text = str(answer).strip().lower().rstrip(".")
    try:
        return abs(float(text.strip("$ ")) - float(expected)) < 1e-6
    except ValueError:
        return text == str(expected).lower()


def _ok(cond: bool, why: str) -> tuple[bool, str]:
    return bool(cond), ("ok" if cond else why)


def login(app: str) -> str:
    """The reference solution's first action: log in to ``app`` as the supervisor."""
    return (
        "passwords = {p['account_name']: p['password'] for p in "
        "apis.supervisor.show_account_passwords()}\n"
        f"token = apis.{app}.login(username='ava.lee@example.com', "
        f"password=passwords['{app}'])['access_token']"
    )


Check = Callable[[dict[str, Any], Any], tuple[bool, str]]
Setup = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, kw_only=True)
class PackTask:
    """One task: instruction, set-up, reference solution (the expert), success check."""

    name: str
    split: str
    app: str
    instruction: str
    solution: tuple[str, ...]
    check: Check
    setup: Setup = field(default=lambda m: None)


@dataclass(frozen=True)
class Variant:
    """A scenario variant (`variants`) before it becomes a `PackTask` (login comes first)."""

    instruction: str
    steps: tuple[str, ...]
    check: Check
    setup: Setup | None = None


DONE = "apis.supervisor.complete_task()"
_T: list[PackTask] = []


def task(name: str, split: str, app: str, instruction: str, *solution: str):  # noqa: ANN201
    """Register a task; decorates its check."""

    def deco(check: Check) -> Callable:
        _T.append(
            PackTask(
                name=name,
                split=split,
                app=app,
                instruction=instruction,
                solution=(login(app), *solution),
                check=check,
            )
        )
        return check

    return deco


# --- simple_note ------------------------------------------------------------------------
@task(
    "note-create",
    "train",
    "simple_note",
    "Create a Simple Note titled 'Packing list' with the content 'passport, charger, socks' "
    "and the tag 'travel'.",
    "apis.simple_note.create_note(access_token=token, title='Packing list', "
    "content='passport, charger, socks', tags=['travel'])",
    DONE,
)
def _(m, answer):
    n = _notes(m).get("Packing list")
    return _ok(
        n is not None and "charger" in n.content and "travel" in (n.tags or []), "no such note"
    )


@task(
    "note-append",
    "train",
    "simple_note",
    "Add 'bread' as a new line at the end of my Simple Note 'Groceries'.",
    "note = apis.simple_note.search_notes(access_token=token, query='Groceries')[0]\n"
    "apis.simple_note.add_content_to_note(access_token=token, note_id=note['note_id'], "
    "append_or_prepend='append', added_content='\\nbread')",
    DONE,
)
def _(m, answer):
    c = _notes(m)["Groceries"].content
    return _ok(c.rstrip().endswith("bread") and "milk" in c, f"content is {c!r}")


@task(
    "note-delete",
    "train",
    "simple_note",
    "Delete my Simple Note titled 'Old ideas' and nothing else.",
    "note = apis.simple_note.search_notes(access_token=token, query='Old ideas')[0]\n"
    "apis.simple_note.delete_note(access_token=token, note_id=note['note_id'])",
    DONE,
)
def _(m, answer):
    n = _notes(m)
    return _ok("Old ideas" not in n and len(n) == len(NOTES) - 1, f"notes: {sorted(n)}")


@task(
    "note-count-tag",
    "test",
    "simple_note",
    "How many of my Simple Notes are tagged 'work'? Answer with a number.",
    "notes = apis.simple_note.search_notes(access_token=token, tags=['work'], "
    "page_limit=20)\nprint(len(notes))",
    "apis.supervisor.complete_task(answer=len(notes))",
)
def _(m, answer):
    return _ok(_answer_is(answer, 2), f"answer {answer!r}")


@task(
    "note-rename",
    "dev",
    "simple_note",
    "Rename my Simple Note 'Trip ideas' to 'Summer trip ideas', keeping its content.",
    "note = apis.simple_note.search_notes(access_token=token, query='Trip ideas')[0]\n"
    "apis.simple_note.update_note(access_token=token, note_id=note['note_id'], title='Summer "
    "trip ideas')",
    DONE,
)
def _(m, answer):
    n = _notes(m)
    ok = "Trip ideas" not in n and "Kyoto" in getattr(n.get("Summer trip ideas"), "content", "")
    return _ok(ok, f"notes: {sorted(n)}")


# --- todoist ------------------------------------------------------------------------------
FIND_PROJECT = (
    "project = [p for p in apis.todoist.show_projects(access_token=token, page_limit=20) "
    "if p['name'] == '{name}'][0]"
)


@task(
    "todo-create",
    "train",
    "todoist",
    "Add a task 'Call the plumber' with high priority to my Todoist project 'Home'.",
    FIND_PROJECT.format(name="Home"),
    "apis.todoist.create_task(access_token=token, project_id=project['project_id'], "
    "title='Call the plumber', priority='high')",
    DONE,
)
def _(m, answer):
    t = _tasks(m, "Home").get("Call the plumber")
    return _ok(t is not None and t.priority == "high", "task missing or not high priority")


@task(
    "todo-complete",
    "train",
    "todoist",
    "Mark the task 'Buy birthday gift' in my Todoist project 'Home' as completed.",
    FIND_PROJECT.format(name="Home"),
    "tasks = apis.todoist.show_tasks(access_token=token, "
    "project_id=project['project_id'])['no_section_tasks']\n"
    "target = [t for t in tasks if t['title'] == 'Buy birthday gift'][0]\n"
    "apis.todoist.update_task(access_token=token, task_id=target['task_id'], is_completed=True)",
    DONE,
)
def _(m, answer):
    ts = _tasks(m, "Home")
    ok = ts["Buy birthday gift"].is_completed and not ts["Fix the sink"].is_completed
    return _ok(ok, "wrong completion state")


@task(
    "todo-count-open",
    "test",
    "todoist",
    "How many incomplete tasks are in my Todoist project 'Work'? Answer with a number.",
    FIND_PROJECT.format(name="Work"),
    "tasks = apis.todoist.show_tasks(access_token=token, project_id=project['project_id'], "
    "is_completed=False)['no_section_tasks']\nprint(len(tasks))",
    "apis.supervisor.complete_task(answer=len(tasks))",
)
def _(m, answer):
    return _ok(_answer_is(answer, 3), f"answer {answer!r}")


@task(
    "todo-new-project",
    "train",
    "todoist",
    "Create a Todoist project named 'Garden' and add a task 'Buy seeds' to it.",
    "project = apis.todoist.create_project(access_token=token, name='Garden')",
    "apis.todoist.create_task(access_token=token, project_id=project['project_id'], title='Buy "
    "seeds')",
    DONE,
)
def _(m, answer):
    return _ok("Buy seeds" in _tasks(m, "Garden"), "no Garden project with 'Buy seeds'")


@task(
    "todo-complete-all",
    "dev",
    "todoist",
    "Complete every open task in my Todoist project 'Errands'.",
    FIND_PROJECT.format(name="Errands"),
    "tasks = apis.todoist.show_tasks(access_token=token, project_id=project['project_id'], "
    "is_completed=False)['no_section_tasks']\n"
    "for t in tasks:\n    apis.todoist.update_task(access_token=token, task_id=t['task_id'], "
    "is_completed=True)",
    DONE,
)
def _(m, answer):
    ts = _tasks(m, "Errands")
    return _ok(len(ts) == 3 and all(t.is_completed for t in ts.values()), "open tasks remain")


# --- venmo ----------------------------------------------------------------------------------
def _sent(m: dict[str, Any], first: str) -> list[Any]:
    me, them = _uid(m, "venmo"), _uid(m, "venmo", first)
    return [t for t in m["venmo"].Transaction.all() if t.sender_id == me and t.receiver_id == them]


@task(
    "venmo-pay",
    "train",
    "venmo",
    "Send $25 to Ben Carter on Venmo with the description 'pizza'.",
    "apis.venmo.create_transaction(access_token=token, receiver_email='ben.carter@example.com', "
    "amount=25, description='pizza')",
    DONE,
)
def _(m, answer):
    sent = _sent(m, "Ben")
    return _ok(
        len(sent) == 1 and sent[0].amount == 25 and "pizza" in sent[0].description,
        f"{len(sent)} payments",
    )


@task(
    "venmo-balance",
    "train",
    "venmo",
    "What is my current Venmo balance in dollars? Answer with a number.",
    "balance = apis.venmo.show_venmo_balance(access_token=token)['venmo_balance']\nprint(balance)",
    "apis.supervisor.complete_task(answer=balance)",
)
def _(m, answer):
    return _ok(_answer_is(answer, 250), f"answer {answer!r}")


@task(
    "venmo-request",
    "train",
    "venmo",
    "Request $40 from Chloe Diaz on Venmo for 'concert tickets'.",
    "apis.venmo.create_payment_request(access_token=token, user_email='chloe.diaz@example.com', "
    "amount=40, description='concert tickets')",
    DONE,
)
def _(m, answer):
    me, her = _uid(m, "venmo"), _uid(m, "venmo", "Chloe")
    reqs = [
        r for r in m["venmo"].PaymentRequest.all() if r.sender_id == me and r.receiver_id == her
    ]
    return _ok(len(reqs) == 1 and reqs[0].amount == 40, f"{len(reqs)} requests")


@task(
    "venmo-approve",
    "test",
    "venmo",
    "Ben Carter sent me a Venmo payment request for movie tickets. Approve it.",
    "reqs = apis.venmo.show_received_payment_requests(access_token=token)\n"
    "req = [r for r in reqs if 'movie' in r['description']][0]\n"
    "apis.venmo.approve_payment_request(access_token=token, "
    "payment_request_id=req['payment_request_id'])",
    DONE,
)
def _(m, answer):
    sent = _sent(m, "Ben")
    return _ok(len(sent) == 1 and abs(sent[0].amount - 18.5) < 0.01, f"{len(sent)} payments to Ben")


@task(
    "venmo-add-friend",
    "dev",
    "venmo",
    "Add Dan Evans as a friend on Venmo.",
    "apis.venmo.add_friend(access_token=token, user_email='dan.evans@example.com')",
    DONE,
)
def _(m, answer):
    me, dan = _uid(m, "venmo"), _uid(m, "venmo", "Dan")
    ok = any(f.user_id == me and f.friend_id == dan for f in m["venmo"].Friendship.all())
    return _ok(ok, "not friends")


# --- spotify --------------------------------------------------------------------------------
FIND_SONG = (
    "song = apis.spotify.search_songs(query='{title}')[0]\nassert song['title'] == '{title}'"
)


@task(
    "spotify-playlist",
    "train",
    "spotify",
    "Create a Spotify playlist called 'Road Trip' with the songs 'Midnight Drive' and 'Highway "
    "Lines'.",
    "playlist = apis.spotify.create_playlist(access_token=token, title='Road Trip')",
    "for title in ['Midnight Drive', 'Highway Lines']:\n"
    "    song = [s for s in apis.spotify.search_songs(query=title) if s['title'] == title][0]\n"
    "    apis.spotify.add_song_to_playlist(access_token=token, "
    "playlist_id=playlist['playlist_id'], "
    "song_id=song['song_id'])",
    DONE,
)
def _(m, answer):
    got = _playlist_songs(m, "Road Trip")
    return _ok(got == set(_song_ids(m, "Midnight Drive", "Highway Lines")), f"playlist songs {got}")


@task(
    "spotify-like",
    "train",
    "spotify",
    "Like the song 'Midnight Drive' on Spotify.",
    FIND_SONG.format(title="Midnight Drive"),
    "apis.spotify.like_song(access_token=token, song_id=song['song_id'])",
    DONE,
)
def _(m, answer):
    sid = _song_ids(m, "Midnight Drive")[0]
    likes = [x for x in m["spotify"].SongLike.all() if x.user_id == _uid(m, "spotify")]
    return _ok([x.song_id for x in likes] == [sid], f"{len(likes)} liked songs")


@task(
    "spotify-library-count",
    "dev",
    "spotify",
    "How many songs are in my Spotify song library? Answer with a number.",
    "songs = apis.spotify.show_song_library(access_token=token, page_limit=20)\nprint(len(songs))",
    "apis.supervisor.complete_task(answer=len(songs))",
)
def _(m, answer):
    return _ok(_answer_is(answer, len(LIBRARY)), f"answer {answer!r}")


@task(
    "spotify-remove",
    "test",
    "spotify",
    "Remove the song 'Old Tune' from my Spotify playlist 'Chill'.",
    "playlist = [p for p in apis.spotify.show_playlist_library(access_token=token, page_limit=20) "
    "if p['title'] == 'Chill'][0]",
    FIND_SONG.format(title="Old Tune"),
    "apis.spotify.remove_song_from_playlist(access_token=token, "
    "playlist_id=playlist['playlist_id'], "
    "song_id=song['song_id'])",
    DONE,
)
def _(m, answer):
    got = _playlist_songs(m, "Chill")
    return _ok(got == set(_song_ids(m, "Sea Glass", "Slow Rivers")), f"Chill has {got}")


@task(
    "spotify-follow",
    "train",
    "spotify",
    "Follow the artist 'The Lanterns' on Spotify.",
    "artist = [a for a in apis.spotify.search_artists(query='The Lanterns') if a['name'] == "
    "'The Lanterns'][0]",
    "apis.spotify.follow_artist(access_token=token, artist_id=artist['artist_id'])",
    DONE,
)
def _(m, answer):
    sp = m["spotify"]
    aid = sp.Artist.find_one(name="The Lanterns").id
    ok = any(
        f.user_id == _uid(m, "spotify") and f.artist_id == aid for f in sp.UserArtistFollowing.all()
    )
    return _ok(ok, "not following")


# --- two apps -------------------------------------------------------------------------------
@task(
    "note-to-todo",
    "train",
    "todoist",
    "Each line of my Simple Note 'Weekend chores' is a chore: add each one as a task to my "
    "Todoist project 'Home'.",
    "note_token = apis.simple_note.login(username='ava.lee@example.com', "
    "password=passwords['simple_note'])['access_token']\n"
    "note = apis.simple_note.search_notes(access_token=note_token, query='Weekend chores')[0]\n"
    "chores = [c for c in apis.simple_note.show_note(access_token=note_token, "
    "note_id=note['note_id'])['content'].splitlines() if c.strip()]",
    FIND_PROJECT.format(name="Home"),
    "for chore in chores:\n    apis.todoist.create_task(access_token=token, "
    "project_id=project['project_id'], title=chore)",
    DONE,
)
def _(m, answer):
    ts = _tasks(m, "Home")
    want = {"mow the lawn", "clean the garage", "wash the car"}
    return _ok(want <= {t.lower() for t in ts}, f"Home tasks: {sorted(ts)}")


TASKS: dict[str, PackTask] = {t.name: t for t in _T}

"""AppWorld scenario variants over venmo and spotify (see `variants` for the scheme).

Runs inside the AppWorld interpreter too (stdlib only at import time).
"""

from __future__ import annotations

from typing import Any

try:
    from . import pack
    from .pack import Setup, Variant
except ImportError:  # in the AppWorld worker this folder is on sys.path, not the package
    import pack  # type: ignore[no-redef]
    from pack import Setup, Variant  # type: ignore[no-redef]
DONE = pack.DONE
_ok = pack._ok
#: people the variants add to venmo (the base world has Ava's friends Ben and Chloe,
#: and Dan and Eve, who are users but not her friends)
NEW_PEOPLE = [("Finn", "Garcia"), ("Gina", "Hall"), ("Hugo", "Ito"), ("Iris", "Jones")]
LAST = dict([*pack.FRIENDS, *NEW_PEOPLE])


def _full(first: str) -> str:
    return f"{first} {LAST[first]}"


def _mail(first: str) -> str:
    return pack.email(first, LAST[first])


def _vuid(m: dict[str, Any], first: str) -> int:
    return m["venmo"].User.find_one(email=_mail(first)).id


def _befriend(m: dict[str, Any], first: str) -> None:
    """Set-up helper: make ``first`` (Dan or Eve) Ava's friend on venmo, both ways."""
    vm, me, them = m["venmo"], pack._uid(m, "venmo"), _vuid(m, first)
    if not any(f.user_id == me and f.friend_id == them for f in vm.Friendship.all()):
        vm.Friendship.create_save(user_id=me, friend_id=them)
        vm.Friendship.create_save(user_id=them, friend_id=me)


def _friend_setup(first: str) -> Setup | None:
    return None if first in ("Ben", "Chloe") else (lambda m: _befriend(m, first))


def _near(a: float, b: float) -> bool:
    return abs(float(a) - float(b)) < 0.01


# --- venmo ----------------------------------------------------------------------------------
def venmo_pay(first: str, amount: float, what: str) -> Variant:
    """Pay a friend an amount for something."""

    def check(m: dict[str, Any], answer: Any) -> tuple[bool, str]:
        sent = pack._sent(m, first)
        ok = len(sent) == 1 and _near(sent[0].amount, amount) and what in sent[0].description
        return _ok(ok, f"{len(sent)} payments to {first}")

    return Variant(
        f"Pay {_full(first)} ${amount:g} on Venmo for '{what}' (use that as the description).",
        (
            f"apis.venmo.create_transaction(access_token=token, receiver_email={_mail(first)!r}, "
            f"amount={amount:g}, description={what!r})",
            DONE,
        ),
        check,
        _friend_setup(first),
    )


def venmo_request(first: str, amount: float, what: str) -> Variant:
    """Request an amount from a friend."""

    def check(m: dict[str, Any], answer: Any) -> tuple[bool, str]:
        me, them = pack._uid(m, "venmo"), _vuid(m, first)
        reqs = [
            r
            for r in m["venmo"].PaymentRequest.all()
            if r.sender_id == me and r.receiver_id == them
        ]
        ok = len(reqs) == 1 and _near(reqs[0].amount, amount) and what in reqs[0].description
        return _ok(ok, f"{len(reqs)} requests to {first}")

    return Variant(
        f"Ask {_full(first)} on Venmo to pay me ${amount:g} for '{what}' (a payment request "
        "with that description).",
        (
            "apis.venmo.create_payment_request(access_token=token, "
            f"user_email={_mail(first)!r}, amount={amount:g}, description={what!r})",
            DONE,
        ),
        check,
        _friend_setup(first),
    )


def venmo_approve(first: str, amount: float, what: str) -> Variant:
    """Approve the payment request a friend sent for something (added by the set-up)."""

    def setup(m: dict[str, Any]) -> None:
        if first not in ("Ben", "Chloe"):
            _befriend(m, first)
        m["venmo"].PaymentRequest.create_save(
            sender_id=_vuid(m, first),
            receiver_id=pack._uid(m, "venmo"),
            amount=amount,
            description=what,
        )

    def check(m: dict[str, Any], answer: Any) -> tuple[bool, str]:
        sent = pack._sent(m, first)
        ben = sent if first == "Ben" else pack._sent(m, "Ben")
        ok = (
            len(sent) == 1
            and _near(sent[0].amount, amount)
            and not any(_near(t.amount, 18.5) for t in ben)
        )
        return _ok(ok, f"{len(sent)} payments to {first}")

    return Variant(
        f"Approve the Venmo payment request that {_full(first)} sent me for '{what}'.",
        (
            "reqs = apis.venmo.show_received_payment_requests(access_token=token)\n"
            f"req = [r for r in reqs if r['description'] == {what!r}][0]\n"
            "apis.venmo.approve_payment_request(access_token=token, "
            "payment_request_id=req['payment_request_id'])",
            DONE,
        ),
        check,
        setup,
    )


def venmo_add_friend(first: str) -> Variant:
    """Add a venmo user as a friend (people beyond the base world come from the set-up)."""

    def setup(m: dict[str, Any]) -> None:
        m["venmo"].User.create_save(
            first_name=first,
            last_name=LAST[first],
            email=_mail(first),
            password=f"{first.lower()}-pw-0",
            verified=True,
        )

    def check(m: dict[str, Any], answer: Any) -> tuple[bool, str]:
        me, them = pack._uid(m, "venmo"), _vuid(m, first)
        ok = any(f.user_id == me and f.friend_id == them for f in m["venmo"].Friendship.all())
        return _ok(ok, f"not friends with {first}")

    return Variant(
        f"Add {_full(first)} ({_mail(first)}) to my friends on Venmo.",
        (f"apis.venmo.add_friend(access_token=token, user_email={_mail(first)!r})", DONE),
        check,
        setup if (first, LAST[first]) in NEW_PEOPLE else None,
    )


# --- spotify --------------------------------------------------------------------------------
def _find_playlist(title: str) -> str:
    return (
        "playlist = [p for p in apis.spotify.show_playlist_library(access_token=token, "
        f"page_limit=20) if p['title'] == {title!r}][0]"
    )


def _find_song(title: str) -> str:
    return (
        f"song = [s for s in apis.spotify.search_songs(query={title!r}) "
        f"if s['title'] == {title!r}][0]"
    )


def _playlist_setup(title: str, songs: list[str]) -> Setup:
    def setup(m: dict[str, Any]) -> None:
        sp = m["spotify"]
        pl = sp.Playlist.create_save(title=title, user_id=pack._uid(m, "spotify"))
        for sid in pack._song_ids(m, *songs):
            sp.PlaylistSong.create_save(playlist_id=pl.id, song_id=sid)

    return setup


def spotify_add(playlist: str, song: str) -> Variant:
    """Add a song to one of the base playlists."""

    def check(m: dict[str, Any], answer: Any) -> tuple[bool, str]:
        got = pack._playlist_songs(m, playlist)
        want = set(pack._song_ids(m, song, *pack.PLAYLISTS[playlist]))
        return _ok(got == want, f"{playlist} has {got}")

    return Variant(
        f"Put the song '{song}' into my Spotify playlist '{playlist}'.",
        (
            _find_playlist(playlist),
            _find_song(song),
            "apis.spotify.add_song_to_playlist(access_token=token, "
            "playlist_id=playlist['playlist_id'], song_id=song['song_id'])",
            DONE,
        ),
        check,
    )


def spotify_like(song: str) -> Variant:
    """Like a song."""

    def check(m: dict[str, Any], answer: Any) -> tuple[bool, str]:
        likes = [
            x.song_id for x in m["spotify"].SongLike.all() if x.user_id == pack._uid(m, "spotify")
        ]
        return _ok(likes == pack._song_ids(m, song), f"{len(likes)} liked songs")

    return Variant(
        f"On Spotify, give the song '{song}' a like.",
        (
            _find_song(song),
            "apis.spotify.like_song(access_token=token, song_id=song['song_id'])",
            DONE,
        ),
        check,
    )


def spotify_follow(artist: str, genre: str | None = None) -> Variant:
    """Follow an artist (with a genre: an artist the set-up adds)."""

    def setup(m: dict[str, Any]) -> None:
        m["spotify"].Artist.create_save(name=artist, genre=genre)

    def check(m: dict[str, Any], answer: Any) -> tuple[bool, str]:
        sp, me = m["spotify"], pack._uid(m, "spotify")
        got = {f.artist_id for f in sp.UserArtistFollowing.all() if f.user_id == me}
        return _ok(got == {sp.Artist.find_one(name=artist).id}, f"following {got}")

    return Variant(
        f"Start following the artist '{artist}' on Spotify.",
        (
            f"artist = [a for a in apis.spotify.search_artists(query={artist!r}) "
            f"if a['name'] == {artist!r}][0]",
            "apis.spotify.follow_artist(access_token=token, artist_id=artist['artist_id'])",
            DONE,
        ),
        check,
        setup if genre else None,
    )


def spotify_remove(playlist: str, song: str, made: list[str] | None = None) -> Variant:
    """Remove a song from a playlist (``made``: a playlist with these songs, from the set-up)."""
    before = made if made is not None else pack.PLAYLISTS[playlist]

    def check(m: dict[str, Any], answer: Any) -> tuple[bool, str]:
        got = pack._playlist_songs(m, playlist)
        want = set(pack._song_ids(m, *[t for t in before if t != song]))
        return _ok(got == want, f"{playlist} has {got}")

    return Variant(
        f"Take the song '{song}' out of my Spotify playlist '{playlist}'.",
        (
            _find_playlist(playlist),
            _find_song(song),
            "apis.spotify.remove_song_from_playlist(access_token=token, "
            "playlist_id=playlist['playlist_id'], song_id=song['song_id'])",
            DONE,
        ),
        check,
        _playlist_setup(playlist, made) if made is not None else None,
    )


def spotify_new_playlist(title: str, songs: list[str]) -> Variant:
    """Create a playlist with some songs."""

    def check(m: dict[str, Any], answer: Any) -> tuple[bool, str]:
        got = pack._playlist_songs(m, title)
        return _ok(got == set(pack._song_ids(m, *songs)), f"playlist songs {got}")

    quoted = " and ".join(f"'{s}'" for s in songs)
    return Variant(
        f"Make a new Spotify playlist named '{title}' holding the songs {quoted}.",
        (
            f"playlist = apis.spotify.create_playlist(access_token=token, title={title!r})",
            f"for title in {songs!r}:\n"
            "    song = [s for s in apis.spotify.search_songs(query=title) "
            "if s['title'] == title][0]\n"
            "    apis.spotify.add_song_to_playlist(access_token=token, "
            "playlist_id=playlist['playlist_id'], song_id=song['song_id'])",
            DONE,
        ),
        check,
    )


SCENARIOS: dict[str, tuple[str, list[Variant]]] = {
    "v-venmo-pay": (
        "venmo",
        [
            venmo_pay("Chloe", 12, "coffee"),
            venmo_pay("Ben", 45, "groceries"),
            venmo_pay("Chloe", 8.5, "parking"),
            venmo_pay("Ben", 60, "concert"),
            venmo_pay("Dan", 20, "gas"),
            venmo_pay("Eve", 33, "dinner"),
        ],
    ),
    "v-venmo-request": (
        "venmo",
        [
            venmo_request("Ben", 15, "cab ride"),
            venmo_request("Chloe", 22, "brunch"),
            venmo_request("Dan", 9, "snacks"),
            venmo_request("Eve", 50, "hotel"),
            venmo_request("Chloe", 30, "birthday gift"),
            venmo_request("Ben", 70, "flights"),
        ],
    ),
    "v-venmo-approve": (
        "venmo",
        [
            venmo_approve("Chloe", 27, "pizza night"),
            venmo_approve("Ben", 14, "bowling"),
            venmo_approve("Chloe", 40, "theater"),
            venmo_approve("Dan", 11, "ice cream"),
            venmo_approve("Eve", 65, "ski rental"),
            venmo_approve("Ben", 23, "book club"),
        ],
    ),
    "v-venmo-add-friend": (
        "venmo",
        [
            venmo_add_friend("Dan"),
            venmo_add_friend("Eve"),
            venmo_add_friend("Finn"),
            venmo_add_friend("Gina"),
            venmo_add_friend("Hugo"),
            venmo_add_friend("Iris"),
        ],
    ),
    "v-spotify-add-song": (
        "spotify",
        [
            spotify_add("Chill", "Golden Hour"),
            spotify_add("Workout", "Neon Rain"),
            spotify_add("Chill", "Paper Boats"),
            spotify_add("Workout", "Midnight Drive"),
            spotify_add("Chill", "Neon Rain"),
            spotify_add("Workout", "Sea Glass"),
        ],
    ),
    "v-spotify-like": (
        "spotify",
        [
            spotify_like("Paper Boats"),
            spotify_like("Golden Hour"),
            spotify_like("Neon Rain"),
            spotify_like("Sea Glass"),
            spotify_like("Slow Rivers"),
            spotify_like("Old Tune"),
        ],
    ),
    "v-spotify-follow": (
        "spotify",
        [
            spotify_follow("Mira Sol"),
            spotify_follow("Northbound"),
            spotify_follow("Velvet Echo", "jazz"),
            spotify_follow("Copper Skies", "folk"),
            spotify_follow("Luna Park", "electronic"),
            spotify_follow("The Lanterns"),
        ],
    ),
    "v-spotify-remove": (
        "spotify",
        [
            spotify_remove("Chill", "Sea Glass"),
            spotify_remove("Chill", "Slow Rivers"),
            spotify_remove("Workout", "Highway Lines"),
            spotify_remove("Focus", "Neon Rain", ["Paper Boats", "Neon Rain", "Golden Hour"]),
            spotify_remove("Focus", "Golden Hour", ["Golden Hour", "Midnight Drive"]),
            spotify_remove("Party", "Midnight Drive", ["Midnight Drive", "Neon Rain"]),
        ],
    ),
    "v-spotify-new-playlist": (
        "spotify",
        [
            spotify_new_playlist("Sunday Morning", ["Sea Glass", "Slow Rivers"]),
            spotify_new_playlist("Late Night", ["Neon Rain", "Midnight Drive"]),
            spotify_new_playlist("Throwbacks", ["Old Tune"]),
            spotify_new_playlist("Focus Mix", ["Paper Boats", "Golden Hour", "Sea Glass"]),
            spotify_new_playlist("Commute", ["Highway Lines", "Neon Rain"]),
            spotify_new_playlist("Rainy Day", ["Slow Rivers", "Paper Boats"]),
        ],
    ),
}

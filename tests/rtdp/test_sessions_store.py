"""rtdp.store.sessions: the embedded broker's saved sessions and retained messages, on SQLite and PostgreSQL."""

from __future__ import annotations

import peewee as pw

from rtdp.accounts import create_user
from rtdp.models import BrokerMessage, BrokerQueued, Feed
from rtdp.store import create_feed
from rtdp.store.sessions import Changes, Inflight, Queued, Retained, SavedSession, load, save

NOW = 1_800_000_000.0


def session(client_id: str, disconnected: float | None = NOW - 10, *queued: Queued) -> SavedSession:
    return SavedSession(client_id, 7, 3, None, False, disconnected, [("feeds/a/#", 1), ("feeds/b/x", 2)], queued)


def test_what_is_saved_is_loaded(any_db: pw.Database) -> None:
    binary = bytes(range(256))  # payloads are bytes, not text
    save([Changes(sessions=[session("u7/dev", NOW - 10, Queued(5, "feeds/a/t", b"1", 1))])])
    save([Changes(audiences=[(1, ["u7/dev"]), (2, ["gone"])],
                  messages=[(Queued(6, "feeds/a/t", binary, 2), 1), (Queued(7, "feeds/a/t", b"x", 1), 2)])])
    loaded = load(expired_before=NOW - 100, now=NOW)
    assert loaded.sessions == [
        SavedSession(
            "u7/dev", 7, 3, None, False, NOW - 10, [("feeds/a/#", 1), ("feeds/b/x", 2)],
            [Queued(5, "feeds/a/t", b"1", 1), Queued(6, "feeds/a/t", binary, 2)],
        )
    ]
    assert loaded.last_queued_id == 6  # the message for a session that is not saved was left out


def test_a_session_saved_whole_replaces_what_was_saved_of_it(any_db: pw.Database) -> None:
    save([Changes(sessions=[session("s", NOW, Queued(1, "t", b"1", 1), Queued(2, "t", b"2", 1))])])
    save([Changes(floors={"s": 2})])
    assert [q.id for q in load(expired_before=0, now=NOW).sessions[0].queued] == [2]
    save([Changes(sessions=[session("s", None, Queued(3, "t", b"3", 1))])])
    (loaded,) = load(expired_before=0, now=NOW).sessions
    assert loaded.queued == [Queued(3, "t", b"3", 1)]
    assert loaded.disconnected == NOW  # saved while connected (then killed): offline from the restart on
    save([Changes(removed=["s"])])
    assert load(expired_before=0, now=NOW).sessions == []
    assert BrokerQueued.select().count() == 0


def test_a_message_for_many_sessions_is_saved_once_and_swept_when_nobody_waits(any_db: pw.Database) -> None:
    """One row per message however many sessions it is queued for (its audience); each session's floor
    says what it still waits for."""
    audience = [f"u7/s{i}" for i in range(50)]
    first, second = Queued(1, "feeds/a/t", b"1" * 1000, 1), Queued(2, "feeds/a/t", b"2", 1)
    save([Changes(sessions=[session(member) for member in audience])])
    save([Changes(audiences=[(1, audience)], messages=[(first, 1), (second, 1)])])
    assert BrokerMessage.select().count() == 2 and BrokerQueued.select().count() == 0
    assert all(s.queued == [first, second] for s in load(expired_before=0, now=NOW).sessions)
    save([Changes(floors={member: 2 for member in audience[:49]})])  # their full queues dropped the first
    save([Changes(floors={"u7/s0": 1})])  # a floor never goes down
    save([Changes(sweep=True)])
    loaded = {s.client_id: s.queued for s in load(expired_before=0, now=NOW).sessions}
    assert loaded["u7/s0"] == [second] and loaded["u7/s49"] == [first, second]
    assert BrokerMessage.select().count() == 2, "one session still waits for the first"
    save([Changes(removed=["u7/s49"], sweep=True)])
    assert [m.id for m in BrokerMessage.select()] == [2]
    save([Changes(floors={member: 3 for member in audience}, sweep=True)])
    assert BrokerMessage.select().count() == 0


def test_unacknowledged_and_qos2_state_is_saved_and_loaded(any_db: pw.Database) -> None:
    sent, released = Queued(4, "feeds/a/t", b"4", 1), Queued(5, "feeds/a/t", b"5", 2)
    whole = SavedSession(
        "u7/dev", 7, 3, None, False, NOW - 10, [("feeds/a/#", 2)], [Queued(6, "feeds/a/t", b"6", 1)],
        [Inflight(sent, 11), Inflight(released, 12, released=True)], [21, 22],
    )
    save([Changes(sessions=[whole])])
    save([Changes(floors={"u7/dev": 7})])  # the queue's drop leaves what was sent alone
    (loaded,) = load(expired_before=0, now=NOW).sessions
    assert loaded.inflight == [Inflight(sent, 11), Inflight(released, 12, True)]
    assert sorted(loaded.received) == [21, 22]
    assert not loaded.queued


def test_expired_sessions_are_removed_when_loaded(any_db: pw.Database) -> None:
    save([Changes(sessions=[session("old", NOW - 1000, Queued(1, "t", b"1", 1)), session("new", NOW - 10)])])
    assert [s.client_id for s in load(expired_before=NOW - 100, now=NOW).sessions] == ["new"]
    assert BrokerQueued.select().count() == 0


def test_retained_messages_go_with_their_feed(any_db: pw.Database) -> None:
    owner = create_user("ep@nothing.com", "a-password")
    kept, recursive, deleted = (create_feed(name, owner) for name in ("kept", "recursive", "deleted"))
    save([Changes(retained={
        f"feeds/{feed.name}/level": Retained(f"feeds/{feed.name}/level", feed.id, b"1", 1)
        for feed in (kept, recursive, deleted)
    } | {"elsewhere/topic": Retained("elsewhere/topic", None, b"2", None)})])
    recursive.delete_instance(recursive=True)  # Peewee sets the nullable key to NULL
    Feed.delete().where(Feed.id == deleted.id).execute()  # the database cascades
    gone = create_feed("gone", owner)
    Feed.delete().where(Feed.id == gone.id).execute()
    # A retained message recorded before its feed was deleted and saved after: not saved, no error.
    save([Changes(retained={"feeds/gone/level": Retained("feeds/gone/level", gone.id, b"3", 0)})])
    assert sorted(load(expired_before=0, now=NOW).retained) == [
        Retained("elsewhere/topic", None, b"2", None), Retained("feeds/kept/level", kept.id, b"1", 1)
    ]
    save([Changes(retained={"feeds/kept/level": None})])  # cleared
    assert load(expired_before=0, now=NOW).retained == [Retained("elsewhere/topic", None, b"2", None)]

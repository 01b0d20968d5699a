"""The access matrix: every feed route and topic x every kind of caller, asserted against the rule
(rtdp.permissions): read for owner, admin, shares (user, group, write) and the feed's device token;
write for owner, admin, write share and device token; manage (settings, shares) for owner and admin.

HTTP over a real socket (uvicorn on port 0, Mosquitto behind it); topics through the embedded broker's
AccessControl, the code that answers amqtt's publish, subscribe and receive questions. What changes at
once when a share is removed with a stream and a subscription open: tests/e2e/test_sharing.py.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from broker.access import AccessControl, TopicAction
from rtdp.accounts import ServiceAccount, create_token
from rtdp.models import Group, Membership, Share, User
from rtdp.settings import Settings
from rtdp.store import create_axis, create_feed
from tests.viewer.conftest import LiveServer, make_user

PASSWORD = "matrix-password"
ALLOWED = {
    # who: (read, write, manage)
    "anonymous": (False, False, False),
    "other user": (False, False, False),
    "read share via user": (True, False, False),
    "read share via group": (True, False, False),
    "write share": (True, True, False),
    "feed-limited token": (True, True, False),
    "owner": (True, True, True),
    "admin": (True, True, True),
    "disabled user": (False, False, False),
}
_names = itertools.count()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The disabled user's refused logins would otherwise be throttled (429) before the matrix is done.
    return settings.replace(login_attempts=10_000)


@dataclass(frozen=True)
class Caller:
    who: str
    auth: tuple[str, str] | None  # (username, password or token); None: anonymous


def callers() -> list[Caller]:
    owner = make_user("owner@x.org", PASSWORD)
    feed = create_feed("f", owner, x_cast="float")
    create_axis(feed, "a")
    people = {who: make_user(f"{who.replace(' ', '-')}@x.org", PASSWORD) for who in
              ("other user", "read share via user", "read share via group", "write share", "disabled user")}
    make_user("admin@x.org", PASSWORD, admin=True)
    Share.create(feed=feed, user=people["read share via user"], access="read")
    Share.create(feed=feed, user=people["write share"], access="write")
    Share.create(feed=feed, user=people["disabled user"], access="write")
    group = Group.create(name="readers")
    Membership.create(user=people["read share via group"], group=group)
    Share.create(feed=feed, group=group, access="read")
    User.update(is_active=False).where(User.id == people["disabled user"].id).execute()
    device = create_token(owner, feed=feed).token
    result = [Caller("anonymous", None), Caller("feed-limited token", ("device", device)),
              Caller("owner", ("owner@x.org", PASSWORD)), Caller("admin", ("admin@x.org", PASSWORD))]
    result += [Caller(who, (user.email, PASSWORD)) for who, user in people.items()]
    assert {c.who for c in result} == set(ALLOWED)
    return result


def denied_status(caller: Caller) -> int:
    # Without (valid) credentials: a challenge. Signed in: forbidden.
    return 401 if caller.auth is None or caller.who == "disabled user" else 403


def http_checks(base: str) -> list[tuple[str, int, str, str, object]]:
    """(what, level, method, url, json body): level 0 read, 1 write, 2 manage."""
    n = next(_names)
    return [
        ("GET feed", 0, "GET", f"{base}/api/v1/feeds/f", None),
        ("GET axes", 0, "GET", f"{base}/api/v1/feeds/f/axes", None),
        ("GET axis", 0, "GET", f"{base}/api/v1/feeds/f/axes/a", None),
        ("GET points", 0, "GET", f"{base}/api/v1/feeds/f/axes/a/points", None),
        ("GET export", 0, "GET", f"{base}/api/v1/feeds/f/export", None),
        ("GET stream", 0, "STREAM", f"{base}/api/v1/feeds/f/stream", None),
        ("ingest", 1, "GET", f"{base}/service/feed_input.json/f/a?x={n}&y=1", None),
        ("batch", 1, "POST", f"{base}/api/v1/feeds/f/points", [{"axis": "a", "x": n, "y": 2}]),
        ("new axis", 1, "POST", f"{base}/api/v1/feeds/f/axes", {"name": f"axis{n}"}),
        ("PATCH feed", 2, "PATCH", f"{base}/api/v1/feeds/f", {"description": f"d{n}"}),
        ("GET shares", 2, "GET", f"{base}/api/v1/feeds/f/shares", None),
    ]


def status(method: str, url: str, body: object, auth: tuple[str, str] | None) -> int:
    if method == "STREAM":
        with httpx.stream("GET", url, auth=auth, timeout=10) as response:
            return response.status_code
    return httpx.request(method, url, json=body, auth=auth, timeout=10).status_code


def test_http_routes(live_server: LiveServer) -> None:
    failures = []
    for caller in callers():
        for what, level, method, url, body in http_checks(live_server.url):
            got = status(method, url, body, caller.auth)
            ok = ALLOWED[caller.who][level]
            if (200 <= got < 300) != ok or (not ok and got != denied_status(caller)):
                failures.append(f"{caller.who}: {what} -> {got}, expected {'2xx' if ok else denied_status(caller)}")
    assert failures == []


TOPICS = [
    ("publish feeds/f/a", 1, "feeds/f/a", TopicAction.PUBLISH),
    ("subscribe feeds/f/#", 0, "feeds/f/#", TopicAction.SUBSCRIBE),
    ("receive feeds/f/a", 0, "feeds/f/a", TopicAction.RECEIVE),
    ("subscribe rtdp/stored/f", 0, "rtdp/stored/f", TopicAction.SUBSCRIBE),
    ("receive rtdp/stored/f", 0, "rtdp/stored/f", TopicAction.RECEIVE),
    ("receive rtdp/errors/f/a", 0, "rtdp/errors/f/a", TopicAction.RECEIVE),
]


def test_topics(live_server: LiveServer, tmp_path: Path) -> None:
    people = callers()
    access = AccessControl(ServiceAccount.load_or_create(tmp_path / "svc"))

    async def run() -> list[str]:
        failures = []
        for index, caller in enumerate(people):
            client_id = f"client-{index}"
            held = await access.login(*(caller.auth or (None, None)))
            if held is None:
                # Anonymous and disabled callers cannot even connect.
                assert not any(ALLOWED[caller.who]), caller.who
                continue
            access.hold(client_id, held)
            for what, level, topic, action in TOPICS:
                got = await access.permits(client_id, None, topic, action)
                if got != ALLOWED[caller.who][level]:
                    failures.append(f"{caller.who}: {what} -> {got}")
        return failures

    try:
        assert asyncio.run(run()) == []
    finally:
        access.close()


@pytest.mark.parametrize("who", ["anonymous", "disabled user"])
def test_the_ones_without_rights_cannot_connect(live_server: LiveServer, tmp_path: Path, who: str) -> None:
    caller = next(c for c in callers() if c.who == who)
    access = AccessControl(ServiceAccount.load_or_create(tmp_path / "svc"))
    try:
        assert asyncio.run(access.login(*(caller.auth or (None, None)))) is None
    finally:
        access.close()

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from bridge.errors import Rejected
from rtdp.accounts import check_token
from rtdp.codec import Casts, Sample
from rtdp.errors import RtdpError
from rtdp.models import Axis, Feed
from rtdp.settings import BrokerURL, Settings
from tests.support.env import wait_for
from tests.support.mosquitto import MOSQUITTO, Mosquitto, running_mosquitto
from tests.viewer.conftest import LiveServer, Watcher, World, basic, bearer, ready
from viewer.app import create_app
from viewer.ingest import lean_path

URL = "/service/feed_input.json"


def test_point_is_published_and_acknowledged(client: TestClient, world: World, watcher: Watcher) -> None:
    response = client.get(f"{URL}/feed_a/axis_a00?x=1&y=7", headers=basic("ep@nothing.com", "1234"))
    assert response.status_code == 200, response.text
    assert response.json() == {"feed": "feed_a", "axis": "axis_a00", "x": 1, "y": 7}
    # The canonical payload (x always present) reached the broker.
    assert wait_for(lambda: watcher.payloads("feeds/feed_a/axis_a00")) == [[{"x": 1.0, "y": 7.0}]]


def test_original_prefix_bearer_and_form_post(client: TestClient, world: World, watcher: Watcher) -> None:
    response = client.post(
        f"/realtime_data_processor{URL}/feed_t/temp",
        data={"x": "2014-11-22 10:50:42.189000", "y": "21.5"},
        headers=bearer(world.ep_token),
    )
    assert response.status_code == 200, response.text
    assert response.json()["x"] == pytest.approx(1416653442.189)
    response = client.post(f"{URL}/feed_t/temp", json={"y": 3}, headers=basic("anyone", world.ep_token))
    assert response.status_code == 200, response.text
    assert wait_for(lambda: len(watcher.payloads("feeds/feed_t/temp")) == 2)


def test_missing_x_on_datetime_feed_is_now(client: TestClient, world: World, watcher: Watcher) -> None:
    response = client.get(f"{URL}/feed_t/temp?y=1.5", headers=bearer(world.ep_token))
    assert response.status_code == 200
    [[sent]] = wait_for(lambda: watcher.payloads("feeds/feed_t/temp"))
    assert sent["x"] == response.json()["x"]  # the viewer fixed x, so a redelivery is idempotent


BAD_INPUT = [
    ("feed_a/axis_a00", "x=1&y=3.5", "y"),
    ("feed_a/axis_a00", "x=1&y=nan", "y"),
    ("feed_t/temp", "y=inf", "y"),
    ("feed_t/temp", "y=NaN", "y"),
    ("feed_t/temp", "x=2014-13-45&y=1", "x"),
    ("feed_t/temp", "x=yesterday&y=1", "x"),
    ("feed_a/axis_a00", "x=1", "y"),
    ("feed_a/axis_a00", "y=1", "x"),
    ("feed_a/axis_a00", "x=1.5&y=1", "x"),
    ("bad%20feed/axis_a00", "x=1&y=1", "feed"),
    ("feed_a/a+b", "x=1&y=1", "axis"),
    ("feed_a/" + "a" * 65, "x=1&y=1", "axis"),
]


def test_bad_input_is_400_naming_the_field(client: TestClient, world: World, watcher: Watcher) -> None:
    # One app for every case: building the world (argon2 hashes) per case would dominate the run.
    for path, query, field in BAD_INPUT:
        response = client.get(f"{URL}/{path}?{query}", headers=bearer(world.ep_token))
        assert response.status_code == 400, (path, query, response.text)
        body = response.json()
        assert body["code"] == "invalid"
        assert body["field"] == field, (path, query, body)
        assert "Traceback" not in response.text
    assert client.get(f"{URL}/feed_t/temp?y=1", headers=bearer(world.ep_token)).status_code == 200
    assert wait_for(lambda: watcher.payloads("feeds/feed_t/temp"))
    assert watcher.payloads("feeds/feed_a/axis_a00") == []


def test_non_bool_for_bool_feed(client: TestClient, world: World) -> None:
    from rtdp.store import create_feed

    create_feed("switch", world.ep, y_cast="bool")
    ok = client.get(f"{URL}/switch/door?y=open", headers=bearer(world.ep_token))
    assert ok.status_code == 200 and ok.json()["y"] == 1
    bad = client.get(f"{URL}/switch/door?y=maybe", headers=bearer(world.ep_token))
    assert bad.status_code == 400 and bad.json()["field"] == "y"


BAD_CREDENTIALS: list[dict[str, str]] = [
    {},
    basic("ep@nothing.com", "wrong"),
    basic("nobody@nothing.com", "1234"),
    bearer("rtdp_not_a_real_token"),
    {"Authorization": "Basic !!!"},
    {"Authorization": "Digest abc"},
]


def test_missing_or_wrong_credentials_are_401(client: TestClient, world: World) -> None:
    for headers in BAD_CREDENTIALS:
        response = client.get(f"{URL}/feed_a/axis_a00?x=1&y=1", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"].startswith("Basic")
        assert response.json()["code"] == "unauthenticated"
    # The right password right after a wrong one (nothing negative is cached).
    assert client.get(f"{URL}/feed_a/axis_a00?x=1&y=1", headers=basic("ep@nothing.com", "1234")).status_code == 200


def test_permissions(client: TestClient, world: World) -> None:
    query = "x=1&y=1"
    # A token limited to another feed, a read-only token, another user: 403.
    assert client.get(f"{URL}/feed_a/axis_a00?{query}", headers=bearer(world.ep_other_feed_token)).status_code == 403
    assert client.get(f"{URL}/feed_a/axis_a00?{query}", headers=bearer(world.ep_read_token)).status_code == 403
    assert client.get(f"{URL}/feed_a/axis_a00?{query}", headers=basic("ap@nothing.com", "1234")).status_code == 403
    assert client.get(f"{URL}/feed_a/axis_a00?{query}", headers=bearer(world.ap_token)).status_code == 403
    # The limited token writes its own feed; the admin writes anyone's.
    assert client.get(f"{URL}/feed_t/temp?y=1", headers=bearer(world.ep_other_feed_token)).status_code == 200
    assert client.get(f"{URL}/feed_a/axis_a00?{query}", headers=bearer(world.admin_token)).status_code == 200


def test_auto_create_makes_the_caller_owner(client: TestClient, world: World, watcher: Watcher) -> None:
    response = client.get(f"{URL}/brand_new/first?y=1", headers=basic("ap@nothing.com", "1234"))
    assert response.status_code == 200, response.text
    feed = Feed.get(Feed.name == "brand_new")
    assert feed.owner_id == world.ap.id
    assert Axis.select().where((Axis.feed == feed.id) & (Axis.name == "first")).exists()
    # A new axis of an existing feed as well.
    assert client.get(f"{URL}/feed_a/axis_new?x=1&y=2", headers=bearer(world.ep_token)).status_code == 200
    # A feed-limited token may not create feeds.
    assert client.get(f"{URL}/other_new/a?y=1", headers=bearer(world.ep_other_feed_token)).status_code == 403


@pytest.mark.parametrize("method", ["GET", "POST"])  # the lean ASGI path and the Starlette route
def test_a_bad_value_auto_creates_nothing(client: TestClient, world: World, method: str) -> None:
    """Bad input changes nothing else: no empty feed or axis is left behind by a refused point."""
    headers = basic("ap@nothing.com", "1234")
    assert client.request(method, f"{URL}/never_made/a?y=abc", headers=headers).status_code == 400
    assert not Feed.select().where(Feed.name == "never_made").exists()
    assert client.request(method, f"{URL}/feed_ap/never_made?y=2.5", headers=headers).status_code == 400
    assert not Axis.select().where(Axis.name == "never_made").exists()
    # A good value afterwards still creates them (nothing stale was cached by the refusals).
    assert client.request(method, f"{URL}/feed_ap/never_made?y=2", headers=headers).status_code == 200
    assert Axis.select().where(Axis.name == "never_made").exists()


def test_auto_create_off(settings: Settings, watcher: Watcher) -> None:
    with TestClient(create_app(settings.replace(auto_create=False))) as client:
        wait_for(lambda: ready(client))
        from tests.viewer.conftest import make_world

        world = make_world()
        missing_feed = client.get(f"{URL}/nope/a?y=1", headers=bearer(world.ep_token))
        assert missing_feed.status_code == 404 and missing_feed.json()["code"] == "not_found"
        missing_axis = client.get(f"{URL}/feed_t/nope?y=1", headers=bearer(world.ep_token))
        assert missing_axis.status_code == 404
        assert not Feed.select().where(Feed.name == "nope").exists()
        assert client.get(f"{URL}/feed_t/temp?y=1", headers=bearer(world.ep_token)).status_code == 200


def test_405_413_414(client: TestClient, world: World, settings: Settings) -> None:
    headers = bearer(world.ep_token)
    assert client.put(f"{URL}/feed_t/temp?y=1", headers=headers).status_code == 405
    assert client.delete(f"{URL}/feed_t/temp?y=1", headers=headers).json()["code"] == "method_not_allowed"
    big = b"y=1&pad=" + b"a" * (settings.max_payload + 1)
    response = client.post(
        f"{URL}/feed_t/temp", content=big, headers={**headers, "Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    huge = client.get(f"{URL}/feed_t/temp?y=1&pad={'a' * 9000}", headers=headers)
    assert huge.status_code == 414


def test_metrics_count_outcomes(client: TestClient, world: World) -> None:
    client.get(f"{URL}/feed_t/temp?y=1", headers=bearer(world.ep_token))
    client.get(f"{URL}/feed_t/temp?y=x", headers=bearer(world.ep_token))
    text = client.get("/metrics").text
    assert 'rtdp_http_ingest_total{outcome="accepted"} 1.0' in text
    assert 'rtdp_http_ingest_total{outcome="invalid"} 1.0' in text
    assert "rtdp_http_pending_publishes 0.0" in text


def test_broker_down_is_503_and_not_ready(client: TestClient, world: World, mosquitto: Mosquitto) -> None:
    headers = bearer(world.ep_token)
    assert client.get(f"{URL}/feed_t/temp?y=1", headers=headers).status_code == 200
    mosquitto.process.terminate()
    mosquitto.process.wait(5)
    wait_for(lambda: client.get("/readyz").status_code == 503, what="/readyz to fail")
    response = client.get(f"{URL}/feed_t/temp?y=1", headers=headers)
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert response.json()["code"] == "unavailable"


def test_unacknowledged_point_is_never_200(client: TestClient, world: World, mosquitto: Mosquitto) -> None:
    """A frozen broker (connected, never acknowledging): the request times out with 503."""
    headers = bearer(world.ep_token)
    assert client.get(f"{URL}/feed_t/temp?y=1", headers=headers).status_code == 200
    mosquitto.process.send_signal(signal.SIGSTOP)
    try:
        response = client.get(f"{URL}/feed_t/temp?y=2", headers=headers)
        assert response.status_code == 503
        assert response.headers["retry-after"]
        # The caller gave up, paho did not: the mid stays taken (counted against max_pending) until its PUBACK.
        publisher = client.app.state.viewer.publisher  # type: ignore[attr-defined]
        assert (publisher.pending, publisher.outstanding) == (0, 1)
    finally:
        mosquitto.process.send_signal(signal.SIGCONT)
    wait_for(lambda: publisher.outstanding == 0, what="the late PUBACK to free the mid")


def test_full_pending_window_is_503(settings: Settings, mosquitto: Mosquitto) -> None:
    with TestClient(create_app(settings.replace(http_max_pending=1, http_publish_timeout=5.0))) as client:
        wait_for(lambda: ready(client))
        from tests.viewer.conftest import make_world

        headers = bearer(make_world().ep_token)
        assert client.get(f"{URL}/feed_t/temp?y=1", headers=headers).status_code == 200  # warms the caches
        mosquitto.process.send_signal(signal.SIGSTOP)
        first: dict[str, Any] = {}
        try:
            waiting = threading.Thread(
                target=lambda: first.update(r=client.get(f"{URL}/feed_t/temp?y=2", headers=headers))
            )
            waiting.start()
            wait_for(lambda: 'rtdp_http_pending_publishes 1.0' in client.get("/metrics").text)
            response = client.get(f"{URL}/feed_t/temp?y=3", headers=headers)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
        finally:
            mosquitto.process.send_signal(signal.SIGCONT)
        waiting.join(10)
        # The waiting one was acknowledged once the broker woke up, within its timeout.
        assert first["r"].status_code == 200


def test_a_point_answered_503_after_a_lost_connection_is_not_sent_again(settings: Settings, tmp_path: Path) -> None:
    """paho resends unacknowledged QoS 1 publishes after reconnecting, so a point whose caller got 503
    (and may retry it) used to be stored anyway. The restarted broker logs every PUBLISH it receives."""
    with running_mosquitto(tmp_path / "m", extra_config="log_type all") as mosq:
        app = create_app(settings.replace(broker=BrokerURL.parse(mosq.url), http_publish_timeout=30.0))
        with TestClient(app) as client:
            wait_for(lambda: ready(client))
            from tests.viewer.conftest import make_world

            headers = bearer(make_world().ep_token)
            assert client.get(f"{URL}/feed_t/temp?y=1", headers=headers).status_code == 200
            mosq.process.send_signal(signal.SIGSTOP)  # it will never read the next publish
            answer: dict[str, Any] = {}
            waiting = threading.Thread(
                target=lambda: answer.update(r=client.get(f"{URL}/feed_t/temp?y=2", headers=headers))
            )
            waiting.start()
            wait_for(lambda: "rtdp_http_pending_publishes 1.0" in client.get("/metrics").text)
            mosq.process.kill()  # the connection drops with the publish unacknowledged
            mosq.process.wait(5)
            waiting.join(20)
            assert answer["r"].status_code == 503, answer["r"].text
            log = tmp_path / "m" / "restarted.log"
            with log.open("wb") as out:
                restarted = subprocess.Popen([MOSQUITTO or "mosquitto", "-c", str(mosq.config)], stdout=out,
                                             stderr=subprocess.STDOUT)
                try:
                    wait_for(lambda: ready(client), timeout=30, what="the viewer to reconnect")
                    assert client.get(f"{URL}/feed_t/temp?y=3", headers=headers).status_code == 200
                finally:
                    restarted.terminate()
                    restarted.wait(5)
            publishes = [line for line in log.read_text().splitlines()
                         if "Received PUBLISH" in line and "feeds/feed_t/temp" in line]
            assert len(publishes) == 1, publishes  # y=3 only: y=2 was not resent


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": headers, "query_string": b"y=1"}


def test_lean_path_takes_only_script_gets_with_a_header() -> None:
    auth = [(b"authorization", b"Bearer x")]
    assert lean_path(_scope("GET", f"{URL}/feed_a/axis_a00", auth)) == ("feed_a", "axis_a00")
    assert lean_path(_scope("GET", f"/realtime_data_processor{URL}/f/a", auth)) == ("f", "a")
    # The Starlette app answers the rest: bodies, HEAD, the session (CSRF), and paths the route would refuse.
    assert lean_path(_scope("POST", f"{URL}/feed_a/axis_a00", auth)) is None
    assert lean_path(_scope("HEAD", f"{URL}/feed_a/axis_a00", auth)) is None
    assert lean_path(_scope("GET", f"{URL}/feed_a/axis_a00", [(b"cookie", b"rtdp_session=x")])) is None
    for path in (f"{URL}/feed_a", f"{URL}/feed_a/", f"{URL}//a", f"{URL}/feed_a/axis/", f"{URL}/f/a/b", "/api/v1/x"):
        assert lean_path(_scope("GET", path, auth)) is None, path


def test_lean_answers_byte_for_byte_like_the_route(client: TestClient, world: World) -> None:
    lean = client.get(f"{URL}/feed_a/axis_a00?x=1&y=7", headers=bearer(world.ep_token))
    route = client.post(f"{URL}/feed_a/axis_a00", data={"x": "1", "y": "7"}, headers=bearer(world.ep_token))
    assert lean.status_code == route.status_code == 200
    assert lean.content == route.content == b'{"feed":"feed_a","axis":"axis_a00","x":1,"y":7}'
    assert lean.headers["content-type"] == route.headers["content-type"] == "application/json"
    sent = client.get(f"{URL}/feed_t/temp?x=1416653442.189&y=0.1", headers=bearer(world.ep_token))
    assert sent.json() == {"feed": "feed_t", "axis": "temp", "x": 1416653442.189, "y": 0.1}
    # Errors too: the same JSON and headers from either path.
    for response in (
        client.get(f"{URL}/feed_a/axis_a00?x=1&y=3.5", headers=bearer(world.ep_token)),
        client.post(f"{URL}/feed_a/axis_a00", data={"x": "1", "y": "3.5"}, headers=bearer(world.ep_token)),
    ):
        assert response.status_code == 400 and response.json()["field"] == "y"
    wrong = [
        client.get(f"{URL}/feed_a/axis_a00?y=1", headers=bearer("rtdp_wrong")),  # lean path
        client.get(f"{URL}/feed_a/axis_a00?y=1"),  # no header: the Starlette route
    ]
    assert [r.status_code for r in wrong] == [401, 401]
    assert wrong[0].headers["www-authenticate"] == wrong[1].headers["www-authenticate"]
    # A path the route does not match is still the app's JSON 404.
    assert client.get(f"{URL}/feed_a/axis_a00/extra?y=1", headers=bearer(world.ep_token)).status_code == 404


def _raw_exchange(live: LiveServer, request: bytes, answers: int) -> list[bytes]:
    """Send `request` (one or more pipelined requests) on one socket; the first `answers` answers whole."""
    with socket.create_connection(("127.0.0.1", live.server.port), timeout=10) as sock:
        sock.sendall(request)
        received, found = b"", list[bytes]()
        while len(found) < answers:
            head_end = received.find(b"\r\n\r\n")
            if head_end >= 0:
                length = int(re.search(rb"content-length: (\d+)", received[:head_end], re.I).group(1))  # type: ignore[union-attr]
                if len(received) >= head_end + 4 + length:
                    found.append(received[: head_end + 4 + length])
                    received = received[head_end + 4 + length :]
                    continue
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(found)} answers"
            received += chunk
        return found


def test_the_connection_answers_script_gets_like_the_app(live_server: LiveServer, watcher: Watcher) -> None:
    """On a real server the connection writes the lean answers itself (viewer.connection): same status,
    body and headers (security headers included) as the app's route, keep-alive and pipelining kept."""
    from tests.viewer.conftest import make_world

    world = make_world()
    auth = bearer(world.ep_token)
    with httpx.Client(base_url=live_server.url) as http:
        lean = http.get(f"{URL}/feed_a/axis_a00?x=1&y=7", headers=auth)
        route = http.post(f"{URL}/feed_a/axis_a00", data={"x": "2", "y": "7"}, headers=auth)
        assert lean.status_code == route.status_code == 200
        assert lean.content == b'{"feed":"feed_a","axis":"axis_a00","x":1,"y":7}'
        skip = {"content-length", "date"}
        assert {k: v for k, v in lean.headers.items() if k not in skip} == {
            k: v for k, v in route.headers.items() if k not in skip
        }
        assert "content-security-policy" in lean.headers and "date" in lean.headers
        for wrong in ({"Authorization": "Bearer rtdp_wrong"}, {"Authorization": "Basic !"}):
            refused = http.get(f"{URL}/feed_a/axis_a00?y=1", headers=wrong)
            assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
            assert refused.json()["code"] == "unauthenticated" and "x-frame-options" in refused.headers
        bad = http.get(f"{URL}/feed_a/axis_a00?x=1&y=3.5", headers=auth)
        assert bad.status_code == 400 and bad.json()["field"] == "y"
        assert http.get(f"{URL}/feed_ap/axis?y=1", headers=auth).status_code in (403, 404)  # ap's feed
        assert http.get(f"{URL}/feed_a/axis_a00?y=1", headers=bearer(world.ap_token)).status_code == 403
    # Two requests in one write: two answers, in order, on the same connection.
    token = world.ep_token.encode()
    get = b"GET " + URL.encode() + b"/feed_a/axis_a00?x=%d&y=%d HTTP/1.1\r\nhost: x\r\nauthorization: Bearer %s\r\n\r\n"
    first, second = _raw_exchange(live_server, get % (3, 30, token) + get % (4, 40, token), 2)
    assert first.startswith(b"HTTP/1.1 200") and first.endswith(b'"x":3,"y":30}')
    assert second.startswith(b"HTTP/1.1 200") and second.endswith(b'"x":4,"y":40}')
    # HTTP/1.0 without keep-alive: answered, then closed.
    path = URL.encode()
    with socket.create_connection(("127.0.0.1", live_server.server.port), timeout=10) as sock:
        sock.sendall(b"GET %s/feed_a/axis_a00?x=5&y=50 HTTP/1.0\r\nauthorization: Bearer %s\r\n\r\n" % (path, token))
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        assert received.startswith(b"HTTP/1.1 200") and b"connection: close" in received
        assert received.endswith(b'"x":5,"y":50}')
    wait_for(lambda: len(watcher.payloads("feeds/feed_a/axis_a00")) == 5, what="every point at the broker")


def test_many_concurrent_points_all_acknowledged(live_server: LiveServer, watcher: Watcher) -> None:
    """Many publishes in one loop iteration leave in one send and their PUBACKs arrive in one recv:
    every 200 must still match a point the broker has."""
    from tests.viewer.conftest import make_world

    token = make_world().ep_token

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live_server.url, headers=bearer(token), timeout=10) as http:
            return await asyncio.gather(*(http.get(f"{URL}/feed_a/axis_a00?x={i}&y={i}") for i in range(300)))

    responses = asyncio.run(burst())
    refused = [(r.status_code, r.text) for r in responses if r.status_code != 200]
    assert not refused, refused
    wait_for(lambda: len(watcher.payloads("feeds/feed_a/axis_a00")) == 300, what="every point at the broker")
    assert sorted(p[0]["x"] for p in watcher.payloads("feeds/feed_a/axis_a00")) == [float(i) for i in range(300)]


def test_concurrent_requests_with_new_credentials_check_them_once(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 connections opened at once with a token not yet cached: one check in the database (each
    check records the token's use with a commit), not 100 queued in the pool before any other request."""
    from tests.viewer.conftest import make_world
    from viewer import auth

    token = make_world().ep_token
    calls: list[str] = []

    def counted(secret: str, address: str | None = None) -> Any:
        calls.append(secret)
        return check_token(secret, address)

    monkeypatch.setattr(auth, "check_token", counted)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live_server.url, headers=bearer(token), timeout=10) as http:
            return await asyncio.gather(*(http.get(f"{URL}/feed_a/axis_a00?x={i}&y={i}") for i in range(100)))

    assert [r.status_code for r in asyncio.run(burst())] == [200] * 100
    assert calls == [token]


def test_concurrent_requests_after_a_write_decision_expired_decide_it_once(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a cached write decision expires, every open connection misses it at once: one decision in the
    database for all of them, not one each queued in the pool."""
    from tests.viewer.conftest import make_world
    from viewer import ingest

    token = make_world().ep_token
    calls: list[tuple[str, str]] = []
    arrived: list[str] = []
    resolve, writable_target = ingest._resolve, ingest.writable_target

    async def counted_arrival(state: Any, principal: Any, feed: str, axis: str) -> Any:
        arrived.append(axis)
        return await writable_target(state, principal, feed, axis)

    def counted(principal: Any, feed: str, axis: str, *args: Any) -> Any:
        calls.append((feed, axis))
        if len(calls) > 1:  # after the expiry: not decided before every request asked, as under load
            wait_for(lambda: len(arrived) >= 100, what="every request to ask")
        return resolve(principal, feed, axis, *args)

    monkeypatch.setattr(ingest, "_resolve", counted)
    monkeypatch.setattr(ingest, "writable_target", counted_arrival)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live_server.url, headers=bearer(token), timeout=10) as http:
            assert (await http.get(f"{URL}/feed_a/axis_a00?x=1000&y=1")).status_code == 200  # credentials cached
            live_server.app.state.viewer.decisions.clear()  # as when the decision expires
            arrived.clear()
            return await asyncio.gather(*(http.get(f"{URL}/feed_a/axis_a00?x={i}&y={i}") for i in range(100)))

    assert [r.status_code for r in asyncio.run(burst())] == [200] * 100
    assert calls == [("feed_a", "axis_a00"), ("feed_a", "axis_a00")]  # before the expiry, and once after


def test_a_write_decision_read_before_a_change_of_rights_is_not_cached(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decisions are forgotten when rights change (a feed made private, deleted, a share removed); a decision
    whose database read began before that must not be cached after it, where every request, and with the
    single-flight every request waiting on it, would trust it for decision_ttl."""
    from tests.viewer.conftest import make_world
    from viewer import ingest

    token = make_world().ep_token
    state = live_server.app.state.viewer
    resolve = ingest._resolve

    def changed_meanwhile(*args: Any) -> Any:
        answer = resolve(*args)
        state.forget_decisions()  # as a change of rights landing while this read was under way
        return answer

    monkeypatch.setattr(ingest, "_resolve", changed_meanwhile)
    with httpx.Client(base_url=live_server.url, headers=bearer(token), timeout=10) as http:
        assert http.get(f"{URL}/feed_a/axis_a00?x=1&y=1").status_code == 200
    assert not any(key[0] == "write" for key in state.decisions._data)


def test_query_fields_agree_with_parse_qsl() -> None:
    from urllib.parse import parse_qsl

    from viewer.ingest import query_fields

    for query in (b"", b"y=1", b"x=1&y=2", b"y=1&y=2", b"y", b"y=&x=1", b"&&y=3&", b"y=a=b", b"y=%31", b"y=1+2",
                  b"x=2014-11-22T10:50:42Z&y=\xe9", b"=1&y=2"):
        assert query_fields(query) == dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)), query


def test_the_feed_quota_holds_on_every_way_to_create_a_feed(settings: Settings, watcher: Watcher) -> None:
    """ep owns two feeds, ap one; with a quota of two, ap may create one more and ep none, admins any."""
    from tests.viewer.conftest import make_world
    from tests.viewer.test_pages import csrf, login

    with TestClient(create_app(settings.replace(feed_quota=2))) as client:
        wait_for(lambda: ready(client))
        world = make_world()
        for method in ("GET", "POST"):  # the lean ASGI path and the Starlette route
            refused = client.request(method, f"{URL}/ep_third/a?y=1", headers=bearer(world.ep_token))
            assert refused.status_code == 403 and refused.json()["code"] == "feed_quota", refused.text
            assert "feed quota reached: ep@nothing.com owns 2 feeds and may own 2" in refused.json()["error"]
        api = client.post("/api/v1/feeds", json={"name": "ep_api"}, headers=bearer(world.ep_token))
        assert api.status_code == 403 and api.json()["code"] == "feed_quota"
        batch = client.post("/api/v1/feeds/ep_batch/points", json=[{"axis": "a", "y": 1}],
                            headers=bearer(world.ep_token))
        assert batch.status_code == 403 and batch.json()["code"] == "feed_quota"
        login(client, "ep@nothing.com", "1234")
        page = client.post("/feeds", data={"name": "ep_page", "csrf_token": csrf(client, "/")})
        assert page.status_code == 403 and "feed quota reached" in page.text
        assert not Feed.select().where(Feed.name.in_(["ep_third", "ep_api", "ep_page", "ep_batch"])).exists()
        # Writing to feeds one owns is not creating one.
        assert client.get(f"{URL}/feed_t/temp?y=1", headers=bearer(world.ep_token)).status_code == 200
        assert client.get(f"{URL}/ap_second/a?y=1", headers=bearer(world.ap_token)).status_code == 200
        assert client.get(f"{URL}/ap_third/a?y=1", headers=bearer(world.ap_token)).status_code == 403
        for n in range(3):
            answer = client.post("/api/v1/feeds", json={"name": f"admin_{n}"}, headers=bearer(world.admin_token))
            assert answer.status_code == 201, answer.text


class HeldReceipts:
    """`rtdp serve`'s in-process broker (rtdp.handoff.Direct) as a stand-in: `ingest` stores at once, and
    each `offer` returns a receipt the test resolves (None: stored), or None while `full`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bytes]] = []
        self.receipts: list[asyncio.Future[RtdpError | None]] = []
        self.full = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def ingest(self, topic: str, payload: bytes, casts: Casts, samples: Sequence[Sample], timeout: float) -> None:
        self.calls.append(("ingest", topic, payload))

    def offer(
        self, topic: str, payload: bytes, casts: Casts, samples: Sequence[Sample]
    ) -> asyncio.Future[RtdpError | None] | None:
        self.calls.append(("offer", topic, payload))
        if self.full:
            return None
        self._loop = asyncio.get_running_loop()
        receipt: asyncio.Future[RtdpError | None] = self._loop.create_future()
        self.receipts.append(receipt)
        return receipt

    def settle(self, index: int, outcome: RtdpError | None) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.receipts[index].set_result, outcome)


def test_cached_requests_are_answered_from_their_receipt_with_the_same_answers(settings: Settings) -> None:
    """rtdp serve's path without a task (viewer.ingest.lean_now): once credentials and write decision are
    cached, a GET is handed over with `offer` and answered only when its receipt is resolved: 200 once
    stored, the writer's refusal as the long way answers it, 503 when not stored in time; bad input is
    refused before anything is handed over; when the broker cannot take it at once, the long way."""
    from tests.viewer.conftest import make_world, serving

    direct = HeldReceipts()
    with serving(settings.replace(http_publish_timeout=1.0), direct=direct) as live, ThreadPoolExecutor(2) as pool:
        world = make_world()
        url = f"{live.url}{URL}/feed_a/axis_a00"

        def get(**params: object) -> httpx.Response:
            with httpx.Client(headers=bearer(world.ep_token), timeout=10) as client:
                return client.get(url, params=params)

        # Cold caches: the long way, which fills them.
        assert get(x=1, y=7).status_code == 200
        assert direct.calls == [("ingest", "feeds/feed_a/axis_a00", b'[{"x":1.0,"y":7.0}]')]
        # Stored: answered once the receipt says so, byte for byte as the long way answers.
        stored = pool.submit(get, x=2, y=8)
        wait_for(lambda: len(direct.receipts) == 1, what="the point offered")
        assert direct.calls[-1] == ("offer", "feeds/feed_a/axis_a00", b'[{"x":2.0,"y":8.0}]')
        assert not stored.done()
        direct.settle(0, None)
        assert stored.result().status_code == 200
        assert stored.result().content == b'{"feed":"feed_a","axis":"axis_a00","x":2,"y":8}'
        assert stored.result().headers["content-type"] == "application/json"
        assert stored.result().headers["x-content-type-options"] == "nosniff"
        # Refused by the writer: its error, as JSON.
        refused = pool.submit(get, x=3, y=9)
        wait_for(lambda: len(direct.receipts) == 2, what="the second point offered")
        direct.settle(1, Rejected("unknown_axis", "no such axis", axis="axis_a00"))
        assert refused.result().status_code == 400
        assert refused.result().json() == {"error": "no such axis", "code": "unknown_axis", "axis": "axis_a00"}
        # Not stored in time: 503 with Retry-After (the writer's later outcome is left alone).
        late = get(x=4, y=10)
        assert late.status_code == 503 and late.headers["retry-after"] == "2"
        assert late.json()["code"] == "unavailable" and "not stored in time" in late.json()["error"]
        direct.settle(2, None)
        # Bad input: refused at once, nothing offered.
        offered = len(direct.calls)
        bad = get(x=5, y=2.5)
        assert bad.status_code == 400 and bad.json()["field"] == "y"
        assert len(direct.calls) == offered
        # No room at once: the long way.
        direct.full = True
        assert get(x=6, y=11).status_code == 200
        assert [call[0] for call in direct.calls[-2:]] == ["offer", "ingest"]
        metrics = httpx.get(f"{live.url}/metrics").text
        assert 'rtdp_http_ingest_total{outcome="accepted"} 3.0' in metrics
        assert 'rtdp_http_ingest_total{outcome="unknown_axis"} 1.0' in metrics
        assert 'rtdp_http_ingest_total{outcome="invalid"} 1.0' in metrics
        assert 'rtdp_http_ingest_total{outcome="unavailable"} 1.0' in metrics
        assert "rtdp_http_ingest_points_total 3.0" in metrics

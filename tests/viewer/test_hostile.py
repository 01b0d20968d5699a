"""Issue 11, the web side: one test per finding (numbered as in the issue), each an attack that used to
work. The broker's findings (#3, #4, #6, #13, #15 and MQTT's part of #2) are tested in tests/broker."""

from __future__ import annotations

import http.client
import re
import select
import socket
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from rtdp.accounts import normalize_email
from rtdp.casts import MAX_EPOCH, MIN_EPOCH, parse_datetime
from rtdp.codec import Sample
from rtdp.database import open_database
from rtdp.errors import InvalidInput
from rtdp.models import Axis, User
from rtdp.settings import Settings
from rtdp.store import create_axis, write_points
from tests.support.env import wait_for
from tests.viewer.conftest import LiveServer, World, basic, bearer, make_world, ready, serving
from tests.viewer.test_pages import CSRF_RE, csrf, login
from viewer.app import create_app
from viewer.session import SESSION_COOKIE
from viewer.state import ViewerState

URL = "/service/feed_input.json"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Generous sign-up and login limits by default: the tests of those limits set their own.
    return settings.replace(signups_per_hour=1000, login_attempts=1000)


@contextmanager
def app_client(settings: Settings, address: str = "testclient", **changes: Any) -> Iterator[TestClient]:
    with TestClient(create_app(settings.replace(**changes)), client=(address, 50000)) as client:
        wait_for(lambda: ready(client), what="the viewer to be ready")
        yield client


def _state(client: TestClient) -> ViewerState:
    state: ViewerState = client.app.state.viewer  # type: ignore[attr-defined]
    return state


# 1. No limit on the request line or header size.


def _connect(live: LiveServer, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", live.server.port), timeout=10, source_address=(source, 0))
    return sock


def _answer(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (or the status line, for a kept one)."""
    received = b""
    while b"\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20_000 + b"\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\nhost: x\r\n" + b"x-many: aaaaaaaaaa\r\n" * 1000 + b"\r\n", b"431"),
        (b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 15_000 + b"\r\n\r\n", b"200"),
    ],
)
def test_01_a_request_head_beyond_16_kib_is_refused(live_server: LiveServer, head: bytes, status: bytes) -> None:
    with _connect(live_server) as sock:
        sock.sendall(head)
        assert _answer(sock).startswith(b"HTTP/1.1 " + status)


def _send_endless_header(sock: socket.socket, size: int) -> None:
    """A request head whose header never ends, `size` bytes of it (or until the server closes)."""
    sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nx-endless: ")
    sent = 0
    try:
        while sent < size:
            sock.sendall(b"a" * 65536)
            sent += 65536
    except OSError:
        pass  # closed once refused: the point is that it was


def test_01_an_endless_header_is_not_kept(live_server: LiveServer) -> None:
    with _connect(live_server) as sock:
        # 64 MiB without an end: refused after the first 16 KiB, the rest read and dropped.
        _send_endless_header(sock, 64 * 1024 * 1024)
        assert _answer(sock).startswith(b"HTTP/1.1 431")
    assert httpx.get(f"{live_server.url}/healthz").status_code == 200


def test_01_an_endless_header_is_no_longer_read_once_refused(live_server: LiveServer) -> None:
    """After the 431 the server reads at most DRAIN bytes more, then none until it closes: an endless
    sender waits on a full window instead of having the event loop read (and drop) it at full speed."""
    with _connect(live_server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nx-endless: ")
        sock.settimeout(0.2)
        accepted, chunk = 0, b"a" * 65536
        deadline = time.monotonic() + 3  # the server closes LINGER (1 s) after the 431
        while time.monotonic() < deadline:
            try:
                accepted += sock.send(chunk)
            except TimeoutError:
                continue  # the window is full: the server is not reading
            except OSError:
                break  # closed
    # The kernel's buffers on both sides (a few MiB on loopback) plus DRAIN; reading on would be far more.
    assert accepted < 24 * 1024 * 1024, accepted
    assert httpx.get(f"{live_server.url}/healthz").status_code == 200


# 2. Idle connections were never dropped and there was no connection cap (HTTP).


def _closed_by_server(sock: socket.socket, trickle: bool) -> bool:
    """Send one byte of a request head every loop (when `trickle`), until the server closes."""
    sock.sendall(b"GET / HTTP/1.1\r\n")
    for _ in range(200):
        readable, _, _ = select.select([sock], [], [], 0.1)
        if readable:
            try:
                return sock.recv(1024) == b""
            except ConnectionResetError:
                return True  # closed while bytes we trickled were unread: the kernel answers with a reset
        if trickle:
            try:
                sock.sendall(b"x")
            except OSError:
                return True
    return False


@pytest.mark.parametrize("trickle", [False, True])
def test_02_a_head_not_sent_within_the_header_timeout_closes_the_connection(settings: Settings, trickle: bool) -> None:
    with serving(settings.replace(http_header_timeout=0.5)) as live, _connect(live) as sock:
        assert _closed_by_server(sock, trickle)


def test_02_a_connection_that_never_sends_is_closed(settings: Settings) -> None:
    with serving(settings.replace(http_header_timeout=0.5)) as live, _connect(live) as sock:
        readable, _, _ = select.select([sock], [], [], 20)
        assert readable and sock.recv(1024) == b""


def _closed_within(sock: socket.socket, seconds: float, trickle: bool) -> bool:
    """Read (and drop) what the server sends until it closes, sending a byte of a next head every 0.1 s
    when `trickle`; False if it is still open after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.1)
        if readable and sock.recv(65536) == b"":
            return True
        if trickle:
            try:
                sock.sendall(b"x" if sock.fileno() >= 0 else b"")
            except OSError:
                return True
    return False


@pytest.mark.parametrize("trickle", [False, True])
def test_02_after_an_answer_a_quiet_or_trickling_connection_is_closed(settings: Settings, trickle: bool) -> None:
    """Quiet after a response: the keep-alive timeout closes it. Sending its next head slowly: the header
    timeout, counted from the response, closes it however long keep-alive would wait."""
    timeouts = {"http_keepalive": 30.0, "http_header_timeout": 0.5} if trickle else {"http_keepalive": 0.5}
    with serving(settings.replace(**timeouts)) as live, _connect(live) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _answer(sock).startswith(b"HTTP/1.1 200")
        if trickle:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()
        assert _closed_within(sock, 10, trickle)
        assert time.monotonic() - started < 5


def test_02_a_kept_connection_that_goes_on_sending_requests_stays_open(settings: Settings) -> None:
    """Requests closer together than both timeouts keep one connection for longer than either (the one timer
    per connection finds it busy or freshly answered and waits again)."""
    with serving(settings.replace(http_keepalive=0.5, http_header_timeout=0.5)) as live:
        connection = http.client.HTTPConnection("127.0.0.1", live.server.port, timeout=10)
        try:
            started = time.monotonic()
            connection.request("GET", "/healthz")
            first = connection.sock
            while time.monotonic() - started < 2.0:
                response = connection.getresponse()
                assert response.status == 200 and response.read()
                time.sleep(0.2)
                connection.request("GET", "/healthz")
                assert connection.sock is first
            assert connection.getresponse().status == 200
        finally:
            connection.close()


def test_02_connections_are_capped_per_address_and_in_total(settings: Settings) -> None:
    limited = settings.replace(http_max_connections=4, http_connections_per_ip=2)
    with serving(limited) as live:
        held = [_connect(live), _connect(live)]
        try:
            with _connect(live) as third:
                assert _answer(third).startswith(b"HTTP/1.1 503")
            held += [_connect(live, "127.0.0.2"), _connect(live, "127.0.0.3")]
            with _connect(live, "127.0.0.4") as fifth:
                assert _answer(fifth).startswith(b"HTTP/1.1 503")
        finally:
            for sock in held:
                sock.close()
        # Once they are gone, everyone is served again.
        wait_for(lambda: not live.server.server_state.connections, what="the held connections to close")
        assert httpx.get(f"{live.url}/healthz").status_code == 200


def test_02_connections_closed_before_a_request_leave_nothing_behind(live_server: LiveServer) -> None:
    for _ in range(50):
        _connect(live_server).close()
    wait_for(lambda: not live_server.server.server_state.connections, what="every connection to be let go")


# 5. A datetime with a UTC offset landing outside years 1-9999.


@pytest.mark.parametrize("x", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_05_an_offset_time_outside_years_1_to_9999_is_refused(client: TestClient, world: World, x: str) -> None:
    answer = client.get(f"{URL}/feed_t/temp", params={"x": x, "y": "1"}, headers=bearer(world.ep_token))
    assert answer.status_code == 400 and answer.json()["field"] == "x"
    # MQTT decodes with the same cast, so the broker refuses it too.
    with pytest.raises(InvalidInput):
        parse_datetime(x, UTC)


def test_05_pages_and_exports_survive_such_a_point_stored_before_the_fix(client: TestClient, world: World) -> None:
    axis = Axis.get((Axis.feed == world.feed_t.id) & (Axis.name == "temp"))
    write_points([(axis.id, Sample(MIN_EPOCH - 1800, 1.0)), (axis.id, Sample(MAX_EPOCH + 1800, 2.0))])
    login(client, "ep@nothing.com", "1234")
    assert client.get("/feeds/feed_t/axes/temp").status_code == 200
    assert client.get("/feeds/feed_t").status_code == 200
    csv = client.get("/api/v1/feeds/feed_t/export?format=csv")
    assert csv.status_code == 200 and len(csv.text.strip().splitlines()) == 3  # header and both points
    exported = client.get("/api/v1/feeds/feed_t/export?format=json")
    assert exported.status_code == 200 and len(exported.json()) == 2


# 7. Brute force: login form, HTTP Basic; hashing apart from the database pool.


def test_07_the_login_form_is_throttled_per_account_and_per_address(settings: Settings) -> None:
    with app_client(settings, login_attempts=3) as client:
        make_world()
        for _ in range(3):
            wrong = client.post("/login", data={"email": "ep@nothing.com", "password": "x", "csrf_token": csrf(client)})
            assert wrong.status_code == 400
        # Even the right password now waits: the guesser cannot tell.
        right = client.post("/login", data={"email": "ep@nothing.com", "password": "1234", "csrf_token": csrf(client)})
        assert right.status_code == 429 and int(right.headers["retry-after"]) >= 1
        # The same address trying another account is refused as well.
        other = client.post("/login", data={"email": "ap@nothing.com", "password": "1234", "csrf_token": csrf(client)})
        assert other.status_code == 429

    # One guess from each of many addresses: the account's own bucket runs out all the same.
    with app_client(settings, login_attempts=2) as running:
        for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
            from_there = TestClient(running.app, client=(address, 1))  # no `with`: the app is running
            answer = from_there.post(
                "/login", data={"email": "ep@nothing.com", "password": "x", "csrf_token": csrf(from_there)}
            )
            assert answer.status_code == (429 if address == "10.0.0.3" else 400)


def test_07_http_basic_is_throttled_with_429_and_retry_after(settings: Settings) -> None:
    with app_client(settings, login_attempts=3) as client:
        world = make_world()
        for _ in range(3):
            assert client.get("/api/v1/feeds", headers=basic("ep@nothing.com", "guess")).status_code == 401
        refused = client.get("/api/v1/feeds", headers=basic("ep@nothing.com", "1234"))
        assert refused.status_code == 429 and refused.json()["code"] == "too_many_attempts"
        assert int(refused.headers["retry-after"]) >= 1
        # Tokens are not passwords: no hashing, no throttle.
        assert client.get("/api/v1/feeds", headers=bearer(world.ep_token)).status_code == 200


def test_07_guessing_the_current_password_with_a_borrowed_session_is_throttled(settings: Settings) -> None:
    with app_client(settings, login_attempts=3) as client:
        make_world()
        login(client, "ep@nothing.com", "1234")  # one attempt spent
        for _ in range(2):
            token = CSRF_RE.search(client.get("/account").text).group(1)  # type: ignore[union-attr]
            guess = client.post(
                "/account/password",
                data={"current_password": "guess", "new_password": "a-new-password", "csrf_token": token},
            )
            assert guess.status_code == 400
        token = CSRF_RE.search(client.get("/account").text).group(1)  # type: ignore[union-attr]
        refused = client.post(
            "/account/password",
            data={"current_password": "1234", "new_password": "a-new-password", "csrf_token": token},
        )
        assert refused.status_code == 429 and "retry-after" in refused.headers


def test_07_password_checks_wait_in_their_own_pool_not_the_databases(client: TestClient, world: World) -> None:
    state = _state(client)
    release = threading.Event()
    blockers = [state.hash_pool.submit(release.wait) for _ in range(state.settings.hash_threads)]
    try:
        with ThreadPoolExecutor(1) as background:
            password_call = background.submit(
                client.get, "/api/v1/feeds", headers=basic("ep@nothing.com", "1234")
            )
            # While every hashing thread is busy, token calls (database pool only) still answer...
            for _ in range(5):
                assert client.get("/api/v1/feeds", headers=bearer(world.ep_token)).status_code == 200
            # ...and the password call is still waiting for a hashing thread.
            assert not password_call.done()
            release.set()
            assert password_call.result(timeout=30).status_code == 200
    finally:
        release.set()
        for blocker in blockers:
            blocker.result(timeout=5)


# 8. Logging out did not invalidate the session cookie.


def test_08_a_cookie_copied_before_logout_is_dead_after_it(client: TestClient, world: World) -> None:
    login(client, "ep@nothing.com", "1234")
    stolen = client.cookies[SESSION_COOKIE]
    home = client.get("/")
    token = CSRF_RE.search(home.text).group(1)  # type: ignore[union-attr]
    assert client.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    client.cookies.clear()
    client.cookies[SESSION_COOKIE] = stolen
    assert "ep@nothing.com" not in client.get("/").text
    assert client.get("/feeds/feed_a", follow_redirects=False).status_code == 303  # to /login
    assert client.get("/api/v1/feeds/feed_a").status_code in (401, 403, 404)


def test_08_signing_in_over_a_session_ends_the_old_one(client: TestClient, world: World) -> None:
    login(client, "ep@nothing.com", "1234")
    old = client.cookies[SESSION_COOKIE]
    login(client, "ep@nothing.com", "1234")
    assert client.cookies[SESSION_COOKIE] != old
    copy = TestClient(client.app)
    copy.cookies[SESSION_COOKIE] = old
    assert "ep@nothing.com" not in copy.get("/").text
    assert "ep@nothing.com" in client.get("/").text


def test_08_signing_out_ends_a_stream_on_another_viewer_at_once(settings: Settings, world: World) -> None:
    # Two viewers on one database (scale-out); heartbeats and cached logins far away, so only the
    # sign-out on the first can end the second's stream of a copied cookie. In one process any form
    # post already makes streams check again; across processes the rights revision must carry it.
    quiet = settings.replace(sse_heartbeat=600.0, credential_ttl=600.0)
    with serving(quiet) as first, serving(quiet) as second, httpx.Client(base_url=first.url) as browser:
        page = browser.get("/login")
        token = CSRF_RE.search(page.text).group(1)  # type: ignore[union-attr]
        data = {"email": "ep@nothing.com", "password": "1234", "csrf_token": token}
        assert browser.post("/login", data=data).status_code in (200, 303)
        copied = browser.cookies[SESSION_COOKIE]
        ended = threading.Event()

        def read() -> None:
            url = f"{second.url}/api/v1/feeds/feed_a/stream"
            with httpx.stream("GET", url, cookies={SESSION_COOKIE: copied}, timeout=120) as response:
                assert response.status_code == 200
                for _ in response.iter_bytes():
                    pass
            ended.set()

        threading.Thread(target=read, daemon=True).start()
        state: ViewerState = second.app.state.viewer  # type: ignore[attr-defined]
        wait_for(lambda: state.hub.client_count > 0, what="the stream to open")
        assert not ended.wait(1), "the stream ended before the sign-out"
        token = CSRF_RE.search(browser.get("/").text).group(1)  # type: ignore[union-attr]
        assert browser.post("/logout", data={"csrf_token": token}).status_code in (200, 303)
        assert ended.wait(30), "the other viewer's stream of a signed-out session went on"


def test_08_password_change_and_disabling_end_sessions_at_once(client: TestClient, world: World) -> None:
    login(client, "ep@nothing.com", "1234")
    other = TestClient(client.app)
    other.cookies[SESSION_COOKIE] = client.cookies[SESSION_COOKIE]
    assert "ep@nothing.com" in other.get("/").text
    token = CSRF_RE.search(client.get("/account").text).group(1)  # type: ignore[union-attr]
    changed = client.post(
        "/account/password",
        data={"current_password": "1234", "new_password": "a-new-password", "csrf_token": token},
    )
    assert changed.status_code == 200
    assert "ep@nothing.com" not in other.get("/").text  # the copy ended
    assert "ep@nothing.com" in client.get("/").text  # this session carried on
    User.update(is_active=False).where(User.id == world.ep.id).execute()
    assert "ep@nothing.com" not in client.get("/").text


# 9. Concurrent registration answered 500 "database is locked"; no sign-up limit.


def test_09_concurrent_sign_ups_all_succeed(live_server: LiveServer) -> None:
    def register(number: int) -> int:
        with httpx.Client(base_url=live_server.url) as browser:
            page = browser.get("/register")
            token = CSRF_RE.search(page.text).group(1)  # type: ignore[union-attr]
            answer = browser.post(
                "/register",
                data={"email": f"user{number}@example.com", "password": "longenough", "csrf_token": token},
            )
            return answer.status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(register, range(16)))
    assert statuses == [303] * 16
    assert User.select().count() == 16
    assert User.select().where(User.is_admin == True).count() == 1  # noqa: E712


def test_09_sign_ups_are_limited_per_address(settings: Settings) -> None:
    with app_client(settings, signups_per_hour=2) as client:
        for number in range(2):
            answer = client.post(
                "/register",
                data={"email": f"u{number}@example.com", "password": "longenough", "csrf_token": csrf(client)},
                follow_redirects=False,
            )
            assert answer.status_code == 303
        refused = client.post(
            "/register", data={"email": "u9@example.com", "password": "longenough", "csrf_token": csrf(client)}
        )
        assert refused.status_code == 429 and "retry-after" in refused.headers
        assert not User.select().where(User.email == "u9@example.com").exists()


# 10. Bidirectional-control characters in an email displayed it as someone else's.


@pytest.mark.parametrize("email", ["\u202emoc.gnihton@pe", "ep\u200b@nothing.com", "ep@nothing.com\u2066", "a\x07@b.c"])
def test_10_invisible_and_bidi_characters_are_refused_in_emails(client: TestClient, email: str) -> None:
    with pytest.raises(InvalidInput):
        normalize_email(email)
    answer = client.post(
        "/register", data={"email": email, "password": "longenough", "csrf_token": csrf(client, "/register")}
    )
    assert answer.status_code == 400 and "invalid email" in answer.text
    assert not User.select().exists()


# 11. No axis quota (20,000 axes in 3 s) and pages that listed every axis at once.


def test_11_a_feed_gets_at_most_axis_quota_axes_however_they_are_made(settings: Settings) -> None:
    with app_client(settings, axis_quota=3) as client:
        world = make_world()  # feed_t has one axis, temp
        auth = bearer(world.ep_token)
        assert client.get(f"{URL}/feed_t/a1?y=1", headers=auth).status_code == 200
        assert client.post("/api/v1/feeds/feed_t/axes", json={"name": "a2"}, headers=auth).status_code == 201
        refused = [
            client.get(f"{URL}/feed_t/a3?y=1", headers=auth),
            client.post("/api/v1/feeds/feed_t/axes", json={"name": "a3"}, headers=auth),
            client.post("/api/v1/feeds/feed_t/points", json=[{"axis": "a3", "y": 1}], headers=auth),
        ]
        assert [(r.status_code, r.json()["code"]) for r in refused] == [(403, "axis_quota")] * 3
        # Writing to the axes it has goes on.
        assert client.get(f"{URL}/feed_t/a2?y=1", headers=auth).status_code == 200


def test_11_the_feed_page_lists_a_page_of_axes_at_a_time(settings: Settings) -> None:
    with app_client(settings, page_size=2) as client:
        world = make_world()
        for name in ("b", "c", "d", "e"):
            create_axis(world.feed_t, name)
        login(client, "ep@nothing.com", "1234")
        first = client.get("/feeds/feed_t").text
        assert re.findall(r'<tr data-axis="(\w+)"', first) == ["b", "c"] and 'href="?page=2"' in first
        last = client.get("/feeds/feed_t?page=3").text
        assert re.findall(r'<tr data-axis="(\w+)"', last) == ["temp"] and "?page=4" not in last
        assert client.get("/feeds/feed_t?page=0").status_code == 400


def test_11_the_dashboard_and_its_stream_hold_a_page_of_rows(settings: Settings) -> None:
    with app_client(settings, page_size=2) as client:
        world = make_world()  # rows: feed_a/axis_a00, feed_ap/axis_aj_00, feed_t/temp, feed_t/z
        create_axis(world.feed_t, "z")
        login(client, "admin@nothing.com", "secret-admin")
        first = client.get("/admin").text
        assert re.findall(r'<tr data-feed="(\w+)" data-axis="(\w+)"', first) == [
            ("feed_a", "axis_a00"), ("feed_ap", "axis_aj_00")
        ]
        assert 'href="?page=2"' in first and '"stream": "/admin/stream?page=1"' in first
        second = client.get("/admin?page=2").text
        assert re.findall(r'<tr data-feed="(\w+)" data-axis="(\w+)"', second) == [("feed_t", "temp"), ("feed_t", "z")]
        assert "?page=3" not in second
        assert client.get("/admin/stream?page=x").status_code == 400


# 12. A JSON array without x answered `accepted: 100` and stored 1 point.


def test_12_a_batch_giving_one_axis_the_same_x_twice_is_refused(client: TestClient, world: World) -> None:
    api = "/api/v1/feeds/feed_t/points"
    without_x = [{"axis": "temp", "y": value} for value in range(100)]
    answer = client.post(api, json=without_x, headers=bearer(world.ep_token))
    assert answer.status_code == 400
    assert answer.json()["index"] == 1 and "same x as element 0" in answer.json()["error"]
    twice = [{"axis": "temp", "x": 5, "y": 1}, {"axis": "other", "x": 5, "y": 1}, {"axis": "temp", "x": 5, "y": 2}]
    assert client.post(api, json=twice, headers=bearer(world.ep_token)).json()["index"] == 2
    # One point per axis without x, or distinct x: accepted, and what is counted is what is stored.
    fine = [{"axis": "temp", "y": 1}, {"axis": "other", "y": 2}, {"axis": "temp", "x": 5, "y": 3}]
    accepted = client.post(api, json=fine, headers=bearer(world.ep_token))
    assert accepted.status_code == 200 and accepted.json()["accepted"] == 3


# 14. File modes; registration told who has an account.


def test_14_the_data_dir_is_0700_and_the_database_files_0600(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    db = open_database(f"sqlite:///{data / 'rtdp.sqlite3'}")
    try:
        User.create(email="x@example.com", password_hash="-")  # writes: the -wal and -shm files exist now
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        files = sorted(data.iterdir())
        assert [f.name for f in files] == ["rtdp.sqlite3", "rtdp.sqlite3-shm", "rtdp.sqlite3-wal"]
        assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}
    finally:
        db.close()


def test_14_registering_a_taken_email_answers_as_a_new_one(client: TestClient, world: World) -> None:
    def attempt(email: str) -> httpx.Response:
        return client.post(
            "/register",
            data={"email": email, "password": "longenough", "csrf_token": csrf(client, "/register")},
            follow_redirects=False,
        )

    new, taken = attempt("new@example.com"), attempt("ep@nothing.com")
    assert (new.status_code, new.headers["location"]) == (taken.status_code, taken.headers["location"])
    assert (new.status_code, new.headers["location"]) == (303, "/login?registered=1")
    assert new.text == taken.text


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/", {}),
        ("/login", {}),
        ("/static/rtdp.css", {}),
        ("/no/such/page", {}),
        ("/api/v1/feeds", {"authorization": "Bearer nope"}),
        (f"{URL}/feed_a/axis_a00?x=1&y=2", {"authorization": "Bearer nope"}),  # the lean ingestion path
    ],
)
def test_14_every_response_carries_the_security_headers(client: TestClient, path: str, headers: dict[str, str]) -> None:
    answer = client.get(path, headers=headers)
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "style-src 'self';" in policy and "unsafe" not in policy
    assert "frame-ancestors 'none'" in policy
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "same-origin"


def test_14_templates_hold_no_inline_script_or_style() -> None:
    templates = Path(__file__).resolve().parents[2] / "viewer" / "templates"
    for template in sorted(templates.glob("*.html")):
        text = template.read_text()
        for tag in re.findall(r"<script[^>]*>", text):
            assert 'src="/static/' in tag or 'type="application/json"' in tag, (template.name, tag)
        assert "<style" not in text and not re.search(r"\sstyle=", text), template.name
        assert not re.search(r"\son[a-z]+=", text), template.name  # no inline event handlers


@pytest.mark.parametrize("host", ["evil.example/x", 'a"b', "a b", "x" * 300])
def test_14_an_odd_host_header_is_not_shown_back(client: TestClient, world: World, host: str) -> None:
    login(client, "ep@nothing.com", "1234")
    page = client.get("/feeds/feed_t", headers={"host": host}).text
    assert "http://127.0.0.1:0/service/feed_input.json/feed_t/temp" in page  # the listening address
    assert host not in page


def test_14_a_public_url_wins_over_the_host_header(settings: Settings) -> None:
    with app_client(settings, public_url="http://rtdp.example.org") as client:
        make_world()
        login(client, "ep@nothing.com", "1234")
        page = client.get("/feeds/feed_t", headers={"host": "evil.example"}).text
        assert "http://rtdp.example.org/service/feed_input.json/feed_t/temp" in page
        assert "evil.example" not in page


def test_01_a_head_sent_behind_a_streaming_response_is_bounded_too(settings: Settings) -> None:
    """The limit held only for a head sent while no request was running: behind an SSE stream (a
    response that never completes) the next request's endless header was parsed and kept, with no
    header timeout either."""
    with serving(settings) as live, _connect(live) as sock:
        world = make_world()
        sock.sendall(
            b"GET /api/v1/feeds/feed_a/stream HTTP/1.1\r\nhost: x\r\n"
            b"authorization: Bearer " + world.ep_token.encode() + b"\r\n\r\n"
        )
        assert _answer(sock).startswith(b"HTTP/1.1 200")
        _send_endless_header(sock, 8 * 1024 * 1024)
        # Refused and closed: without the bound the stream went on and the header grew.
        wait_for(lambda: not live.server.server_state.connections, what="the server to close the connection")

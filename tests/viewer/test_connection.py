"""viewer.connection's reading of plain ingestion GET heads without httptools (viewer.head), on a real server:
the same answers, keep-alive, pipelining, limits and timeouts as the httptools path it skips. (The head and
connection limits themselves: tests/viewer/test_hostile.py, findings 1 and 2.)"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from collections.abc import Iterator

import pytest

from rtdp.settings import Settings
from tests.support.env import wait_for
from tests.viewer.conftest import LiveServer, World, make_world, serving
from viewer.connection import GuardedHttpProtocol

PATH = b"/service/feed_input.json/feed_a/axis_a00"


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The URLs httptools reads, on connections made from now on (its parser takes the callbacks when made)."""
    urls: list[bytes] = []
    on_url = GuardedHttpProtocol.on_url

    def counted(self: GuardedHttpProtocol, url: bytes) -> None:
        urls.append(url)
        on_url(self, url)

    monkeypatch.setattr(GuardedHttpProtocol, "on_url", counted)
    return urls


@pytest.fixture
def world(live_server: LiveServer) -> World:
    return make_world()


def _get(token: str, query: bytes, *extra: bytes, version: bytes = b"1.1") -> bytes:
    lines = [b"GET %s?%s HTTP/%s" % (PATH, query, version), b"Host: 127.0.0.1",
             b"Authorization: Bearer " + token.encode(), *extra]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _connect(live: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", live.server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Reader:
    """Whole answers (head and content-length body) off one socket, in order."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = b""

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        while True:
            end = self.received.find(b"\r\n\r\n")
            if end >= 0:
                head = self.received[:end].decode("latin-1")
                length = int(re.search(r"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
                if len(self.received) >= end + 4 + length:
                    body = self.received[end + 4 : end + 4 + length]
                    self.received = self.received[end + 4 + length :]
                    lines = head.split("\r\n")
                    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines[1:])}
                    return int(lines[0].split()[1]), headers, body
            chunk = self.sock.recv(65536)
            assert chunk, "closed before a whole answer"
            self.received += chunk

    def closed(self) -> bool:
        """Whether the server closed the connection after what was read (within 10 s)."""
        readable, _, _ = select.select([self.sock], [], [], 10)
        try:
            return bool(readable) and self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True


@pytest.fixture
def kept(live_server: LiveServer, parsed: list[bytes]) -> Iterator[tuple[socket.socket, Reader]]:
    with _connect(live_server) as sock:
        yield sock, Reader(sock)


def test_plain_gets_are_answered_without_httptools_as_before(
    kept: tuple[socket.socket, Reader], world: World, parsed: list[bytes]
) -> None:
    sock, reader = kept
    for x in (1, 2, 3):  # one kept connection
        sock.sendall(_get(world.ep_token, b"x=%d&y=%d" % (x, 10 * x)))
        status, headers, body = reader.answer()
        assert status == 200 and body == b'{"feed":"feed_a","axis":"axis_a00","x":%d,"y":%d}' % (x, 10 * x)
        assert headers["content-type"] == "application/json" and "x-frame-options" in headers
        assert "connection" not in headers
    assert parsed == []
    # A head that is not plain (here a body's framing) goes through httptools, with the same answer.
    sock.sendall(_get(world.ep_token, b"x=4&y=40", b"Content-Length: 0"))
    assert reader.answer()[2] == b'{"feed":"feed_a","axis":"axis_a00","x":4,"y":40}'
    assert parsed == [PATH + b"?x=4&y=40"]


def test_a_plain_head_the_lean_route_declines_goes_through_httptools(
    kept: tuple[socket.socket, Reader], world: World, parsed: list[bytes]
) -> None:
    """A forwarded-for header: the long way, where uvicorn's proxy-headers middleware sees it."""
    sock, reader = kept
    sock.sendall(_get(world.ep_token, b"x=11&y=11", b"X-Forwarded-For: 10.0.0.1"))
    status, _, body = reader.answer()
    assert status == 200 and body.endswith(b'"x":11,"y":11}')
    assert parsed == [PATH + b"?x=11&y=11"]
    sock.sendall(_get(world.ep_token, b"x=12&y=12"))  # and the next plain one is read plainly again
    assert reader.answer()[2].endswith(b'"x":12,"y":12}')
    assert len(parsed) == 1


def test_refusals_on_plain_heads_are_the_apps_json(kept: tuple[socket.socket, Reader], world: World) -> None:
    sock, reader = kept
    sock.sendall(_get("rtdp_wrong", b"x=1&y=1"))
    status, headers, body = reader.answer()
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    assert json.loads(body)["code"] == "unauthenticated"
    sock.sendall(_get(world.ap_token, b"x=1&y=1"))  # ap may not write ep's feed
    status, headers, body = reader.answer()
    assert status == 403 and headers["content-type"] == "application/json"
    sock.sendall(_get(world.ep_token, b"x=1&y=2.5"))
    status, _, body = reader.answer()
    assert status == 400 and json.loads(body)["field"] == "y"
    sock.sendall(_get(world.ep_token, b"x=1&y=1").replace(b"axis_a00", b"axis_a00/extra"))  # not the route's
    assert reader.answer()[0] == 404


def test_pipelined_heads_are_answered_in_order(kept: tuple[socket.socket, Reader], world: World) -> None:
    sock, reader = kept
    token = world.ep_token
    # Two in one write; then a plain one written while the previous waits for its point to be acknowledged.
    sock.sendall(_get(token, b"x=1&y=1") + _get(token, b"x=2&y=2", b"X-Latin: \xe9"))
    sock.sendall(_get(token, b"x=3&y=3"))
    sock.sendall(_get(token, b"x=4&y=4"))
    for x in (1, 2, 3, 4):
        status, _, body = reader.answer()
        assert status == 200 and body.endswith(b'"x":%d,"y":%d}' % (x, x))


def test_a_head_split_across_reads_is_read_by_httptools(
    kept: tuple[socket.socket, Reader], world: World, parsed: list[bytes]
) -> None:
    sock, reader = kept
    head = _get(world.ep_token, b"x=5&y=5")
    sock.sendall(head[:10])
    wait_for(lambda: parsed != [], what="the first bytes read")
    for byte in head[10:]:
        sock.sendall(bytes([byte]))
    status, _, body = reader.answer()
    assert status == 200 and body.endswith(b'"x":5,"y":5}')


def test_the_rest_of_a_head_is_never_read_as_a_plain_head(
    kept: tuple[socket.socket, Reader], world: World, parsed: list[bytes]
) -> None:
    """What completes a head httptools has begun is that head's rest, however much it looks like a plain GET
    of its own: here a header value and a header of a GET of /nothing."""
    sock, reader = kept
    sock.sendall(b"GET /nothing HTTP/1.1\r\nHost: x\r\nX-A: ")
    wait_for(lambda: parsed != [], what="the first part read")
    sock.sendall(_get(world.ep_token, b"x=6&y=6"))
    assert reader.answer()[0] == 404


def test_http_1_0_and_connection_close_answer_then_close(live_server: LiveServer, world: World) -> None:
    token = world.ep_token
    for request in (_get(token, b"x=7&y=7", version=b"1.0"), _get(token, b"x=8&y=8", b"Connection: close")):
        with _connect(live_server) as sock:
            sock.sendall(request)
            reader = Reader(sock)
            status, headers, _ = reader.answer()
            assert status == 200 and headers["connection"] == "close"
            assert reader.closed()


def test_an_oversized_plain_head_is_still_431(live_server: LiveServer, world: World) -> None:
    with _connect(live_server) as sock:
        sock.sendall(_get(world.ep_token, b"x=9&y=9", b"X-Big: " + b"a" * 20_000))
        assert sock.recv(65536).startswith(b"HTTP/1.1 431")


def test_after_a_plain_head_the_keep_alive_timeout_still_closes(settings: Settings) -> None:
    with serving(settings.replace(http_keepalive=0.5)) as live, _connect(live) as sock:
        token = make_world().ep_token
        sock.sendall(_get(token, b"x=10&y=10"))
        reader = Reader(sock)
        assert reader.answer()[0] == 200
        started = time.monotonic()
        assert reader.closed()
        assert time.monotonic() - started < 5

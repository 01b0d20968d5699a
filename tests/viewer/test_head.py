"""viewer.head: a plain GET head reads as httptools and uvicorn read it; anything else is left to httptools."""

from __future__ import annotations

import httptools
import pytest

from viewer.head import Head, plain_get

TARGET = b"/service/feed_input.json/feed_a/axis_a00"


class _Heard:
    """What httptools reports for one head, kept as uvicorn keeps it (viewer.connection's base class)."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.parser = httptools.HttpRequestParser(self)
        self.keep_alive: bool | None = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        # Where uvicorn asks (llhttp forgets once the message is complete).
        self.keep_alive = self.parser.should_keep_alive()


def _httptools(data: bytes) -> tuple[Head, bytes]:
    heard = _Heard()
    heard.parser.feed_data(data)
    assert heard.keep_alive is not None
    url = httptools.parse_url(heard.url)
    return Head(url.path, url.query or b"", heard.headers, heard.keep_alive), heard.parser.get_method()


@pytest.mark.parametrize(
    "head",
    [
        b"GET " + TARGET + b"?y=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nAuthorization: Bearer rtdp_abc\r\n\r\n",
        b"GET " + TARGET + b"?x=2014-11-22T10:50:42Z&y=%31+2 HTTP/1.1\r\nauthorization:Basic  YTpi \t\r\n\r\n",
        b"GET " + TARGET + b" HTTP/1.1\r\n\r\n",
        b"GET " + TARGET + b"? HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n",
        b"GET " + TARGET + b"?y=1 HTTP/1.1\r\nconnection: Keep-Alive\r\nX-Empty:\r\nUser-Agent: a/1 (b; c)\r\n\r\n",
        b"GET " + TARGET + b"?y=1 HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
        b"GET /service/feed_input.json/f-a_b.c~!$&'()*+,;=:@/A9?y=a/b?c:@%zz HTTP/1.1\r\nX:\t\x7e\r\n\r\n",
    ],
)
def test_a_plain_head_reads_as_httptools_reads_it(head: bytes) -> None:
    ours = plain_get(head)
    theirs, method = _httptools(head)
    assert method == b"GET"
    assert ours == theirs


@pytest.mark.parametrize(
    "head",
    [
        b"POST " + TARGET + b"?y=1 HTTP/1.1\r\nHost: x\r\n\r\n",  # another method
        b"GET " + TARGET + b"?y=1 HTTP/1.0\r\nHost: x\r\n\r\n",  # another version
        b"GET /service/feed_input.json/feed%20a/axis?y=1 HTTP/1.1\r\n\r\n",  # escapes in the path
        b"GET " + TARGET + b"?y=1#here HTTP/1.1\r\n\r\n",  # a fragment
        b"GET " + TARGET + b"?y=1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",  # a body's framing
        b"GET " + TARGET + b"?y=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET " + TARGET + b"?y=1 HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        b"GET " + TARGET + b"?y=1 HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"GET " + TARGET + b"?y=1 HTTP/1.1\r\nConnection: close, te\r\n\r\n",
        b"GET " + TARGET + b"?y=1 HTTP/1.1\r\nProxy-Connection: close\r\n\r\n",  # llhttp: as Connection
        b"GET " + TARGET + b"?y=1 HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n",  # obsolete line folding
        b"GET " + TARGET + b"?y=1 HTTP/1.1\nHost: x\n\n",  # bare LF
        b"GET " + TARGET + b"?y=1 HTTP/1.1\r\nHost : x\r\n\r\n",  # space before the colon
        b"GET " + TARGET + b"?y=1 HTTP/1.1\r\nX-Ctl: a\x01b\r\n\r\n",  # a control character
        b"GET " + TARGET + b"?y=1 HTTP/1.1\r\nX-Latin: \xe9\r\n\r\n",  # not ASCII
        b"GET " + TARGET + b"?y=1 HTTP/1.1\r\nHost: x\r\n",  # not whole
        b"GET " + TARGET + b"?y=1 HTTP/1.1\r\nHost: x\r\n\r\nGET " + TARGET + b" HTTP/1.1\r\n\r\n",  # two
    ],
)
def test_anything_else_is_left_to_httptools(head: bytes) -> None:
    assert plain_get(head) is None

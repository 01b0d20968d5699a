"""A request head plain enough to read without httptools: viewer.connection's shortcut for scripts' GETs.

At 10,000 requests a second, httptools' callbacks per URL and per header, uvicorn's scope and its
`RequestResponseCycle` were the largest share of a point's time on the event loop. The head a script sends
(`GET /service/feed_input.json/f/a?y=1 HTTP/1.1`, a host, an authorization, perhaps a user agent) is read
here in one regular expression and a split instead. Anything this reading is not sure to agree with llhttp
on gives None, and httptools reads the head as before: another method or version, percent-escapes in the
path, a fragment, a body or its framing (content-length, transfer-encoding), expect, upgrade, proxy-connection, a
connection header other than `close` or `keep-alive`, folded lines, bare LF, control characters or non-ASCII bytes.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# The whole head, ending the data: the request line, then `name:value` lines.
_HEAD = re.compile(
    rb"GET (/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*)(?:\?([A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*))? HTTP/1\.1\r\n"
    rb"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e]*\r\n)*)\r\n"
)
# Headers that make a head not plain (see the module docstring; llhttp reads Proxy-Connection as Connection).
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"expect", b"upgrade", b"proxy-connection"))
_KEEP = {b"keep-alive": True, b"close": False}


class Head(NamedTuple):
    path: bytes
    query: bytes
    # As uvicorn's scope has them: names lower-case, values without surrounding spaces and tabs.
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool


def plain_get(data: bytes) -> Head | None:
    """`data` as one whole plain GET head and nothing after it, or None (httptools then reads it)."""
    match = _HEAD.fullmatch(data)
    if match is None:
        return None
    path, query, lines = match.groups()
    headers = []
    keep_alive = True
    for line in lines.split(b"\r\n")[:-1]:
        name, _, value = line.partition(b":")
        name = name.lower()
        value = value.strip(b" \t")
        if name in _FRAMING:
            return None
        if name == b"connection":
            keep = _KEEP.get(value.lower())
            if keep is None:
                return None
            keep_alive = keep_alive and keep  # as llhttp: any `close` wins
        headers.append((name, value))
    return Head(path, query or b"", headers, keep_alive)

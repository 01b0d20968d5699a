"""Webhooks: which URLs an alert may call, the signature on what it sends, and the HTTP client that sends it.

Server-side request forgery: a rule's maker chooses the URL and this server calls it, from inside the
network it runs in. Loopback, private, link-local and other non-public addresses are refused unless
`RTDP_WEBHOOK_ALLOW_PRIVATE=1`, checked on every address the host name resolves to when the rule is made
and again when it is called (a name's addresses are remembered for RESOLVE_TTL seconds and checked on
each call); the request then goes to the address that was checked, not to a second look-up that could
answer differently (DNS rebinding).

The client is a small HTTP/1.1 one over a kept socket per target and thread: one `sendall` of the whole
request, the response's head parsed by hand. `http.client` cost about 150 us of CPU per call (its header
parsing goes through the `email` package) and two writes per request; at hundreds of alerts a second
that time was taken from the writer thread that shares the interpreter.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from rtdp.errors import InvalidInput

SIGNATURE_HEADER = "X-Rtdp-Signature"
RESOLVE_TTL = 5.0  # seconds a host name's checked addresses are used before it is looked up again
HEAD_LIMIT = 16_384  # bytes of a response's status line and headers
BODY_LIMIT = 65_536  # bytes of a response's body read to keep its connection; beyond, the connection is closed


def sign(secret: str, body: bytes) -> str:
    """The X-Rtdp-Signature value for `body` (what a receiver compares, with hmac.compare_digest)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- targets ------------------------------------------------------------------------------------------


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str


def parse_target(url: str, field: str = "url") -> Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{field} must be an http:// or https:// URL", field=field)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidInput(f"{field} has a bad port", field=field) from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, parts.hostname, port, path)


def _check(target: Target, addresses: list[str], field: str) -> None:
    for address in addresses:
        if _private(address):
            raise InvalidInput(
                f"{field}: {target.host} is a loopback or private address ({address}); webhooks may call"
                " only public addresses unless RTDP_WEBHOOK_ALLOW_PRIVATE=1",
                field=field,
            )


def resolve_target(target: Target, *, allow_private: bool, field: str = "url") -> list[str]:
    """The addresses `target` resolves to; InvalidInput if any of them is not public (unless allowed)."""
    if _literal(target.host):
        addresses = [target.host]
    else:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        _check(target, addresses, field)
    return addresses


def check_webhook_url(url: str, *, allow_private: bool, resolve: bool = True, field: str = "url") -> None:
    """Refuse (InvalidInput naming `field`) a URL that is not http(s), or whose host is or resolves to a
    non-public address. A name that does not resolve now is accepted: it is checked again when called."""
    target = parse_target(url, field)
    if allow_private or (not resolve and not _literal(target.host)):
        return
    try:
        resolve_target(target, allow_private=False, field=field)
    except OSError:
        return


# --- the client ---------------------------------------------------------------------------------------


class BadResponse(ConnectionError):
    """The receiver answered something that is not HTTP/1.x, or too much of it."""


class _Stale(ConnectionError):
    """A kept connection the receiver had closed: nothing came back, so the request is sent again."""


@dataclass(frozen=True, slots=True)
class _Head:
    status: int
    keep: bool  # the connection may carry the next request
    length: int | None  # Content-Length, None if absent
    chunked: bool


def _parse_head(head: bytes) -> _Head:
    lines = head.split(b"\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise BadResponse(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    keep = parts[0] == b"HTTP/1.1"
    length: int | None = None
    chunked = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise BadResponse(f"bad header line: {line[:80]!r}")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == b"content-length":
            if not value.isdigit():
                raise BadResponse(f"bad Content-Length: {value[:40]!r}")
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = value.endswith(b"chunked")
        elif name == b"connection":
            tokens = {t.strip() for t in value.split(b",")}
            keep = (keep or b"keep-alive" in tokens) and b"close" not in tokens
    return _Head(int(parts[1]), keep, length, chunked)


class _Reader:
    """What a socket has sent, read as needed (recv raises TimeoutError after the socket's timeout)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.received = 0

    def fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        self.received += len(chunk)
        return bool(chunk)

    def line(self, limit: int) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > limit or not self.fill():
                raise BadResponse("response line too long or cut")
        found = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return found

    def skip(self, count: int) -> None:
        while len(self.buffer) < count:
            if not self.fill():
                raise BadResponse("response body cut")
        del self.buffer[:count]

    def head(self) -> bytes:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > HEAD_LIMIT:
                raise BadResponse("response head too long")
            if not self.fill():
                raise (_Stale if self.received == 0 else BadResponse)("connection closed before the response")
        found = bytes(self.buffer[:end])
        del self.buffer[: end + 4]
        return found


def _response(reader: _Reader) -> tuple[int, bool]:
    """Read one response (after any 1xx); its status and whether the connection may be kept."""
    while True:
        head = _parse_head(reader.head())
        if head.status >= 200:
            break
    if head.status in (204, 304):
        return head.status, head.keep
    if head.chunked:
        total = 0
        while True:
            size_line = reader.line(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise BadResponse(f"bad chunk size: {size_line[:20]!r}") from None
            total += size
            if total > BODY_LIMIT:
                return head.status, False
            if size == 0:
                while reader.line(HEAD_LIMIT):  # trailers, up to the empty line
                    pass
                return head.status, head.keep
            reader.skip(size + 2)
    if head.length is not None:
        if head.length > BODY_LIMIT:
            return head.status, False
        reader.skip(head.length)
        return head.status, head.keep
    return head.status, False  # the body runs to the end of the connection: not read, not kept


class WebhookClient:
    """POSTs webhooks, keeping one connection per target and thread open between calls (a new TCP
    connection, and a new thread in many receivers, per alert was most of the cost at hundreds a second)."""

    def __init__(self, *, timeout: float, allow_private: bool) -> None:
        self.timeout = timeout
        self.allow_private = allow_private
        self._local = threading.local()
        self._resolved: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._resolved_lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def _connections(self) -> dict[tuple[str, str, int, str], socket.socket]:
        found: dict[tuple[str, str, int, str], socket.socket] | None = getattr(self._local, "open", None)
        if found is None:
            found = self._local.open = {}
        return found

    def _address(self, target: Target) -> str:
        """A checked address of `target` (the look-up remembered for RESOLVE_TTL, checked every time)."""
        key = (target.host, target.port)
        now = time.monotonic()
        with self._resolved_lock:
            cached = self._resolved.get(key)
        if cached is not None and cached[0] > now:
            addresses = cached[1]
            if not self.allow_private:
                _check(target, addresses, "url")
        else:
            addresses = resolve_target(target, allow_private=self.allow_private)
            if not _literal(target.host):
                with self._resolved_lock:
                    if len(self._resolved) > 1000:
                        self._resolved.clear()
                    self._resolved[key] = (now + RESOLVE_TTL, addresses)
        return addresses[0]

    def _connect(self, target: Target, address: str) -> socket.socket:
        sock = socket.create_connection((address, target.port), self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if target.scheme == "https":
                if self._tls is None:
                    self._tls = ssl.create_default_context()
                sock = self._tls.wrap_socket(sock, server_hostname=target.host)
        except BaseException:
            sock.close()
            raise
        return sock

    def post(self, url: str, body: bytes, secret: str) -> int:
        """POST `body` once; the HTTP status. Raises OSError (TimeoutError, ConnectionError, BadResponse) or
        InvalidInput for a refused target. A kept connection is used only for the address just checked;
        one the receiver had closed meanwhile is replaced at once."""
        target = parse_target(url)
        address = self._address(target)
        key = (target.scheme, target.host, target.port, address)
        host = target.host if ":" not in target.host else f"[{target.host}]"
        default_port = 443 if target.scheme == "https" else 80
        request = (
            f"POST {target.path} HTTP/1.1\r\nHost: {host if target.port == default_port else f'{host}:{target.port}'}"
            f"\r\nContent-Type: application/json\r\nUser-Agent: rtdp-alerts\r\n{SIGNATURE_HEADER}: {sign(secret, body)}"
            f"\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1") + body
        connections = self._connections()
        sock = connections.pop(key, None)
        if sock is not None:
            try:
                return self._exchange(connections, key, sock, request)
            except _Stale:
                pass  # closed by the receiver while kept: nothing was answered, so send it on a new one
        return self._exchange(connections, key, self._connect(target, address), request)

    def _exchange(
        self, connections: dict[tuple[str, str, int, str], socket.socket], key: tuple[str, str, int, str],
        sock: socket.socket, request: bytes,
    ) -> int:
        reader = _Reader(sock)
        try:
            sock.settimeout(self.timeout)
            sock.sendall(request)
            status, keep = _response(reader)
        except (ConnectionResetError, BrokenPipeError) as exc:
            sock.close()
            if reader.received == 0:
                raise _Stale(str(exc)) from exc
            raise
        except BaseException:
            sock.close()
            raise
        if keep and not reader.buffer:
            connections[key] = sock
        else:
            sock.close()
        return status

"""Security headers on every response: pages load only our own scripts and styles, nobody frames them.

Added around the whole app (viewer.app.ViewerApp), so errors and the lean ingestion path carry them
too. The templates hold no inline script or style (the page-config blocks are JSON data, which CSP
does not run), so the policy needs no 'unsafe-inline'.
"""

from __future__ import annotations

from starlette.types import Message, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]
_NAMES = frozenset(name for name, _ in SECURITY_HEADERS)


def with_security_headers(send: Send) -> Send:
    """`send`, adding SECURITY_HEADERS to the response start (a header the app set itself wins)."""

    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            present = {name.lower() for name, _ in headers} & _NAMES
            headers.extend(header for header in SECURITY_HEADERS if header[0] not in present)
            message = {**message, "headers": headers}
        await send(message)

    return sender

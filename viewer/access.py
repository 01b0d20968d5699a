"""Finding a feed the caller may use, and reading request bodies safely. Synchronous helpers run in
the database pool; the rule itself is rtdp.permissions.allowed.

Unknown versus forbidden: an anonymous caller gets 401 with `WWW-Authenticate` for any feed it may not
read, private or missing alike: HTTP clients that answer a challenge (`curl --anyauth`, urllib's auth
handlers) then send their credentials, and the world still cannot probe which private feed names
exist. A signed-in caller (password, token or session) gets 404 for a missing feed and 403 for one
that exists but is not theirs to use, as the original did.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from rtdp.errors import AuthenticationFailed, InvalidInput, NotFound, PayloadTooLarge, PermissionDenied
from rtdp.models import Feed
from rtdp.permissions import Access, Principal, allowed, may_manage
from viewer.errors import URITooLong

MAX_QUERY = 8 * 1024


def find_feed(principal: Principal | None, name: str, access: Access = Access.READ) -> Feed:
    feed = Feed.get_or_none(Feed.name == name[:64]) if len(name) <= 64 else None
    if feed is None or not allowed(principal, feed, Access.READ):
        if principal is None:
            raise AuthenticationFailed("authentication required: sign in or send a token to read this feed")
        if feed is None:
            raise NotFound(f"no feed named {name[:64]!r}", feed=name[:64])
        raise PermissionDenied(f"you may not read feed {name!r}", feed=name)
    if access is Access.WRITE and not allowed(principal, feed, Access.WRITE):
        if principal is None:
            raise AuthenticationFailed("authentication required to change this feed")
        raise PermissionDenied(f"you may not write to feed {name!r}", feed=name)
    return feed


def find_managed_feed(principal: Principal, name: str) -> Feed:
    feed = find_feed(principal, name)
    if not may_manage(principal, feed):
        raise PermissionDenied(f"only the owner or an admin may change feed {name!r}", feed=name)
    return feed


def check_query_size(request: Request) -> None:
    if len(request.scope.get("query_string", b"")) > MAX_QUERY:
        raise URITooLong(f"query string longer than {MAX_QUERY} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidInput("bad Content-Length") from None
        if size > limit:
            raise PayloadTooLarge(f"body of {size} bytes exceeds the limit of {limit}")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    # Later request.form() / request.json() reuse the body already read.
    request._body = body
    return body


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


async def read_json(request: Request, limit: int) -> Any:
    body = await read_body(request, limit)
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"the body must be JSON: {str(exc)[:120]}") from None


async def read_object(request: Request, limit: int) -> dict[str, Any]:
    document = await read_json(request, limit)
    if not isinstance(document, dict):
        raise InvalidInput("the body must be a JSON object")
    return document

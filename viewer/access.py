"""Finding a feed the caller may use, and reading request bodies safely. Synchronous helpers run in
the database pool; the rule itself is rtdp.permissions.allowed.

Unknown versus forbidden: to an anonymous caller a feed it may not read looks exactly like a missing
one (404), so the world cannot probe which private feed names exist. A signed-in caller (password,
token or session) gets 403 for a feed that exists but is not theirs to use, as the original did.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from rtdp.errors import AuthenticationFailed, InvalidInput, NotFound, PayloadTooLarge, PermissionDenied
from rtdp.models import Feed
from rtdp.permissions import Access, Principal, allowed
from viewer.errors import URITooLong

MAX_QUERY = 8 * 1024


def find_feed(principal: Principal | None, name: str, access: Access = Access.READ) -> Feed:
    feed = Feed.get_or_none(Feed.name == name[:64]) if len(name) <= 64 else None
    if feed is None or not allowed(principal, feed, Access.READ):
        if feed is None or principal is None:
            raise NotFound(f"no feed named {name[:64]!r}", feed=name[:64])
        raise PermissionDenied(f"you may not read feed {name!r}", feed=name)
    if access is Access.WRITE and not allowed(principal, feed, Access.WRITE):
        if principal is None:
            raise AuthenticationFailed("authentication required to change this feed")
        raise PermissionDenied(f"you may not write to feed {name!r}", feed=name)
    return feed


def may_manage(principal: Principal, feed: Feed) -> bool:
    """Owner or admin, logged in or through a token for all their feeds that may write.

    A token limited to one feed is a device's: it reads and writes that feed's points (so a stolen one
    can still overwrite them), but it may not delete the feed, make it public or rename its axes."""
    if principal.token_feed_id is not None or not allowed(principal, feed, Access.WRITE):
        return False
    owner_id: int = feed.owner_id  # type: ignore[attr-defined]
    return principal.service or principal.is_admin or owner_id == principal.user_id


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

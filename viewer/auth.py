"""Who is calling: HTTP Basic (email:password or anyuser:token), Bearer token, or the session."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from starlette.requests import HTTPConnection

from rtdp.accounts import check_password, check_token, principal_for
from rtdp.cache import credential_key
from rtdp.credentials import looks_like_token
from rtdp.errors import AuthenticationFailed
from rtdp.permissions import Principal
from rtdp.throttle import account_key, address_key
from viewer.session import CSRF_HEADER, CsrfRejected, active_user, csrf_matches
from viewer.state import ViewerState, once, viewer_state

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def principal_from_request(conn: HTTPConnection) -> Principal | None:
    """The caller's principal: the Authorization header first, then the session; None if anonymous.

    Raises AuthenticationFailed (401) when a header is present but wrong: a script with a bad token
    must hear so, not silently act as anonymous.
    """
    header = conn.headers.get("authorization")
    if header:
        return await _from_header(conn, header)
    session = conn.scope.get("session")
    if session and session.get("user_id") is not None:
        _check_session_csrf(conn, session)
        return await _from_session(conn, session)
    return None


def _check_session_csrf(conn: HTTPConnection, session: dict[str, Any]) -> None:
    """A browser sends the session cookie wherever a request comes from: a request that changes
    something (any unsafe method, and ingestion, which also answers GET) must prove it came from our
    own pages with the session's CSRF token in the X-CSRF-Token header. Header auth needs no check."""
    method = conn.scope.get("method", "GET")
    ingestion = "/service/feed_input.json/" in conn.url.path
    if method in SAFE_METHODS and not ingestion:
        return
    if not csrf_matches(session.get("csrf"), conn.headers.get(CSRF_HEADER)):
        raise CsrfRejected("a request signed in with the session cookie needs the X-CSRF-Token header")


async def require_principal(conn: HTTPConnection) -> Principal:
    principal = await principal_from_request(conn)
    if principal is None:
        raise AuthenticationFailed("authentication required: HTTP Basic (email:password or any:token) or Bearer")
    return principal


def cached_principal(state: ViewerState, header: str) -> Principal | None:
    """The principal for an Authorization header whose credentials were checked lately, without waiting (HTTP
    ingestion's path without a task, viewer.ingest); None when they must be checked (`require_principal`).
    Raises AuthenticationFailed as `require_principal` would for a malformed header."""
    username, password = _credentials(header)
    return state.credentials.get(credential_key(username, password))


def _credentials(header: str) -> tuple[str | None, str]:
    """(username or None for a Bearer token, password or token) from an Authorization header."""
    scheme, _, value = header.partition(" ")
    value = value.strip()
    scheme = scheme.lower()
    if scheme == "bearer" and value:
        username: str | None = None
        password = value
    elif scheme == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationFailed("malformed Basic credentials") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise AuthenticationFailed("malformed Basic credentials")
    else:
        raise AuthenticationFailed("unsupported Authorization scheme (use Basic or Bearer)")
    return username, password


async def _from_header(conn: HTTPConnection, header: str) -> Principal:
    username, password = _credentials(header)
    state = viewer_state(conn)
    key = credential_key(username, password)
    principal = state.credentials.get(key)
    if principal is not None:
        return principal
    if not password:
        raise AuthenticationFailed("credentials required")
    token = username is None or looks_like_token(password)
    if not token:
        if not username:
            raise AuthenticationFailed("credentials required")
        # A password guess: throttled per account and address (each request counts), hashed in its own pool.
        state.logins.take([account_key(username), address_key(client_address(conn))])
    # Requests with the same credentials that arrive before the first check ended wait for its answer:
    # a script opening 100 connections at once would otherwise check (and record the use of) its token
    # 100 times over in the database pool, each with a commit, holding every other request behind them.
    address = client_address(conn)
    return await once(state.checking, key, lambda: _check(state, key, username, password, address, token))


async def _check(
    state: ViewerState, key: object, username: str | None, password: str, address: str | None, token: bool
) -> Principal:
    generation = state.generation
    if token:
        # The token's last use is recorded with the caller's address (rtdp.accounts, once a minute).
        principal = await state.run_db(check_token, password, address)
    else:
        assert username is not None
        principal = await state.run_hash(check_password, username, password)
    if state.generation == generation:  # not read before a change of rights
        state.credentials.put(key, principal)
    return principal


def client_address(conn: HTTPConnection) -> str | None:
    return conn.client.host if conn.client else None


def _session_principal(user_id: int, version: int, key: str) -> Principal | None:
    user = active_user(user_id, version, key)
    return principal_for(user) if user is not None else None


async def _from_session(conn: HTTPConnection, session: dict[str, Any]) -> Principal | None:
    try:
        user_id = int(session["user_id"])
        version = int(session.get("session_version", 0))
    except (TypeError, ValueError):
        return None
    key = session.get("key")
    if not isinstance(key, str):
        return None
    state = viewer_state(conn)
    cache_key = ("session", user_id, version, credential_key(None, key))
    principal = state.credentials.get(cache_key)
    if principal is None:
        principal = await state.run_db(_session_principal, user_id, version, key)
        if principal is None:
            return None
        state.credentials.put(cache_key, principal)
    return principal

"""Browser sessions: the signed session cookie, who is signed in, and CSRF tokens for forms.

The session cookie (Starlette's SessionMiddleware, signed with itsdangerous) holds only `user_id`,
`session_version`, `key` and `csrf`. The key names a BrowserSession row: signing out deletes it, a
password change deletes all of the user's (and bumps `User.session_version`), so a copied cookie
stops working at once, not when it expires.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request

from rtdp import revision
from rtdp.errors import PermissionDenied
from rtdp.models import BrowserSession, User
from rtdp.private import private_dir
from rtdp.settings import Settings

SESSION_COOKIE = "rtdp_session"
SESSION_MAX_AGE = 14 * 24 * 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SECRET_FILE = "secret_key"


class CsrfRejected(PermissionDenied):
    code = "csrf"


def secret_key(settings: Settings) -> str:
    """settings.secret_key, else one generated once into data_dir/secret_key (mode 0600)."""
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.data_dir) / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    private_dir(path.parent)
    key = secrets.token_urlsafe(48)
    try:
        # O_EXCL: two processes starting together must not each write their own key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


def session_middleware(settings: Settings) -> Middleware:
    """Signed cookie session: HttpOnly (Starlette always sets it), SameSite=Lax, Secure behind https."""
    https = bool(settings.public_url and settings.public_url.startswith("https://"))
    return Middleware(
        SessionMiddleware,
        secret_key=secret_key(settings),
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE,
        same_site="lax",
        https_only=https,
    )


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def sign_in(request: Request, user: User) -> None:
    """Start a fresh session for `user` (a new CSRF token too: nothing carries over from before).
    Synchronous (database): call from a thread."""
    _forget(request)
    key = secrets.token_urlsafe(32)
    BrowserSession.delete().where(BrowserSession.created < time.time() - SESSION_MAX_AGE).execute()
    BrowserSession.create(key_hash=_key_hash(key), user=user.id)
    request.session["user_id"] = user.id
    request.session["session_version"] = user.session_version
    request.session["key"] = key
    request.session["csrf"] = secrets.token_urlsafe(32)


def sign_out(request: Request) -> None:
    """End this session, on the server too. Synchronous (database): call from a thread."""
    _forget(request)


def _forget(request: Request) -> None:
    # The server-side row goes with the cookie: a copy of the old cookie must not outlive a sign-out or
    # a sign-in over it.
    # An ended session is a change of rights: bumping the revision makes every viewer drop the login it
    # cached for this cookie and makes open streams check their reader again, within its poll.
    key = request.session.get("key")
    if isinstance(key, str):
        with BrowserSession._meta.database.atomic():
            if BrowserSession.delete().where(BrowserSession.key_hash == _key_hash(key)).execute():
                revision.bump()
    request.session.clear()


def end_sessions(user_id: int) -> None:
    """End every browser session of a user (password changed, user disabled)."""
    BrowserSession.delete().where(BrowserSession.user == user_id).execute()


def active_user(user_id: object, version: object, key: object) -> User | None:
    """The user a session cookie names, if still active, the session not ended and the cookie not older
    than their last password change. Synchronous (database): call from a thread."""
    if not isinstance(user_id, int) or not isinstance(key, str):
        return None
    user = User.get_or_none(User.id == user_id)
    if user is None or not user.is_active or user.session_version != version:
        return None
    alive = BrowserSession.select().where(
        (BrowserSession.key_hash == _key_hash(key)) & (BrowserSession.user == user_id)
    )
    return user if alive.exists() else None


def session_user(request: Request) -> User | None:
    """The signed-in user, or None. Synchronous (database): call from a thread."""
    if "session" not in request.scope:
        return None
    session = request.session
    return active_user(session.get("user_id"), session.get("session_version"), session.get("key"))


def csrf_token(request: Request) -> str:
    """This session's CSRF token, created on first use."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, submitted: object) -> None:
    """Raise CsrfRejected unless `submitted` (form field or header) is this session's token."""
    expected = request.session.get("csrf") if "session" in request.scope else None
    if isinstance(submitted, str) and not submitted:
        submitted = None
    if submitted is None:
        submitted = request.headers.get(CSRF_HEADER)
    if not csrf_matches(expected, submitted):
        raise CsrfRejected("the form expired or came from another site: reload the page and try again")


def csrf_matches(expected: object, submitted: object) -> bool:
    """True if `submitted` is the session's CSRF token `expected` (compared in constant time)."""
    return (
        isinstance(expected, str)
        and isinstance(submitted, str)
        and bool(submitted)
        and hmac.compare_digest(expected.encode(), submitted.encode())
    )

"""Account pages: sign in, sign out, register, change password, API tokens."""

from __future__ import annotations

import time

import peewee as pw
from starlette.responses import Response

from rtdp import revision
from rtdp.accounts import REGISTRATION_CLOSED, check_password, create_token, normalize_email, register_user
from rtdp.credentials import check_new_password, hash_password, verify_password
from rtdp.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound, RtdpError, TooManyAttempts
from rtdp.models import MAX_ID, Feed, Token, User
from rtdp.permissions import Access, readable_feeds
from rtdp.throttle import account_key, address_key
from viewer.auth import client_address
from viewer.pages.render import Ctx, error_field, may_register
from viewer.session import end_sessions, sign_in, sign_out
from viewer.state import viewer_state

MAX_TOKEN_DAYS = 3650


def _safe_next(target: str | None) -> str:
    # Only same-site paths: an open redirect would make the login page a phishing tool.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login(ctx: Ctx) -> Response:
    next_url = _safe_next(ctx.request.query_params.get("next") or ctx.form.get("next"))
    if ctx.request.method == "GET":
        if ctx.user is not None:
            return ctx.redirect(next_url)
        notice = REGISTERED if ctx.request.query_params.get("registered") else None
        return ctx.render("login.html", next=next_url, email="", notice=notice)
    email = ctx.form.get("email", "")
    state = viewer_state(ctx.request)
    try:
        state.logins.take([account_key(email), address_key(client_address(ctx.request))])
        # In the hashing pool: this page thread waits, the database pool does not.
        principal = state.hash_pool.submit(check_password, email, ctx.form.get("password", "")).result()
    except TooManyAttempts as exc:
        response = ctx.render("login.html", status=429, next=next_url, email=email, error=f"{exc.message}.")
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except AuthenticationFailed:
        return ctx.render("login.html", status=400, next=next_url, email=email, error="Wrong email or password.")
    user = User.get_by_id(principal.user_id)
    sign_in(ctx.request, user)
    return ctx.redirect(next_url)


def logout(ctx: Ctx) -> Response:
    sign_out(ctx.request)
    return ctx.redirect("/login")


# What registering answers whether or not the address had an account: telling them apart would let
# anyone find out who uses this server.
REGISTERED = "If this email address was not registered yet, its account now exists: sign in."


def register(ctx: Ctx) -> Response:
    if not may_register(ctx.settings):
        raise NotFound(REGISTRATION_CLOSED)
    if ctx.request.method == "GET":
        return ctx.render("register.html", email="")
    email = ctx.form.get("email", "")
    password = ctx.form.get("password", "")
    state = viewer_state(ctx.request)
    try:
        normalize_email(email)
        check_new_password(password)
        if password != ctx.form.get("password2", password):
            raise InvalidInput("The two passwords differ.", field="password2")
        state.signups.take([address_key(client_address(ctx.request))], "sign-ups from this address")
        # Hashed for a taken address too (same time either way), in the hashing pool, before any transaction.
        password_hash = state.hash_pool.submit(hash_password, password).result()
        try:
            # Registration closed: only the first account of an empty database (decided in the transaction).
            register_user(state.db, email, password_hash, open_to_all=ctx.settings.registration_open)
        except Conflict:
            pass
    except RtdpError as exc:
        response = ctx.render(
            "register.html",
            status=exc.status,
            email=email,
            error=exc.message,
            error_field=error_field(exc, ("email", "password", "password2")),
        )
        if isinstance(exc, TooManyAttempts):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response
    return ctx.redirect("/login?registered=1")


def _account_page(ctx: Ctx, user: User, status: int = 200, **extra: object) -> Response:
    tokens = list(
        Token.select(Token, Feed)
        .join(Feed, pw.JOIN.LEFT_OUTER)
        .where((Token.user == user.id) & (Token.revoked == False))  # noqa: E712 -- peewee expression
        .order_by(Token.created.desc())
    )
    feeds = list(readable_feeds(ctx.principal).order_by(Feed.name))
    return ctx.render("account.html", status=status, tokens=tokens, feeds=feeds, now=time.time(), **extra)


def account(ctx: Ctx) -> Response:
    user = ctx.require_user()
    return _account_page(ctx, user)


def change_password(ctx: Ctx) -> Response:
    user = ctx.require_user()
    new = ctx.form.get("new_password", "")
    state = viewer_state(ctx.request)
    # A guess at the current password too (a borrowed session): throttled and hashed like a login.
    try:
        state.logins.take([account_key(user.email), address_key(client_address(ctx.request))])
    except TooManyAttempts as exc:
        response = _account_page(ctx, user, status=429, password_error=f"{exc.message}.")
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    current = ctx.form.get("current_password", "")
    if not state.hash_pool.submit(verify_password, user.password_hash, current).result():
        return _account_page(
            ctx, user, status=400, password_error="The current password is wrong.", password_field="current_password"
        )
    try:
        check_new_password(new, "new_password")
    except InvalidInput as exc:
        return _account_page(ctx, user, status=400, password_error=exc.message, password_field="new_password")
    if new != ctx.form.get("new_password2", new):
        return _account_page(
            ctx, user, status=400, password_error="The two new passwords differ.", password_field="new_password2"
        )
    new_hash = state.hash_pool.submit(hash_password, new).result()
    with User._meta.database.atomic():
        User.update(password_hash=new_hash, session_version=User.session_version + 1).where(
            User.id == user.id
        ).execute()
        # Every other session of this user ends now; this one carries on under a new key.
        end_sessions(user.id)
        revision.bump()  # the broker reads its MQTT logins again now (rtdp.revision)
    user = User.get_by_id(user.id)
    sign_in(ctx.request, user)
    ctx.user = user
    return _account_page(ctx, user, password_message="Password changed. Other sessions are signed out.")


def create_api_token(ctx: Ctx) -> Response:
    user = ctx.require_user()
    feed: Feed | None = None
    feed_name = ctx.form.get("feed", "")
    if feed_name:
        feed = ctx.feed(feed_name, Access.READ)
    access_text = ctx.form.get("access", "")
    try:
        access = Access(access_text) if access_text else None
    except ValueError:
        raise InvalidInput(f"unknown access {access_text[:20]!r}: use read or write") from None
    issued = create_token(
        user,
        feed=feed,
        access=access,
        name=ctx.form.get("name", "")[:100],
        expires=expires_at(ctx.form.get("expires_days", "")),
    )
    # Shown once, in this response only: the database keeps only its hash.
    return _account_page(ctx, user, new_token=issued.token, new_token_name=issued.row.name)


def expires_at(days: str) -> float | None:
    """The expiry of a token valid for `days` days from now ("" for never)."""
    if not days:
        return None
    try:
        count = int(days)
    except ValueError:
        raise InvalidInput("expires_days must be a number of days", field="expires_days") from None
    if not 1 <= count <= MAX_TOKEN_DAYS:
        raise InvalidInput(f"expires_days must be 1 to {MAX_TOKEN_DAYS}", field="expires_days")
    return time.time() + count * 86400


def revoke_api_token(ctx: Ctx) -> Response:
    user = ctx.require_user()
    try:
        token_id = int(ctx.form.get("token_id", ""))
    except ValueError:
        raise InvalidInput("token_id must be a number") from None
    if not 0 < token_id <= MAX_ID:
        raise NotFound("no such token")
    with Token._meta.database.atomic():
        updated = Token.update(revoked=True).where((Token.id == token_id) & (Token.user == user.id)).execute()
        if not updated:
            raise NotFound("no such token")
        revision.bump()  # its MQTT connections end within the revision's poll, not after RTDP_CREDENTIAL_TTL
    return ctx.redirect("/account")

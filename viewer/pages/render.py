"""Rendering pages: the Jinja2 environment, the per-request context, and errors as HTML pages.

Every page handler is synchronous (it reads the database through Peewee) and runs in Starlette's
thread pool; `page()` wraps it: reads the form, checks CSRF on POST, resolves the signed-in user,
and turns RtdpError into an HTML page in the site's layout (or JSON for fetch() callers).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from rtdp.accounts import principal_for
from rtdp.casts import format_time
from rtdp.errors import AuthenticationFailed, InvalidInput, PermissionDenied, RtdpError
from rtdp.models import Feed, User
from rtdp.permissions import Access, Principal, allowed
from rtdp.settings import Settings
from rtdp.store import get_feed
from viewer.errors import ErrorPage, error_parts
from viewer.session import check_csrf, csrf_token, session_user

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
STATIC = Path(__file__).resolve().parent.parent / "static"


class LoginRequired(AuthenticationFailed):
    """A page needs a signed-in user: browsers are sent to /login."""

    code = "login_required"


def _fmt_time(value: float | None) -> str:
    if value is None:
        return ""
    try:
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (ValueError, OverflowError, OSError):
        return repr(value)  # outside years 1-9999 (stored by older versions): not worth a broken page


def _fmt_x(value: float | None, x_cast: str) -> str:
    if value is None:
        return ""
    if x_cast == "datetime":
        return format_time(value, "microseconds")
    if x_cast == "int" or (math.isfinite(value) and value == int(value) and abs(value) < 1e15):
        return str(int(value))
    return repr(value)


def _fmt_y(value: float | None, y_cast: str, unit: str | None = None) -> str:
    """A y as people read it, like static/js/common.js formatNumber: 4 significant digits, thousands
    separators from 10,000 up, the unit after it; a bool axis's unit "closed/open" names its states."""
    if value is None:
        return ""
    if y_cast == "bool":
        labels = (unit or "").split("/")
        names = labels if len(labels) == 2 and all(labels) else ["false", "true"]
        return names[1] if value else names[0]
    if not math.isfinite(value):
        return repr(value)
    if abs(value) >= 10_000:
        text = f"{value:,.0f}"
    elif value != 0 and abs(value) < 1e-4:
        text = f"{value:.3e}"
    else:
        text = f"{value:.4g}"
        if "e" in text:  # .4g writes 1234.5 as 1235 but 12345 never reaches here; keep plain digits
            text = f"{value:.0f}"
    return f"{text} {unit}" if unit else text


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html", "xml"], default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["time"] = _fmt_time
    env.filters["fmt_x"] = _fmt_x
    env.filters["fmt_y"] = _fmt_y
    env.filters["count"] = lambda value: "" if value is None else f"{int(value):,}"
    env.filters["urlpart"] = lambda value: quote(str(value), safe="")
    return env


@dataclass
class Ctx:
    """What a page handler gets: the request, its form, who is asking, and how to render."""

    request: Request
    settings: Settings
    env: Environment
    form: Mapping[str, str] = field(default_factory=dict)
    user: User | None = None
    principal: Principal | None = None

    @property
    def wants_json(self) -> bool:
        return "application/json" in self.request.headers.get("accept", "")

    def require_user(self) -> User:
        if self.user is None:
            raise LoginRequired("sign in to see this page")
        return self.user

    def require_principal(self) -> Principal:
        """The signed-in user as the permission rule sees them (rtdp.permissions)."""
        self.require_user()
        if self.principal is None:
            raise LoginRequired("sign in to see this page")
        return self.principal

    def feed(self, name: str, access: Access = Access.READ) -> Feed:
        """The named feed if this principal may `access` it: 404 if missing, login or 403 if not allowed."""
        feed = get_feed(name)
        if not allowed(self.principal, feed, access):
            if self.principal is None:
                raise LoginRequired("sign in to see this feed")
            raise PermissionDenied(f"you may not {access.value} feed {name!r}")
        return feed

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(
            request=self.request,
            user=self.user,
            csrf=csrf_token(self.request) if "session" in self.request.scope else "",
            registration=may_register(self.settings),
            **context,
        )
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def redirect(self, url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303)


def may_register(settings: Settings) -> bool:
    """Whether the Register page takes new accounts: registration is open, or nobody has an account yet
    (the first one becomes the administrator). Synchronous (one small query when closed)."""
    return settings.registration_open or not User.select(User.id).exists()


def page_number(request: Request) -> int:
    """The `page` query parameter of a paged list (1 when absent)."""
    text = request.query_params.get("page", "1")
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 1_000_000:
        raise InvalidInput("page must be a whole number from 1")
    return int(text)


def error_field(exc: RtdpError, fields: tuple[str, ...], aliases: Mapping[str, str] | None = None) -> str | None:
    """The form field `exc` is about (its detail's `field`, renamed by `aliases`), if the form has it.
    None means the message belongs in the form's general alert."""
    name = exc.detail.get("field")
    if not isinstance(name, str):
        return None
    name = (aliases or {}).get(name, name)
    return name if name in fields else None


Handler = Callable[[Ctx], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


TITLES = {400: "Bad request", 401: "Sign in required", 403: "Access denied", 404: "Not found", 409: "Conflict"}
# Of an error's headers, those a page keeps: WWW-Authenticate would make a browser ask for Basic credentials
# instead of showing the page (pages sign in through /login).
PAGE_HEADERS = ("Allow", "Retry-After")


def error_page(ctx: Ctx, status: int, body: Mapping[str, object], headers: Mapping[str, str]) -> Response:
    """Every error on a page path, drawn once: error.html in the site's layout (JSON for fetch() callers)."""
    if ctx.wants_json:
        return JSONResponse(dict(body), status_code=status, headers=dict(headers))
    response = ctx.render(
        "error.html", status=status, title=TITLES.get(status, "Error"), message=str(body.get("error")), code=status
    )
    response.headers.update({name: value for name, value in headers.items() if name in PAGE_HEADERS})
    return response


def _failed(ctx: Ctx, exc: RtdpError) -> Response:
    if isinstance(exc, LoginRequired) and ctx.request.method == "GET" and not ctx.wants_json:
        target = ctx.request.url.path + (f"?{ctx.request.url.query}" if ctx.request.url.query else "")
        return ctx.redirect(f"/login?next={quote(target, safe='')}")
    status, body, headers = error_parts(exc)
    return error_page(ctx, status, body, headers)


def page(settings: Settings, env: Environment, handler: Handler) -> Endpoint:
    """An async endpoint running `handler` in the thread pool, with CSRF checked on every POST."""

    async def endpoint(request: Request) -> Response:
        form: dict[str, str] = {}
        if request.method == "POST":
            async with request.form(max_files=0, max_fields=100) as data:
                form = {key: value for key, value in data.items() if isinstance(value, str)}

        def run() -> Response:
            ctx = Ctx(request, settings, env, form)
            try:
                ctx.user = session_user(request)
                ctx.principal = principal_for(ctx.user) if ctx.user is not None else None
                if request.method == "POST":
                    check_csrf(request, form.get("csrf_token"))
                return handler(ctx)
            except RtdpError as exc:
                return _failed(ctx, exc)

        response = await run_in_threadpool(run)
        if request.method == "POST":
            _forget_cached_decisions(request)
        return response

    return endpoint


def _forget_cached_decisions(request: Request) -> None:
    """A form may have revoked a token, changed a password, deleted a feed or axis, removed a share: the
    viewer's cached credentials and permission decisions must not outlive that (viewer.state promises
    it), and open streams check again. On the event loop, like every other use of those caches
    (TTLCache is not thread-safe); forms are rare."""
    state = getattr(request.app.state, "viewer", None)
    if state is not None:
        state.rights_changed()


def error_pages(settings: Settings, env: Environment) -> ErrorPage:
    """How the app's error handlers draw errors on page paths (viewer.errors): `error_page`, signed in."""

    async def draw(request: Request, status: int, body: dict[str, object], headers: dict[str, str]) -> Response:
        def run() -> Response:
            ctx = Ctx(request, settings, env)
            try:
                ctx.user = session_user(request)
            except Exception:  # noqa: BLE001 -- the page for an error must not fail on what failed (the database)
                ctx.user = None
            return error_page(ctx, status, body, headers)

        return await run_in_threadpool(run)

    return draw

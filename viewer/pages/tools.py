"""`/tools`: switch each emulator source on and off live (the original's "Toggle Sin Wave").

The switch is the source's EmulatorState row (rtdp.emulation, shared with the emulator); a running
emulator, in this process or another one on the same database, polls it about once a second. Admins may
switch every source; a feed's owner only the sources publishing to that feed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response

from rtdp.emulation import check_source, set_enabled, source_feeds, statuses
from rtdp.errors import InvalidInput, PermissionDenied
from rtdp.models import Feed, User
from viewer.pages.render import Ctx


@dataclass(frozen=True, slots=True)
class ToolRow:
    source: str
    feed: str | None
    enabled: bool
    updated: float | None
    owner: str | None
    may_switch: bool


def _owners() -> dict[str, tuple[int, str]]:
    names = [feed for feed in source_feeds().values() if feed]
    query = Feed.select(Feed.name, User.id, User.email).join(User).where(Feed.name.in_(names))
    rows: list[Any] = list(query.tuples())
    return {name: (int(user_id), str(email)) for name, user_id, email in rows}


def may_switch(user: User, feed: str | None, owners: dict[str, tuple[int, str]]) -> bool:
    if user.is_admin:
        return True
    owner = owners.get(feed or "")
    return owner is not None and owner[0] == user.id


def may_use_tools(user: User | None) -> bool:
    """Admins, and owners of a feed an emulator source publishes to (for the site's navigation)."""
    if user is None:
        return False
    if user.is_admin:
        return True
    return any(owner_id == user.id for owner_id, _ in _owners().values())


def tool_rows(user: User) -> list[ToolRow]:
    owners = _owners()
    feeds = source_feeds()
    rows = []
    for status in statuses():
        feed = feeds.get(status.source)
        owner = owners.get(feed or "")
        rows.append(
            ToolRow(
                status.source, feed, status.enabled, status.updated,
                owner[1] if owner else None, may_switch(user, feed, owners),
            )
        )
    return rows


def tools_page(ctx: Ctx) -> Response:
    """GET /tools: every source with its switch; only the switches this user may use are buttons."""
    user = ctx.require_user()
    rows = tool_rows(user)
    if not any(row.may_switch for row in rows):
        raise PermissionDenied("the tools are for administrators and the owners of the emulated feeds")
    return ctx.render("tools.html", rows=rows)


def toggle_source(ctx: Ctx) -> Response:
    """POST /tools/{source} with `enabled` = on|off (CSRF checked by the page wrapper)."""
    user = ctx.require_user()
    source = check_source(ctx.request.path_params["source"])  # 404 for a name that is no source
    wanted = ctx.form.get("enabled", "").strip().lower()
    if wanted not in ("on", "off"):
        raise InvalidInput("enabled must be 'on' or 'off'", field="enabled")
    if not may_switch(user, source_feeds().get(source), _owners()):
        raise PermissionDenied(f"you may not switch the {source!r} source: its feed is not yours")
    set_enabled(source, wanted == "on")
    if ctx.wants_json:
        return JSONResponse({"source": source, "enabled": wanted == "on"})
    return ctx.redirect("/tools")

"""Dashboards: a named page of widgets over any feeds. The API (viewer.dashboards_api), the pages
(viewer.pages.dashboards) and `--demo --emulate` (`seed_demo_dashboard`) all call these.

Who may see one: its owner, admins, the users and groups it is shared with (read-only), and anyone with its
link once it is public (its id is random, so only a link finds it). Who may change it: its owner or an
admin, signed in or through a token that is neither limited to one feed nor read-only.

A dashboard gives nobody any right to a feed: every widget shows a series only to someone who may read
its feed (rtdp.permissions.allowed), and `as_dict` leaves the others out for that viewer, names and all
(`{"hidden": true}` in their place). Saving a widget on a feed the saver may not read is refused (403
naming the field), a missing feed or axis is 400 naming the field: nothing is stored then.

Widgets (`validate_widgets` normalises them):

- `{"type": "chart", "series": [{"feed", "axis"}, ...]}`: a line chart of 1-8 axes across feeds
- `{"type": "table", "series": [...]}`: the latest points of 1-8 axes
- `{"type": "value", "feed", "axis"}`: the latest value, a sparkline of the range, its trend
- `{"type": "gauge", "feed", "axis", "min": 0, "max": 100, "thresholds": [60, 80]}`
- `{"type": "state", "feed", "axis", "on": "open", "off": "closed"}`: an on/off indicator
- every widget: optional `title` (up to 100 characters), `w` (grid columns, 1-12) and `h` (rows, 1-6).

Synchronous (Peewee): callers run these in their database pool.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

import peewee as pw

from rtdp.errors import AuthenticationFailed, InvalidInput, NotFound, PermissionDenied
from rtdp.models import MAX_ID, Axis, Dashboard, DashboardShare, Feed, Group, Membership, User
from rtdp.permissions import Access, Principal, allowed
from rtdp.sharing import find_grantee
from rtdp.store.dialect import dialect_of

TYPES = ("chart", "value", "gauge", "state", "table")
MULTI = ("chart", "table")  # the types that take `series`; the others take one `feed` and `axis`
MAX_WIDGETS = 24
MAX_SERIES = 8
MAX_NAME = 100
MAX_DASHBOARDS = 200  # per owner: a bound against abuse, not a product limit
MIN_RANGE, MAX_RANGE = 60, 366 * 86400
DEFAULT_RANGE = 3600
GRID_COLUMNS, MAX_ROWS = 12, 6
# Default width and height on the 12-column grid.
SIZES = {"chart": (6, 2), "table": (4, 2), "value": (3, 1), "gauge": (3, 1), "state": (3, 1)}
_FIELDS = {
    "chart": {"series"}, "table": {"series"}, "value": {"feed", "axis"},
    "gauge": {"feed", "axis", "min", "max", "thresholds"}, "state": {"feed", "axis", "on", "off"},
}
_COMMON = {"type", "title", "w", "h"}
_BODY_FIELDS = {"name", "widgets", "range", "public"}


# -- validation --------------------------------------------------------------------------------------


def _text(value: Any, field: str, *, limit: int, required: bool = True) -> str:
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidInput(f"{field} must be a non-empty string", field=field)
    text = value.strip()
    if len(text) > limit:
        raise InvalidInput(f"{field} must be at most {limit} characters", field=field)
    if any(ord(c) < 32 for c in text):
        raise InvalidInput(f"{field} must not contain control characters", field=field)
    return text


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{field} must be a finite number", field=field)
    return float(value)


def _whole(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{field} must be a whole number from {low} to {high}", field=field)
    return value


def _series(value: Any, field: str, readers: _Readers) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{field} must be an object with feed and axis", field=field)
    unknown = set(value) - {"feed", "axis"}
    if unknown:
        raise InvalidInput(f"{field} has unknown field(s): {', '.join(sorted(unknown))[:100]}", field=field)
    feed = _text(value.get("feed"), f"{field}.feed", limit=64)
    axis = _text(value.get("axis"), f"{field}.axis", limit=64)
    readers.check(feed, axis, field)
    return {"feed": feed, "axis": axis}


class _Readers:
    """Whether the saver may read each feed and the axis exists, asked once per feed."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.feeds: dict[str, Feed | None] = {}

    def check(self, feed_name: str, axis_name: str, field: str) -> None:
        if feed_name not in self.feeds:
            feed = Feed.get_or_none(Feed.name == feed_name)
            self.feeds[feed_name] = feed if feed is not None and allowed(self.principal, feed, Access.READ) else None
            if feed is None:
                raise InvalidInput(f"{field}.feed: no feed named {feed_name!r}", field=f"{field}.feed")
        feed = self.feeds[feed_name]
        if feed is None:
            raise PermissionDenied(f"{field}.feed: you may not read feed {feed_name!r}", field=f"{field}.feed")
        if not Axis.select(Axis.id).where((Axis.feed == feed.id) & (Axis.name == axis_name)).exists():
            raise InvalidInput(f"{field}.axis: feed {feed_name!r} has no axis {axis_name!r}", field=f"{field}.axis")


def _widget(value: Any, field: str, readers: _Readers) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{field} must be an object", field=field)
    kind = value.get("type")
    if kind not in TYPES:
        raise InvalidInput(f"{field}.type must be one of {', '.join(TYPES)}", field=f"{field}.type")
    unknown = set(value) - _COMMON - _FIELDS[kind]
    if unknown:
        raise InvalidInput(f"{field} has unknown field(s): {', '.join(sorted(unknown))[:100]}", field=field)
    w, h = SIZES[kind]
    widget: dict[str, Any] = {
        "type": kind,
        "title": _text(value.get("title", ""), f"{field}.title", limit=MAX_NAME, required=False),
        "w": _whole(value.get("w", w), f"{field}.w", 1, GRID_COLUMNS),
        "h": _whole(value.get("h", h), f"{field}.h", 1, MAX_ROWS),
    }
    if kind in MULTI:
        series = value.get("series")
        if not isinstance(series, list) or not 1 <= len(series) <= MAX_SERIES:
            raise InvalidInput(f"{field}.series must be a list of 1 to {MAX_SERIES} series", field=f"{field}.series")
        widget["series"] = [_series(s, f"{field}.series[{i}]", readers) for i, s in enumerate(series)]
        return widget
    widget.update(_series({"feed": value.get("feed"), "axis": value.get("axis")}, field, readers))
    if kind == "gauge":
        low = _number(value.get("min", 0), f"{field}.min")
        high = _number(value.get("max", 100), f"{field}.max")
        if not low < high:
            raise InvalidInput(f"{field}.max must be greater than min", field=f"{field}.max")
        thresholds = value.get("thresholds", [])
        if not isinstance(thresholds, list) or len(thresholds) > 4:
            raise InvalidInput(f"{field}.thresholds must be a list of at most 4 numbers", field=f"{field}.thresholds")
        marks = [_number(t, f"{field}.thresholds[{i}]") for i, t in enumerate(thresholds)]
        if marks != sorted(marks) or any(not low <= t <= high for t in marks):
            raise InvalidInput(
                f"{field}.thresholds must ascend between min and max", field=f"{field}.thresholds"
            )
        widget.update(min=low, max=high, thresholds=marks)
    elif kind == "state":
        widget["on"] = _text(value.get("on", "on"), f"{field}.on", limit=32)
        widget["off"] = _text(value.get("off", "off"), f"{field}.off", limit=32)
    return widget


def validate_widgets(principal: Principal, value: Any) -> list[dict[str, Any]]:
    """The widgets normalised (defaults filled in), or InvalidInput/PermissionDenied naming the field."""
    if not isinstance(value, list) or len(value) > MAX_WIDGETS:
        raise InvalidInput(f"widgets must be a list of at most {MAX_WIDGETS} widgets", field="widgets")
    readers = _Readers(principal)
    return [_widget(w, f"widgets[{i}]", readers) for i, w in enumerate(value)]


@dataclass(frozen=True, slots=True)
class Changes:
    name: str | None = None
    widgets: list[dict[str, Any]] | None = None
    range: int | None = None
    public: bool | None = None


def parse_body(principal: Principal, body: dict[str, Any], *, creating: bool) -> Changes:
    """A request body's fields checked, in the order a reader expects its errors."""
    unknown = set(body) - _BODY_FIELDS
    if unknown:
        first = sorted(unknown)[0][:64]
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))[:100]}", field=first)
    name = None
    if creating or "name" in body:
        name = _text(body.get("name"), "name", limit=MAX_NAME)
    widgets = validate_widgets(principal, body["widgets"]) if "widgets" in body else ([] if creating else None)
    span = _whole(body["range"], "range", MIN_RANGE, MAX_RANGE) if "range" in body else None
    public = body.get("public")
    if public is not None and not isinstance(public, bool):
        raise InvalidInput("public must be true or false", field="public")
    return Changes(name, widgets, span, public)


# -- who may --------------------------------------------------------------------------------------------


def _shared_with(principal: Principal) -> pw.ModelSelect[DashboardShare]:
    groups = Membership.select(Membership.group).where(Membership.user == principal.user_id)
    return DashboardShare.select(DashboardShare.dashboard).where(
        (DashboardShare.user == principal.user_id) | DashboardShare.group.in_(groups)
    )


def may_view(principal: Principal | None, dashboard: Dashboard) -> bool:
    if dashboard.public:
        return True
    if principal is None:
        return False
    if principal.service or principal.is_admin or dashboard.owner_id == principal.user_id:
        return True
    return bool(_shared_with(principal).where(DashboardShare.dashboard == dashboard.id).exists())


def may_edit(principal: Principal | None, dashboard: Dashboard) -> bool:
    """The owner or an admin, not through a device's token (one feed) or a read-only one."""
    if principal is None:
        return False
    if principal.service:
        return True
    if principal.token_feed_id is not None or principal.token_access is Access.READ:
        return False
    return principal.is_admin or dashboard.owner_id == principal.user_id


def find(principal: Principal | None, dashboard_id: str) -> Dashboard:
    """The dashboard if `principal` may see it: 401 without credentials, else 404 (the id is the secret)."""
    found = Dashboard.get_or_none(Dashboard.id == dashboard_id[:32]) if len(dashboard_id) <= 32 else None
    if found is None or not may_view(principal, found):
        if principal is None:
            raise AuthenticationFailed("authentication required: sign in to see this dashboard")
        raise NotFound(f"no dashboard {dashboard_id[:32]!r}", field="id")
    return found


def editable(principal: Principal, dashboard_id: str) -> Dashboard:
    dashboard = find(principal, dashboard_id)
    if not may_edit(principal, dashboard):
        raise PermissionDenied("only the owner or an administrator may change this dashboard", field="id")
    return dashboard


# -- what a viewer gets ------------------------------------------------------------------------------


def readable_series(principal: Principal | None, widgets: list[dict[str, Any]]) -> set[str]:
    """The names of the feeds among `widgets` that `principal` may read."""
    names = {s["feed"] for w in widgets for s in (w.get("series") or [w])}
    return {f.name for f in Feed.select().where(Feed.name.in_(list(names))) if allowed(principal, f, Access.READ)}


def visible_widgets(principal: Principal | None, dashboard: Dashboard) -> list[dict[str, Any]]:
    """The widgets as `principal` may see them: a series on a feed they may not read becomes `{"hidden": true}`
    (a one-series widget gets `"hidden": true` and loses its feed and axis; a widget with nothing left to show
    loses its title too)."""
    widgets: list[dict[str, Any]] = json.loads(dashboard.widgets)
    readable = readable_series(principal, widgets)
    shown = []
    for widget in widgets:
        if "series" in widget:
            widget = {**widget, "series": [s if s["feed"] in readable else {"hidden": True} for s in widget["series"]]}
            if all(s.get("hidden") for s in widget["series"]):
                widget["title"] = ""  # the owner's words about what this viewer may not see
        elif widget["feed"] not in readable:
            widget = {k: v for k, v in widget.items() if k not in ("feed", "axis")} | {"hidden": True, "title": ""}
        shown.append(widget)
    return shown


@dataclass(frozen=True, slots=True)
class DashboardShareView:
    id: int
    user: str | None
    group: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user, "group": self.group, "access": "read"}


def shares_of(dashboard: Dashboard) -> list[DashboardShareView]:
    rows = (
        DashboardShare.select(DashboardShare, User, Group)
        .join(User, on=(DashboardShare.user == User.id), join_type=pw.JOIN.LEFT_OUTER)
        .switch(DashboardShare)
        .join(Group, on=(DashboardShare.group == Group.id), join_type=pw.JOIN.LEFT_OUTER)
        .where(DashboardShare.dashboard == dashboard.id)
        .order_by(DashboardShare.id)
    )
    return [
        DashboardShareView(s.id, s.user.email if s.user is not None else None, s.group.name if s.group else None)
        for s in rows
    ]


def as_dict(principal: Principal | None, dashboard: Dashboard) -> dict[str, Any]:
    """The dashboard as `principal` sees it; `shares` only for those who may change it."""
    mine = may_edit(principal, dashboard)
    owner = User.get_by_id(dashboard.owner_id)
    return {
        "id": dashboard.id,
        "name": dashboard.name,
        "owner": owner.email if mine else (owner.display_name or owner.email.split("@")[0]),
        "range": dashboard.range,
        "public": bool(dashboard.public),
        "editable": mine,
        "widgets": visible_widgets(principal, dashboard),
        "shares": [s.as_dict() for s in shares_of(dashboard)] if mine else None,
        "created": dashboard.created,
        "updated": dashboard.updated,
    }


def list_for(principal: Principal) -> list[Dashboard]:
    """The dashboards `principal` owns or that are shared with them (admins: every one), by name."""
    query = Dashboard.select().order_by(Dashboard.name, Dashboard.id)
    if principal.service or principal.is_admin:
        return list(query)
    return list(query.where((Dashboard.owner == principal.user_id) | Dashboard.id.in_(_shared_with(principal))))


# -- changes -------------------------------------------------------------------------------------------


def _writing() -> Any:
    """A transaction that reads, then writes: it takes the write lock first (on SQLite a deferred one that
    read first fails with "database is locked" when another writer, the bridge, committed meanwhile)."""
    db = Dashboard._meta.database
    return dialect_of(db).write_transaction(db)


def _signed_in(principal: Principal) -> None:
    if principal.service:
        raise InvalidInput("a dashboard needs an owner: create it as a user")
    if principal.token_feed_id is not None or principal.token_access is Access.READ:
        raise PermissionDenied("a token limited to one feed or to reading may not create dashboards")


def create(principal: Principal, body: dict[str, Any]) -> Dashboard:
    _signed_in(principal)
    changes = parse_body(principal, body, creating=True)
    with _writing():
        if Dashboard.select().where(Dashboard.owner == principal.user_id).count() >= MAX_DASHBOARDS:
            raise PermissionDenied(f"you have {MAX_DASHBOARDS} dashboards already", field="name")
        dashboard: Dashboard = Dashboard.create(
            id=secrets.token_urlsafe(12),
            owner=principal.user_id,
            name=changes.name,
            widgets=json.dumps(changes.widgets),
            range=changes.range or DEFAULT_RANGE,
            public=bool(changes.public),
        )
    return dashboard


def update(principal: Principal, dashboard_id: str, body: dict[str, Any]) -> Dashboard:
    with _writing():
        return _update(principal, dashboard_id, body)


def _update(principal: Principal, dashboard_id: str, body: dict[str, Any]) -> Dashboard:
    dashboard = editable(principal, dashboard_id)
    changes = parse_body(principal, body, creating=False)
    fields: dict[str, Any] = {"updated": time.time()}
    if changes.name is not None:
        fields["name"] = changes.name
    if changes.widgets is not None:
        fields["widgets"] = json.dumps(changes.widgets)
    if changes.range is not None:
        fields["range"] = changes.range
    if changes.public is not None:
        fields["public"] = changes.public
    Dashboard.update(**fields).where(Dashboard.id == dashboard.id).execute()
    return Dashboard.get_by_id(dashboard.id)


def delete(principal: Principal, dashboard_id: str) -> None:
    with _writing():
        editable(principal, dashboard_id).delete_instance()


def add_share(principal: Principal, dashboard_id: str, *, user: str | None, group: str | None) -> DashboardShareView:
    """Share read-only with a user (email) or a group (name); sharing twice with the same one changes nothing."""
    with _writing():
        dashboard = editable(principal, dashboard_id)
        member, team = find_grantee(user, group)
        if member is not None and member.id == dashboard.owner_id:
            raise InvalidInput(f"{member.email} owns this dashboard already", field="user")
        who = (DashboardShare.user == member.id) if member is not None else (DashboardShare.group == team.id)  # type: ignore[union-attr]
        share = DashboardShare.get_or_none((DashboardShare.dashboard == dashboard.id) & who)
        if share is None:
            share = DashboardShare.create(dashboard=dashboard.id, user=member, group=team)
        return DashboardShareView(share.id, member.email if member else None, team.name if team else None)


def remove_share(principal: Principal, dashboard_id: str, share_id: int) -> None:
    with _writing():
        dashboard = editable(principal, dashboard_id)
        share = (
            DashboardShare.get_or_none((DashboardShare.id == share_id) & (DashboardShare.dashboard == dashboard.id))
            if 0 <= share_id <= MAX_ID
            else None
        )
        if share is None:
            raise NotFound(f"this dashboard has no share {share_id}", field="id")
        share.delete_instance()


# -- the demo ------------------------------------------------------------------------------------------


def seed_demo_dashboard(owner: User, feeds: dict[str, str]) -> Dashboard | None:
    """`--demo --emulate`: a dashboard over the emulated devices for `owner`, once (None when it exists).
    `feeds` maps each emulated source to its feed (rtdp.emulation.source_feeds); a missing one is skipped."""
    from rtdp.accounts import principal_for

    name = "Emulated devices"
    if Dashboard.select().where((Dashboard.owner == owner.id) & (Dashboard.name == name)).exists():
        return None

    def axes(feed: str | None) -> list[str]:
        if feed is None:
            return []
        return [a.name for a in Axis.select(Axis.name).join(Feed).where(Feed.name == feed).order_by(Axis.name)]

    widgets: list[dict[str, Any]] = []
    sine = feeds.get("sine")
    if axes(sine):
        series = [{"feed": sine, "axis": a} for a in axes(sine)]
        widgets.append({"type": "chart", "title": "Sine waves", "series": series})
    walk = feeds.get("random_walk")
    if axes(walk):
        widgets.append({"type": "value", "title": "Temperature", "feed": walk, "axis": axes(walk)[0]})
    system = feeds.get("system")
    cpu = [a for a in axes(system) if "cpu" in a]
    if cpu:
        widgets.append({"type": "gauge", "title": "CPU", "feed": system, "axis": cpu[0], "min": 0, "max": 100,
                        "thresholds": [60, 85]})
    for source, title, on, off in (("door", "Front door", "open", "closed"), ("x10", "Lamp", "on", "off")):
        if axes(feeds.get(source)):
            widgets.append({"type": "state", "title": title, "feed": feeds[source], "axis": axes(feeds[source])[0],
                            "on": on, "off": off})
    if axes(walk):
        latest = [{"feed": walk, "axis": axes(walk)[0]}]
        widgets.append({"type": "table", "title": "Latest temperatures", "series": latest})
    if not widgets:
        return None
    return create(principal_for(owner), {"name": name, "widgets": widgets, "range": 300})

"""`/alerts` (firing rules, recent events live, acknowledge, every rule) and the feed page's Alerts
section (a template include). rtdp.alerts does the work and holds the permission rule; these read forms.

The header's count of firing rules comes from `firing_alerts`, a template global (one small query per
page). Live updates ride on the feeds' existing SSE streams (`event: alert`, viewer.hub); the page's
script then reads /api/v1/alerts/events again.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from rtdp import alerts
from rtdp.accounts import principal_for
from rtdp.errors import InvalidInput, NotFound, PermissionDenied, RtdpError
from rtdp.models import Axis, Feed, User
from rtdp.permissions import Access, Principal, allowed, readable_feeds
from viewer.pages.render import Ctx

RULE_FIELDS = ("name", "feed", "axis", "kind", "threshold", "hysteresis", "for_s", "value", "silent_s",
               "severity", "repeat_min", "webhook", "email", "mqtt", "browser")


def firing_alerts(user: User | None) -> int:
    """For the header: how many rules the signed-in user may see are firing."""
    if user is None:
        return 0
    try:
        return alerts.firing_count(principal_for(user))
    except RtdpError:
        return 0


def rules_for_feed(user: User | None, feed: Feed) -> dict[str, Any]:
    """For the feed page's include: its rules, its axes and whether this user may make rules."""
    principal = principal_for(user) if user is not None else None
    if principal is None or not allowed(principal, feed, Access.READ):
        return {"rules": [], "axes": [], "can_write": False}
    rules = alerts.rules_json(principal, alerts.list_rules(principal, feed.name))
    for rule in rules:
        rule["condition"] = alerts.condition(rule)
    axes = [a.name for a in Axis.select(Axis.name).where(Axis.feed == feed.id).order_by(Axis.name).limit(1000)]
    return {"rules": rules, "axes": axes, "can_write": allowed(principal, feed, Access.WRITE)}


def _actor(ctx: Ctx) -> Principal:
    return ctx.require_principal()


def _page(ctx: Ctx, status: int = 200, **extra: object) -> Response:
    actor = _actor(ctx)
    rules = alerts.rules_json(actor, alerts.list_rules(actor))
    for rule in rules:
        rule["condition"] = alerts.condition(rule)
    events = alerts.events_json(alerts.recent_events(actor, 50))
    feeds = [f.name for f in readable_feeds(actor).order_by(Feed.name).limit(1000)]
    writable = [name for name in feeds if allowed(actor, Feed.get(Feed.name == name), Access.WRITE)]
    watched = sorted({r["feed"] for r in rules})
    return ctx.render(
        "alerts.html", status=status, rules=rules, firing=[r for r in rules if r["state"] == "firing"],
        events=events, writable=writable, watched=watched, **extra,
    )


def alerts_page(ctx: Ctx) -> Response:
    return _page(ctx)


def body_from_form(form: dict[str, str], feed: str) -> dict[str, Any]:
    """The API body for the rule form (checked by rtdp.alerts like any other)."""
    body: dict[str, Any] = {"name": form.get("name", ""), "feed": feed, "axis": form.get("axis", ""),
                            "kind": form.get("kind", ""), "severity": form.get("severity", "warning")}
    for name in ("threshold", "hysteresis", "for_s", "silent_s", "repeat_min", "value"):
        text = form.get(name, "").strip()
        if not text:
            continue
        try:
            body[name] = float(text)
        except ValueError:
            if name != "value":
                raise InvalidInput(f"{name} must be a number", field=name) from None
            body[name] = text  # true/false/open... on a bool feed
    actions: list[dict[str, Any]] = []
    if form.get("browser"):
        actions.append({"type": "browser"})
    if form.get("mqtt"):
        actions.append({"type": "mqtt"})
    if form.get("webhook", "").strip():
        actions.append({"type": "webhook", "url": form["webhook"].strip()})
    if form.get("email", "").strip():
        actions.append({"type": "email", "to": form["email"].strip()})
    body["actions"] = actions
    return body


def _back(ctx: Ctx, feed: str | None) -> Response:
    return ctx.redirect(f"/feeds/{feed}#alerts" if feed and ctx.form.get("back") == "feed" else "/alerts")


def add_rule(ctx: Ctx) -> Response:
    actor = _actor(ctx)
    feed = ctx.request.path_params.get("feed") or ctx.form.get("feed", "")
    checks = alerts.Checks(allow_private=ctx.settings.webhook_allow_private)
    try:
        rule = alerts.add_rule(actor, body_from_form(dict(ctx.form), feed), checks)
    except (InvalidInput, NotFound, PermissionDenied) as exc:
        if ctx.wants_json:
            raise
        return _page(ctx, status=exc.status, error=exc.message, error_field=exc.detail.get("field", ""),
                     form=ctx.form)
    if ctx.wants_json:
        return JSONResponse(alerts.rule_detail(actor, rule), status_code=201)
    return _back(ctx, feed)


def remove_rule(ctx: Ctx) -> Response:
    actor = _actor(ctx)
    rule = alerts.get_rule(actor, alerts.parse_id(ctx.request.path_params["id"]))
    feed = Feed.get_by_id(rule.feed_id).name
    alerts.remove_rule(actor, rule.id)
    return _back(ctx, feed)


def toggle_rule(ctx: Ctx) -> Response:
    actor = _actor(ctx)
    rule_id = alerts.parse_id(ctx.request.path_params["id"])
    rule = alerts.update_rule(actor, rule_id, {"enabled": ctx.form.get("enabled") == "on"})
    return _back(ctx, Feed.get_by_id(rule.feed_id).name)


def acknowledge(ctx: Ctx) -> Response:
    event = alerts.acknowledge(_actor(ctx), alerts.parse_id(ctx.request.path_params["id"]))
    if ctx.wants_json:
        return JSONResponse(alerts.events_json([event])[0])
    return ctx.redirect("/alerts#events")

"""Alert rules: what they may say, who may see and change them, and their JSON. The API, the pages and
`rtdp alert` all call these functions (synchronous: Peewee); judging points against the rules is
rtdp.alerting's, running the actions rtdp.alert_actions'.

A rule goes with its feed's permissions (rtdp.permissions.allowed, shares included): whoever may read the
feed sees its rules and their events (without the webhook secret), whoever may write it makes, changes,
removes and acknowledges them. Every change bumps the alerts revision (rtdp.revision.ALERTS) in its
transaction, so the processes that judge points reload their rules.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rtdp import alerting, revision
from rtdp.casts import YCast, cast_y, y_json
from rtdp.errors import InvalidInput, NotFound, PermissionDenied
from rtdp.models import AlertEvent, AlertRule, Axis, Feed, User
from rtdp.permissions import Access, Principal, allowed, readable_feeds
from rtdp.topic import FeedTopic
from rtdp.webhooks import check_webhook_url

KINDS = ("above", "below", "changes", "silent")
SEVERITIES = ("info", "warning", "critical")
ACTION_TYPES = ("browser", "mqtt", "webhook", "email")
STATES = ("ok", "firing")
MAX_ACTIONS = 10
MAX_NAME = 100
MAX_SECONDS = 7 * 86400
RECENT_EVENTS = 20
_EMAIL_RE = re.compile(r"[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9.\-]{1,190}")
_FIELDS = {
    "name", "feed", "axis", "kind", "threshold", "hysteresis", "for_s", "value", "silent_s", "severity",
    "enabled", "repeat_min", "actions",
}
# What PATCH may change: the feed and axis stay (make another rule for another axis).
_CHANGEABLE = _FIELDS - {"feed", "axis"}


@dataclass(frozen=True, slots=True)
class Checks:
    """What validating a rule needs to know from the process's settings."""

    allow_private: bool = False
    resolve: bool = True  # look webhook host names up (refused if one resolves to a private address)


# --- validation -------------------------------------------------------------------------------------


def _text(body: dict[str, Any], name: str, limit: int = MAX_NAME) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidInput(f"{name} must be a non-empty string of at most {limit} characters", field=name)
    return value.strip()


def _number(body: dict[str, Any], name: str, *, low: float = -math.inf, high: float = math.inf) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{name} must be a number", field=name)
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low:g} and {high:g}", field=name)
    return float(value)


def _y_value(value: object, y_cast: YCast, name: str) -> float:
    """A threshold or value as a y of the feed's type: an int feed takes whole numbers, a bool feed true/false."""
    if isinstance(value, str) and y_cast is not YCast.BOOL:
        raise InvalidInput(f"{name} must be a number for this feed ({y_cast.value})", field=name)
    try:
        return cast_y(value, y_cast)
    except InvalidInput as exc:
        raise InvalidInput(exc.message.replace("y ", f"{name} ", 1), field=name) from None


def _check_actions(raw: object, principal: Principal, topic: str, checks: Checks) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_ACTIONS:
        raise InvalidInput(f"actions must be a list of at most {MAX_ACTIONS} objects", field="actions")
    actions: list[dict[str, Any]] = []
    for index, item in enumerate(raw):
        where = f"actions[{index}]"
        if not isinstance(item, dict) or item.get("type") not in ACTION_TYPES:
            raise InvalidInput(f"{where}.type must be one of {', '.join(ACTION_TYPES)}", field=f"{where}.type")
        kind = item["type"]
        allowed_keys = {"browser": {"type"}, "mqtt": {"type", "topic", "payload"}, "webhook": {"type", "url"},
                        "email": {"type", "to"}}[kind]
        unknown = set(item) - allowed_keys
        if unknown:
            raise InvalidInput(f"{where}: unknown field(s) {', '.join(sorted(unknown))[:100]}", field=where)
        if kind == "webhook":
            url = item.get("url")
            if not isinstance(url, str) or len(url) > 2000:
                raise InvalidInput(f"{where}.url must be an http(s) URL", field=f"{where}.url")
            check_webhook_url(url, allow_private=checks.allow_private, resolve=checks.resolve, field=f"{where}.url")
            actions.append({"type": "webhook", "url": url})
        elif kind == "email":
            to = item.get("to")
            if not isinstance(to, str) or not _EMAIL_RE.fullmatch(to):
                raise InvalidInput(f"{where}.to must be an e-mail address", field=f"{where}.to")
            actions.append({"type": "email", "to": to})
        elif kind == "mqtt":
            action: dict[str, Any] = {"type": "mqtt"}
            if item.get("topic") is not None:
                action["topic"] = _owner_topic(item["topic"], principal, topic, f"{where}.topic")
                payload = item.get("payload")
                if payload is not None and (not isinstance(payload, str) or len(payload) > 1000):
                    raise InvalidInput(f"{where}.payload must be a string of at most 1000 characters",
                                       field=f"{where}.payload")
                if payload is not None:
                    action["payload"] = payload
            elif item.get("payload") is not None:
                raise InvalidInput(f"{where}.payload needs a topic", field=f"{where}.payload")
            actions.append(action)
        else:
            actions.append({"type": "browser"})
    return actions


def _owner_topic(value: object, principal: Principal, own_topic: str, field: str) -> str:
    """The extra topic of an mqtt action: `feeds/<feed>/<axis>` of a feed the rule's maker may write (so a
    rule can switch a device), never the rule's own axis (its action would feed the rule: a loop)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a topic feeds/<feed>/<axis>", field=field)
    try:
        target = FeedTopic.parse(value)
    except InvalidInput:
        raise InvalidInput(f"{field} must be a topic feeds/<feed>/<axis>", field=field) from None
    if str(target) == own_topic:
        raise InvalidInput(f"{field} is the rule's own axis: its points would trigger the rule again", field=field)
    feed = Feed.get_or_none(Feed.name == target.feed)
    if feed is None or not allowed(principal, feed, Access.WRITE):
        raise PermissionDenied(f"{field}: you may not publish to {value!r}", field=field)
    return value


def _feed_for(principal: Principal, name: object, access: Access) -> Feed:
    if not isinstance(name, str) or not name:
        raise InvalidInput("feed must be a feed name", field="feed")
    feed = Feed.get_or_none(Feed.name == name[:64])
    if feed is None or not allowed(principal, feed, Access.READ):
        raise NotFound(f"no feed named {name[:64]!r}", field="feed")
    if not allowed(principal, feed, access):
        raise PermissionDenied(f"you may not change alert rules on feed {name!r}", field="feed")
    return feed


def _apply(rule: AlertRule, body: dict[str, Any], feed: Feed, principal: Principal, checks: Checks) -> None:
    """Check `body`'s fields (all of them for a new rule) and set them on `rule`; nothing is saved."""
    y_cast = YCast(feed.y_cast)
    if "name" in body or rule.id is None:
        rule.name = _text(body, "name")
    if "kind" in body or rule.id is None:
        kind = body.get("kind")
        if kind not in KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(KINDS)}", field="kind")
        if kind in ("above", "below") and y_cast is YCast.BOOL:
            raise InvalidInput("kind: above and below need a number feed; use changes on a bool feed", field="kind")
        if kind == "changes" and y_cast is YCast.FLOAT:
            raise InvalidInput("kind: changes is for bool and int feeds", field="kind")
        rule.kind = kind
    if "threshold" in body:
        rule.threshold = None if body["threshold"] is None else _y_value(body["threshold"], y_cast, "threshold")
    if "value" in body:
        rule.value = None if body["value"] is None else _y_value(body["value"], y_cast, "value")
    if "hysteresis" in body:
        rule.hysteresis = _number(body, "hysteresis", low=0) or 0.0
    if "for_s" in body:
        rule.for_s = _number(body, "for_s", low=0, high=MAX_SECONDS) or 0.0
    if "silent_s" in body:
        rule.silent_s = _number(body, "silent_s", low=0.1, high=MAX_SECONDS)
    if "repeat_min" in body:
        rule.repeat_min = _number(body, "repeat_min", low=1, high=MAX_SECONDS / 60)
    if "severity" in body or rule.id is None:
        severity = body.get("severity", "warning")
        if severity not in SEVERITIES:
            raise InvalidInput(f"severity must be one of {', '.join(SEVERITIES)}", field="severity")
        rule.severity = severity
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise InvalidInput("enabled must be true or false", field="enabled")
        rule.enabled = body["enabled"]
    if "actions" in body or rule.id is None:
        own = f"feeds/{feed.name}/{Axis.get_by_id(rule.axis_id).name}"
        rule.actions = json.dumps(_check_actions(body.get("actions"), principal, own, checks))
    if rule.kind in ("above", "below") and rule.threshold is None:
        raise InvalidInput(f"threshold is required for kind {rule.kind}", field="threshold")
    if rule.kind == "silent" and rule.silent_s is None:
        raise InvalidInput("silent_s is required for kind silent", field="silent_s")


# --- the functions behind the API, the pages and the CLI ------------------------------------------


def add_rule(principal: Principal, body: dict[str, Any], checks: Checks = Checks()) -> AlertRule:
    """Make a rule from `body` (the API's shape); InvalidInput/NotFound/PermissionDenied name the field."""
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    unknown = set(body) - _FIELDS
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))[:100]}", field=sorted(unknown)[0][:64])
    feed = _feed_for(principal, body.get("feed"), Access.WRITE)
    axis_name = body.get("axis")
    axis = Axis.get_or_none((Axis.feed == feed.id) & (Axis.name == axis_name)) if isinstance(axis_name, str) else None
    if axis is None:
        raise InvalidInput(f"feed {feed.name!r} has no axis {str(axis_name)[:64]!r}", field="axis")
    owner_id = feed.owner_id if principal.service else principal.user_id
    rule = AlertRule(feed=feed.id, axis=axis.id, owner=owner_id, secret=secrets.token_hex(16), state="ok")
    rule.since = time.time()
    _apply(rule, body, feed, principal, checks)
    with AlertRule._meta.database.atomic():
        rule.save()
        revision.bump(revision.ALERTS)
    return rule


def _rule_for(principal: Principal, rule_id: int, access: Access) -> AlertRule:
    rule = AlertRule.get_or_none(AlertRule.id == rule_id)
    if rule is None:
        raise NotFound(f"no alert rule {rule_id}", field="id")
    feed = Feed.get_by_id(rule.feed_id)
    if not allowed(principal, feed, Access.READ):
        raise NotFound(f"no alert rule {rule_id}", field="id")  # the same answer as a missing one
    if not allowed(principal, feed, access):
        raise PermissionDenied(f"you may not change alert rule {rule_id}", field="id")
    return rule


def get_rule(principal: Principal, rule_id: int) -> AlertRule:
    return _rule_for(principal, rule_id, Access.READ)


def update_rule(principal: Principal, rule_id: int, body: dict[str, Any], checks: Checks = Checks()) -> AlertRule:
    rule = _rule_for(principal, rule_id, Access.WRITE)
    unknown = set(body) - _CHANGEABLE
    if unknown:
        raise InvalidInput(f"unknown or fixed field(s): {', '.join(sorted(unknown))[:100]}",
                           field=sorted(unknown)[0][:64])
    before = (rule.kind, rule.threshold, rule.hysteresis, rule.value, rule.silent_s, rule.enabled)
    _apply(rule, body, Feed.get_by_id(rule.feed_id), principal, checks)
    # Only what the body set: the state columns belong to the judges, which may have moved them since the
    # rule was read (a transition written back over would be lost, then happen again), and last_result to
    # the action lanes.
    fields = [AlertRule._meta.fields[name] for name in sorted(body)]
    db = AlertRule._meta.database
    with db.atomic():
        if before != (rule.kind, rule.threshold, rule.hysteresis, rule.value, rule.silent_s, rule.enabled):
            # A different condition starts from ok: the old state says nothing about the new rule. Taken
            # like a judge's change of state, so no judge carries the old state past this commit.
            alerting.change_states(db)
            rule.state, rule.since, rule.pending_since, rule.last_y = "ok", time.time(), None, None
            fields += [AlertRule.state, AlertRule.since, AlertRule.pending_since, AlertRule.last_y]
        if fields:
            rule.save(only=fields)
        revision.bump(revision.ALERTS)
    return rule


def remove_rule(principal: Principal, rule_id: int) -> None:
    rule = _rule_for(principal, rule_id, Access.WRITE)
    with AlertRule._meta.database.atomic():
        rule.delete_instance(recursive=True)
        revision.bump(revision.ALERTS)


def list_rules(principal: Principal, feed: str | None = None) -> list[AlertRule]:
    """The rules on every feed `principal` may read (or on `feed`), by feed, axis and id."""
    feeds = readable_feeds(principal).select(Feed.id)
    query = AlertRule.select().where(AlertRule.feed.in_(feeds))
    if feed is not None:
        query = query.where(AlertRule.feed == _feed_for(principal, feed, Access.READ).id)
    return list(query.order_by(AlertRule.feed, AlertRule.axis, AlertRule.id))


def firing_count(principal: Principal) -> int:
    feeds = readable_feeds(principal).select(Feed.id)
    return int(AlertRule.select().where(AlertRule.feed.in_(feeds) & (AlertRule.state == "firing")).count())


def recent_events(principal: Principal, limit: int = 50, rule_id: int | None = None) -> list[AlertEvent]:
    feeds = readable_feeds(principal).select(Feed.id)
    query = AlertEvent.select(AlertEvent, AlertRule).join(AlertRule).where(AlertRule.feed.in_(feeds))
    if rule_id is not None:
        query = query.where(AlertEvent.rule == rule_id)
    return list(query.order_by(AlertEvent.id.desc()).limit(limit))


def acknowledge(principal: Principal, event_id: int) -> AlertEvent:
    event = AlertEvent.get_or_none(AlertEvent.id == event_id)
    if event is None:
        raise NotFound(f"no alert event {event_id}", field="id")
    _rule_for(principal, event.rule_id, Access.WRITE)
    event.acknowledged, event.acknowledged_by = True, principal.email[:254]
    event.save()
    return event


# --- JSON ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Names:
    """Feed and axis names and y types of the rules being shown, read in one query each."""

    feeds: dict[int, Feed]
    axes: dict[int, str]

    @classmethod
    def of(cls, rules: Iterable[AlertRule]) -> Names:
        rules = list(rules)
        feed_ids = {r.feed_id for r in rules}
        axis_ids = {r.axis_id for r in rules}
        feeds = {f.id: f for f in Feed.select().where(Feed.id.in_(feed_ids))} if feed_ids else {}
        axes = {a.id: a.name for a in Axis.select(Axis.id, Axis.name).where(Axis.id.in_(axis_ids))} if axis_ids else {}
        return cls(feeds, axes)


def _y(value: float | None, feed: Feed) -> float | int | bool | None:
    if value is None:
        return None
    cast = YCast(feed.y_cast)
    return bool(value) if cast is YCast.BOOL else y_json(value, cast)


def rule_json(rule: AlertRule, names: Names, *, secret: bool = False) -> dict[str, Any]:
    feed = names.feeds[rule.feed_id]
    shown: dict[str, Any] = {
        "id": rule.id, "name": rule.name, "feed": feed.name, "axis": names.axes.get(rule.axis_id, ""),
        "kind": rule.kind, "threshold": _y(rule.threshold, feed), "hysteresis": rule.hysteresis,
        "for_s": rule.for_s, "value": _y(rule.value, feed), "silent_s": rule.silent_s,
        "severity": rule.severity, "enabled": bool(rule.enabled), "repeat_min": rule.repeat_min,
        "actions": json.loads(rule.actions), "state": rule.state, "since": rule.since,
        "last_result": rule.last_result, "created": rule.created,
    }
    if secret:
        shown["secret"] = rule.secret
    return shown


def event_json(event: AlertEvent, rule: AlertRule, names: Names) -> dict[str, Any]:
    feed = names.feeds[rule.feed_id]
    point = None if event.point_id is None else {"id": event.point_id, "x": event.x, "y": _y(event.y, feed)}
    return {
        "id": event.id, "rule": rule.id, "rule_name": rule.name, "severity": rule.severity, "feed": feed.name,
        "axis": names.axes.get(rule.axis_id, ""), "state": event.state, "at": event.at, "point": point,
        "acknowledged": bool(event.acknowledged), "acknowledged_by": event.acknowledged_by,
    }


def rules_json(principal: Principal, rules: list[AlertRule]) -> list[dict[str, Any]]:
    names = Names.of(rules)
    return [rule_json(r, names, secret=allowed(principal, names.feeds[r.feed_id], Access.WRITE)) for r in rules]


def rule_detail(principal: Principal, rule: AlertRule) -> dict[str, Any]:
    """A rule with its recent events (GET /api/v1/alerts/<id>)."""
    names = Names.of([rule])
    shown = rule_json(rule, names, secret=allowed(principal, names.feeds[rule.feed_id], Access.WRITE))
    shown["events"] = [event_json(e, rule, names) for e in recent_events(principal, RECENT_EVENTS, rule.id)]
    return shown


def events_json(events: list[AlertEvent]) -> list[dict[str, Any]]:
    rules = [e.rule for e in events]
    names = Names.of(rules)
    return [event_json(e, r, names) for e, r in zip(events, rules, strict=True)]


def owner_email(rule: AlertRule) -> str:
    user = User.get_or_none(User.id == rule.owner_id)
    return str(user.email) if user is not None else ""


def condition(shown: dict[str, Any]) -> str:
    """A rule's condition in words, from its JSON (the CLI's list, the pages)."""
    kind = shown["kind"]
    if kind in ("above", "below"):
        text = f"{kind} {shown['threshold']}"
        if shown["hysteresis"]:
            text += f" (hysteresis {shown['hysteresis']:g})"
    elif kind == "changes":
        text = "changes" if shown["value"] is None else f"changes to {json.dumps(shown['value'])}"
    else:
        text = f"silent {shown['silent_s']:g} s"
    if shown["for_s"]:
        text += f" for {shown['for_s']:g} s"
    return text


def cli_body(feed: str, axis: str, kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """The API body for `rtdp alert add`'s options (checked by add_rule like any other)."""
    body: dict[str, Any] = {"name": options["name"], "feed": feed, "axis": axis, "kind": kind,
                            "hysteresis": options["hysteresis"], "for_s": options["for_s"],
                            "severity": options["severity"], "enabled": not options["disabled"]}
    if kind in ("above", "below"):
        body["threshold"] = options[kind]
    elif kind == "silent":
        body["silent_s"] = options["silent"]
    elif options["to_value"] is not None:
        text = options["to_value"]
        body["value"] = float(text) if re.fullmatch(r"-?\d+(\.\d+)?", text) else text
    if options["repeat_min"] is not None:
        body["repeat_min"] = options["repeat_min"]
    actions: list[dict[str, Any]] = []
    if options["browser"]:
        actions.append({"type": "browser"})
    if options["publish"] or options["mqtt_topic"]:
        mqtt: dict[str, Any] = {"type": "mqtt"}
        if options["mqtt_topic"]:
            mqtt["topic"] = options["mqtt_topic"]
            if options["mqtt_payload"] is not None:
                mqtt["payload"] = options["mqtt_payload"]
        actions.append(mqtt)
    actions += [{"type": "webhook", "url": url} for url in options["webhook"]]
    actions += [{"type": "email", "to": to} for to in options["email"]]
    body["actions"] = actions
    return body


def parse_id(value: str, what: str = "id") -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(f"{what} must be a whole number", field=what) from None
    if not 0 < number < 2**63:
        raise InvalidInput(f"{what} is out of range", field=what)
    return number


"""Alerts judged by `rtdp bridge` behind Mosquitto: every action against a real receiver, the silent rule,
two bridges on one share group, and a restart while firing."""

from __future__ import annotations

import json
import time
from typing import Any

import peewee as pw
import pytest

from bridge.service import Bridge
from rtdp import alerts
from rtdp.models import AlertEvent, AlertRule, User
from rtdp.permissions import OPERATOR
from rtdp.store import create_axis
from tests.bridge.conftest import BridgeHarness, endpoint_of, make_feed
from tests.support.env import wait_for
from tests.support.receivers import Mailbox, WebhookReceiver


@pytest.fixture
def alerting(harness: BridgeHarness, mailbox: Mailbox) -> BridgeHarness:
    harness.settings = harness.settings.replace(webhook_allow_private=True, smtp_url=mailbox.url)
    return harness


ALLOW = alerts.Checks(allow_private=True)


def add(body: dict[str, Any]) -> AlertRule:
    return alerts.add_rule(OPERATOR, {"feed": "f", "axis": "a", "severity": "warning", **body}, ALLOW)


def send(h: BridgeHarness, y: float, axis: str = "a") -> None:
    h.publisher.send(f"feeds/f/{axis}", json.dumps({"y": y}))


def stored(h: BridgeHarness, count: int, axis: str = "a") -> None:
    wait_for(lambda: len(h.points("f", axis)) >= count, what=f"{count} points on {axis}")


def events(rule: AlertRule) -> list[str]:
    return [e.state for e in AlertEvent.select().where(AlertEvent.rule == rule.id).order_by(AlertEvent.id)]


def test_every_action_runs_once_per_transition(alerting: BridgeHarness, owner: User, hook: WebhookReceiver,
                                               mailbox: Mailbox) -> None:
    feed = make_feed(owner, "f")
    create_axis(feed, "a")
    create_axis(feed, "switch")
    rule = add({"name": "hot", "kind": "above", "threshold": 30, "hysteresis": 2, "actions": [
        {"type": "webhook", "url": hook.url}, {"type": "mqtt"}, {"type": "browser"},
        {"type": "email", "to": "me@example.com"}, {"type": "mqtt", "topic": "feeds/f/switch", "payload": "1"}]})
    alerting.start()
    for count, y in enumerate([20, 35, 36, 29, 27, 31], start=1):  # ok, firing, -, - (hysteresis), ok, firing
        send(alerting, y)
        stored(alerting, count)
    hooks = hook.wait(3)
    assert [h.body["state"] for h in hooks] == ["firing", "ok", "firing"]
    assert all(h.signed_with(rule.secret) for h in hooks)
    assert not hooks[0].signed_with("another secret")
    first = hooks[0].body
    assert first["rule"] == {"id": rule.id, "name": "hot", "severity": "warning", "kind": "above"}
    assert (first["feed"], first["axis"], first["point"]["y"], first["notify"]) == ("f", "a", 35.0, True)
    published = alerting.notices.wait("rtdp/alerts/f", 3)
    assert [m["state"] for m in published] == ["firing", "ok", "firing"]
    mails = mailbox.wait(3)
    assert "hot is firing" in str(mails[0]["Subject"]) and mails[0]["To"] == "me@example.com"
    # The owner topic switched a device on each firing (not when back to ok): stored like any point.
    wait_for(lambda: len(alerting.points("f", "switch")) == 2, what="two switch points")
    # Events with the points that caused them; the last webhook result on the rule.
    rows = list(AlertEvent.select().where(AlertEvent.rule == rule.id).order_by(AlertEvent.id))
    assert [(e.state, e.y) for e in rows] == [("firing", 35.0), ("ok", 27.0), ("firing", 31.0)]
    assert all(e.point_id for e in rows)
    wait_for(lambda: AlertRule.get_by_id(rule.id).last_result.startswith("HTTP 200"), what="last result")
    time.sleep(0.3)
    assert len(hook.received()) == 3 and len(mailbox.received()) == 3 and len(alerting.points("f", "switch")) == 2


def test_webhook_retries_with_back_off(alerting: BridgeHarness, owner: User, hook: WebhookReceiver) -> None:
    feed = make_feed(owner, "f")
    create_axis(feed, "a")
    rule = add({"name": "flaky", "kind": "below", "threshold": 0, "actions": [{"type": "webhook", "url": hook.url}]})
    hook.status, hook.fail = 503, 2
    alerting.start()
    send(alerting, -1)
    hooks = hook.wait(3)
    assert hooks[1].at - hooks[0].at >= 0.4 and hooks[2].at - hooks[1].at >= 0.8  # 0.5 s, then 1 s
    assert len({h.raw for h in hooks}) == 1
    wait_for(lambda: "HTTP 200" in AlertRule.get_by_id(rule.id).last_result, what="last result")
    assert "attempt 3 of 3" in AlertRule.get_by_id(rule.id).last_result


def test_webhook_to_a_private_address_is_refused_unless_allowed(harness: BridgeHarness, owner: User,
                                                                 hook: WebhookReceiver) -> None:
    feed = make_feed(owner, "f")
    create_axis(feed, "a")
    # Made while allowed, then judged by a bridge that does not allow it (or a DNS name that moved).
    rule = add({"name": "ssrf", "kind": "above", "threshold": 0, "actions": [{"type": "webhook", "url": hook.url}]})
    harness.start()
    send(harness, 1)
    wait_for(lambda: "refused" in AlertRule.get_by_id(rule.id).last_result, what="refused result")
    assert hook.received() == []


def test_silent_fires_once_and_ends_with_a_point(alerting: BridgeHarness, owner: User) -> None:
    feed = make_feed(owner, "f")
    create_axis(feed, "a")
    rule = add({"name": "dead", "kind": "silent", "silent_s": 0.6, "actions": [{"type": "mqtt"}]})
    alerting.start()
    send(alerting, 1)
    stored(alerting, 1)
    wait_for(lambda: events(rule) == ["firing"], what="silence noticed")
    time.sleep(1.0)
    assert events(rule) == ["firing"]
    send(alerting, 2)
    wait_for(lambda: events(rule) == ["firing", "ok"], what="silence ended")
    assert [m["state"] for m in alerting.notices.wait("rtdp/alerts/f", 2)] == ["firing", "ok"]


def test_two_bridges_fire_each_transition_once(alerting: BridgeHarness, owner: User, hook: WebhookReceiver) -> None:
    feed = make_feed(owner, "f", x_cast="int")
    create_axis(feed, "a")
    create_axis(feed, "quiet")
    hot = add({"name": "hot", "kind": "above", "threshold": 30, "actions": [{"type": "webhook", "url": hook.url}]})
    dead = add({"name": "dead", "axis": "quiet", "kind": "silent", "silent_s": 0.5,
                "actions": [{"type": "webhook", "url": hook.url}]})
    settings = alerting.settings.replace(share_group="g")
    bridges = [Bridge(settings, endpoint_of(alerting.broker), f"alerts-{n}", alerting.db) for n in range(2)]
    for bridge in bridges:
        bridge.start()
    try:
        for bridge in bridges:
            wait_for(bridge.ready.is_set, what="shared bridge subscribed")
        x = 0
        for phase in range(6):
            for _ in range(20):  # each phase spread over both bridges
                x += 1
                alerting.publisher.client.publish("feeds/f/a", json.dumps({"x": x, "y": 40 if phase % 2 == 0 else 10}),
                                                  qos=1)
            stored(alerting, x)
        assert all(bridge.stats.points_stored > 0 for bridge in bridges)
        assert events(hot) == ["firing", "ok"] * 3
        wait_for(lambda: events(dead) == ["firing"], what="the silent rule fired")
        hooks = hook.wait(7)
        time.sleep(1.5)  # both sweepers ran a few times more: still once
        assert events(dead) == ["firing"]
        assert sorted(h.body["rule"]["name"] for h in hook.received()) == ["dead"] + ["hot"] * 6
        assert [h.body["state"] for h in hooks if h.body["rule"]["name"] == "hot"] == ["firing", "ok"] * 3
    finally:
        for bridge in bridges:
            bridge.stop()


def test_a_restart_while_firing_carries_on(alerting: BridgeHarness, owner: User, hook: WebhookReceiver) -> None:
    feed = make_feed(owner, "f")
    create_axis(feed, "a")
    rule = add({"name": "hot", "kind": "above", "threshold": 30, "actions": [{"type": "webhook", "url": hook.url}]})
    alerting.start()
    send(alerting, 35)
    hook.wait(1)
    alerting.stop()
    alerting.start()  # a new bridge, a new rule index, the state from the database
    send(alerting, 36)
    stored(alerting, 2)
    send(alerting, 37)
    stored(alerting, 3)
    assert events(rule) == ["firing"]
    send(alerting, 20)
    wait_for(lambda: events(rule) == ["firing", "ok"], what="ok after the restart")
    assert [h.body["state"] for h in hook.wait(2)] == ["firing", "ok"]


def test_a_disabled_or_removed_rule_is_not_judged(alerting: BridgeHarness, owner: User, any_db: pw.Database) -> None:
    feed = make_feed(owner, "f")
    create_axis(feed, "a")
    rule = add({"name": "hot", "kind": "above", "threshold": 30, "enabled": False, "actions": [{"type": "mqtt"}]})
    alerting.start()
    send(alerting, 35)
    stored(alerting, 1)
    alerts.update_rule(OPERATOR, rule.id, {"enabled": True})
    send(alerting, 36)
    wait_for(lambda: events(rule) == ["firing"], what="enabled rule fired")
    alerts.remove_rule(OPERATOR, rule.id)
    send(alerting, 10)
    stored(alerting, 3)
    assert AlertEvent.select().count() == 0

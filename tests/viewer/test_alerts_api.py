"""The alerts API (viewer.alerts_api over rtdp.alerts) in-process: its shape, bad input, permissions."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from rtdp import alerts, revision
from rtdp.models import AlertRule, Share
from tests.viewer.conftest import World, basic, bearer

EP = basic("ep@nothing.com", "1234")
AP = basic("ap@nothing.com", "1234")
ALERTS = "/api/v1/alerts"


def rule(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "hot", "feed": "feed_t", "axis": "temp", "kind": "above", "threshold": 30, "for_s": 0,
        "severity": "warning",
        "actions": [{"type": "webhook", "url": "https://93.184.215.14/hook"}, {"type": "mqtt"}, {"type": "email",
                    "to": "me@example.com"}],
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def test_the_issue_shape(client: TestClient, world: World) -> None:
    made = client.post(ALERTS, json=rule(), headers=EP)
    assert made.status_code == 201, made.text
    shown = made.json()
    assert shown["id"] > 0 and shown["state"] == "ok" and shown["events"] == []
    assert {k: shown[k] for k in ("name", "feed", "axis", "kind", "threshold", "for_s", "severity")} == {
        "name": "hot", "feed": "feed_t", "axis": "temp", "kind": "above", "threshold": 30.0, "for_s": 0,
        "severity": "warning",
    }
    assert [a["type"] for a in shown["actions"]] == ["webhook", "mqtt", "email"]
    assert len(shown["secret"]) == 32
    got = client.get(f"{ALERTS}/{shown['id']}", headers=EP).json()
    assert got["state"] == "ok" and got["events"] == []
    assert [r["id"] for r in client.get(ALERTS, headers=EP).json()["alerts"]] == [shown["id"]]
    changed = client.patch(f"{ALERTS}/{shown['id']}", json={"enabled": False, "threshold": 31.5}, headers=EP)
    assert changed.status_code == 200 and changed.json()["enabled"] is False and changed.json()["threshold"] == 31.5
    assert client.get(f"{ALERTS}/events", headers=EP).json() == {"firing": 0, "events": []}
    assert client.delete(f"{ALERTS}/{shown['id']}", headers=EP).status_code == 204
    assert client.get(f"{ALERTS}/{shown['id']}", headers=EP).status_code == 404


@pytest.mark.parametrize(
    ("changes", "status", "field"),
    [
        ({"axis": "nope"}, 400, "axis"),
        ({"feed": "nope"}, 404, "feed"),
        ({"threshold": "hot"}, 400, "threshold"),
        ({"threshold": None}, 400, "threshold"),
        ({"kind": "sideways"}, 400, "kind"),
        ({"kind": "changes"}, 400, "kind"),  # a float feed
        ({"kind": "silent"}, 400, "silent_s"),
        ({"severity": "dire"}, 400, "severity"),
        ({"for_s": -1}, 400, "for_s"),
        ({"actions": [{"type": "pigeon"}]}, 400, "actions[0].type"),
        ({"actions": [{"type": "webhook", "url": "ftp://example.com/x"}]}, 400, "actions[0].url"),
        ({"actions": [{"type": "webhook", "url": "http://127.0.0.1:9/x"}]}, 400, "actions[0].url"),
        ({"actions": [{"type": "webhook", "url": "http://[::1]/x"}]}, 400, "actions[0].url"),
        ({"actions": [{"type": "webhook", "url": "http://10.1.2.3/x"}]}, 400, "actions[0].url"),
        ({"actions": [{"type": "webhook", "url": "http://localhost/x"}]}, 400, "actions[0].url"),
        ({"actions": [{"type": "email", "to": "not an address"}]}, 400, "actions[0].to"),
        ({"actions": [{"type": "mqtt", "topic": "feeds/feed_t/temp"}]}, 400, "actions[0].topic"),
        ({"actions": [{"type": "mqtt", "topic": "feeds/feed_ap/x"}]}, 403, "actions[0].topic"),
        ({"actions": [{"type": "mqtt", "topic": "rtdp/stored/feed_t"}]}, 400, "actions[0].topic"),
        ({"colour": "red"}, 400, "colour"),
    ],
)
def test_bad_input_names_the_field_and_creates_nothing(
    client: TestClient, world: World, changes: dict[str, Any], status: int, field: str
) -> None:
    body = rule(**{k: v for k, v in changes.items() if v is not None})
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
    answer = client.post(ALERTS, json=body, headers=EP)
    assert answer.status_code == status, answer.text
    assert answer.json()["field"] == field
    assert AlertRule.select().count() == 0


def test_thresholds_follow_the_y_type(client: TestClient, world: World) -> None:
    # feed_a has int y: 2.5 is not one of its values; changes to a value works there.
    bad = client.post(ALERTS, json=rule(feed="feed_a", axis="axis_a00", threshold=2.5), headers=EP)
    assert bad.status_code == 400 and bad.json()["field"] == "threshold"
    ok = client.post(ALERTS, json=rule(feed="feed_a", axis="axis_a00", kind="changes", threshold=None, value=3),
                     headers=EP)
    assert ok.status_code == 201, ok.text and ok.json()["value"] == 3


def test_rules_go_with_the_feeds_permissions(client: TestClient, world: World) -> None:
    made = client.post(ALERTS, json=rule(actions=[]), headers=EP).json()
    # ap may neither see, make nor change rules on ep's feed.
    assert client.get(ALERTS, headers=AP).json() == {"alerts": []}
    assert client.get(f"{ALERTS}/{made['id']}", headers=AP).status_code == 404
    assert client.post(ALERTS, json=rule(actions=[]), headers=AP).status_code == 404
    assert client.patch(f"{ALERTS}/{made['id']}", json={"name": "x"}, headers=AP).status_code == 404
    assert client.delete(f"{ALERTS}/{made['id']}", headers=AP).status_code == 404
    assert client.get(ALERTS).status_code == 401
    # A read share shows the rule (without its secret), a write share lets ap make one.
    Share.create(feed=world.feed_t, user=world.ap, access="read")
    seen = client.get(ALERTS, headers=AP).json()["alerts"]
    assert [r["id"] for r in seen] == [made["id"]] and "secret" not in seen[0]
    assert client.post(ALERTS, json=rule(actions=[]), headers=AP).status_code == 403
    Share.update(access="write").execute()
    assert client.post(ALERTS, json=rule(actions=[]), headers=AP).status_code == 201
    assert client.post(ALERTS, json=rule(actions=[]), headers=bearer(world.ep_read_token)).status_code == 403


def test_odd_ids_are_4xx(client: TestClient, world: World) -> None:
    for path in ("abc", "99999999999999999999999", "0"):
        assert client.get(f"{ALERTS}/{path}", headers=EP).status_code == 400
    assert client.get(f"{ALERTS}/12345", headers=EP).status_code == 404
    assert client.post(f"{ALERTS}/events/12345/ack", headers=EP).status_code == 404
    assert client.get(f"{ALERTS}/events?limit=0", headers=EP).status_code == 400


def test_a_change_keeps_the_state_a_judge_wrote_meanwhile(client: TestClient, world: World,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATCH saves what it changed, not the state it read: a bridge's transition between the read and the
    save stays (written over, it would be lost, and the rule would fire a second time)."""
    made = client.post(ALERTS, json=rule(actions=[]), headers=EP).json()
    checked = alerts._apply

    def a_bridge_fires_meanwhile(found: AlertRule, *args: Any) -> None:
        checked(found, *args)
        AlertRule.update(state="firing", last_result="HTTP 200").where(AlertRule.id == found.id).execute()

    monkeypatch.setattr(alerts, "_apply", a_bridge_fires_meanwhile)
    assert client.patch(f"{ALERTS}/{made['id']}", json={"name": "renamed"}, headers=EP).status_code == 200
    row = AlertRule.get_by_id(made["id"])
    assert (row.name, row.state, row.last_result) == ("renamed", "firing", "HTTP 200")
    # A changed condition starts from ok (and moves the states' revision: judges drop what they cached).
    states = revision.current(revision.ALERT_STATES)
    assert client.patch(f"{ALERTS}/{made['id']}", json={"threshold": 40}, headers=EP).status_code == 200
    assert AlertRule.get_by_id(made["id"]).state == "ok" and revision.current(revision.ALERT_STATES) > states

"""/alerts and the feed page's Alerts section, in-process (the live side is tests/browser/test_alerts.py)."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from rtdp.models import AlertEvent, AlertRule
from tests.viewer.conftest import World


def sign_in(client: TestClient, email: str) -> str:
    page = client.get("/login")
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert csrf is not None
    answer = client.post("/login", data={"email": email, "password": "1234", "csrf_token": csrf.group(1)},
                         follow_redirects=False)
    assert answer.status_code in (302, 303), answer.text
    again = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text)
    assert again is not None
    return again.group(1)


def test_rules_from_the_feed_page_and_alerts_page(client: TestClient, world: World) -> None:
    csrf = sign_in(client, "ep@nothing.com")
    feed_page = client.get("/feeds/feed_t")
    assert 'id="alerts"' in feed_page.text and "No alert rules on this feed." in feed_page.text
    made = client.post("/alerts", data={"csrf_token": csrf, "feed": "feed_t", "axis": "temp", "name": "hot",
                                        "kind": "above", "threshold": "30", "severity": "critical",
                                        "browser": "on", "back": "feed"}, follow_redirects=False)
    assert made.status_code == 303 and made.headers["location"] == "/feeds/feed_t#alerts"
    rule = AlertRule.get()
    assert (rule.name, rule.kind, rule.threshold, rule.severity) == ("hot", "above", 30.0, "critical")
    assert "above 30" in client.get("/feeds/feed_t").text
    assert "No events yet" in client.get("/alerts").text  # an empty table says so
    # Firing shows in the header's count and on /alerts with an acknowledge button.
    AlertRule.update(state="firing").execute()
    event = AlertEvent.create(rule=rule, state="firing", point_id=1, x=1.0, y=31.0)
    page = client.get("/alerts")
    assert re.search(r'id="alerts-firing"[^>]*>1<', page.text)
    assert f'action="/alerts/events/{event.id}/ack"' in page.text and 'data-feeds="feed_t"' in page.text
    assert "No events yet" not in page.text
    acked = client.post(f"/alerts/events/{event.id}/ack", data={"csrf_token": csrf}, follow_redirects=False)
    assert acked.status_code == 303 and AlertEvent.get_by_id(event.id).acknowledged_by == "ep@nothing.com"
    # Bad input: the page again, naming the field; nothing made.
    bad = client.post("/alerts", data={"csrf_token": csrf, "feed": "feed_t", "axis": "temp", "name": "x",
                                       "kind": "above", "threshold": "warm"})
    assert bad.status_code == 400 and 'data-field="threshold"' in bad.text and AlertRule.select().count() == 1
    assert client.post(f"/alerts/{rule.id}/enabled", data={"csrf_token": csrf, "enabled": "off"},
                       follow_redirects=False).status_code == 303
    assert AlertRule.get().enabled is False
    assert client.post(f"/alerts/{rule.id}/delete", data={"csrf_token": csrf},
                       follow_redirects=False).status_code == 303
    assert AlertRule.select().count() == 0


def test_ap_sees_nothing_of_eps_rules(client: TestClient, world: World) -> None:
    csrf = sign_in(client, "ep@nothing.com")
    client.post("/alerts", data={"csrf_token": csrf, "feed": "feed_t", "axis": "temp", "name": "secret-rule",
                                 "kind": "above", "threshold": "30"})
    assert AlertRule.select().count() == 1
    client.post("/logout", data={"csrf_token": csrf})
    csrf = sign_in(client, "ap@nothing.com")
    page = client.get("/alerts")
    assert "secret-rule" not in page.text and "feed_t" not in page.text
    refused = client.post("/alerts", data={"csrf_token": csrf, "feed": "feed_t", "axis": "temp", "name": "x",
                                           "kind": "above", "threshold": "1"})
    assert refused.status_code == 404 and AlertRule.select().count() == 1
    assert client.post(f"/alerts/{AlertRule.get().id}/delete", data={"csrf_token": csrf}).status_code == 404

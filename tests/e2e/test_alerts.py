"""Alerts in `rtdp serve` as a user runs it: rules over the API, points over MQTT, the alert read by
mosquitto_sub on rtdp/alerts/# (the feed's reader gets it, another user does not), a webhook receiver
and an SMTP server on free ports, and a restart in the middle of firing."""

from __future__ import annotations

import json
import subprocess
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.test_serve import AP, EP, MOSQUITTO_SUB, Served, running_serve
from tests.support.env import free_port, wait_for
from tests.support.receivers import Mailbox, WebhookReceiver


def serving(data_dir: Path, mqtt_port: int, env: dict[str, str]) -> AbstractContextManager[Served]:
    """`rtdp serve` on `data_dir` (started again on the same data across a restart) with `env`."""
    return running_serve(data_dir, mqtt_port, "--mqtt", f"127.0.0.1:{mqtt_port}", data_dir=data_dir, env=env)


class Sub:
    """mosquitto_sub on rtdp/alerts/# as one user: the alerts it was allowed to receive."""

    def __init__(self, port: int, auth: tuple[str, str]) -> None:
        assert MOSQUITTO_SUB is not None
        self.messages: list[dict[str, Any]] = []
        self.process = subprocess.Popen(
            [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(port), "-u", auth[0], "-P", auth[1], "-q", "1",
             "-t", "rtdp/alerts/#", "-t", "rtdp/stored/#", "-v"],
            stdout=subprocess.PIPE, text=True,
        )
        self.stored = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            topic, _, payload = line.partition(" ")
            if topic.startswith("rtdp/alerts/"):
                self.messages.append(json.loads(payload))
            else:
                self.stored += 1

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def test_alerts_in_rtdp_serve(tmp_path: Path, hook: WebhookReceiver, mailbox: Mailbox) -> None:
    env = {"RTDP_WEBHOOK_ALLOW_PRIVATE": "1", "RTDP_SMTP_URL": mailbox.url}
    mqtt_port = free_port()
    data_dir = tmp_path / "data"
    with serving(data_dir, mqtt_port, env) as served:
        api = httpx.Client(base_url=served.web, auth=EP, timeout=10)
        assert api.post("/api/v1/feeds", json={"name": "kitchen"}).status_code == 201
        assert api.post("/api/v1/feeds/kitchen/axes", json={"name": "temperature"}).status_code == 201
        made = api.post("/api/v1/alerts", json={
            "name": "hot", "feed": "kitchen", "axis": "temperature", "kind": "above", "threshold": 30, "for_s": 0,
            "severity": "warning", "actions": [{"type": "webhook", "url": hook.url}, {"type": "mqtt"},
                                               {"type": "email", "to": "me@example.com"}]})
        assert made.status_code == 201, made.text
        rule = made.json()
        # ap may not see the rule, nor receive its alerts.
        assert httpx.get(f"{served.web}/api/v1/alerts/{rule['id']}", auth=AP).status_code == 404
        ep_sub, ap_sub = Sub(mqtt_port, EP), Sub(mqtt_port, AP)
        try:
            # Subscribed once a stored notice reaches ep's mosquitto_sub.
            wait_for(lambda: served.pub("feeds/kitchen/temperature", "20") or ep_sub.stored > 0, timeout=20,
                     interval=0.3, what="mosquitto_sub subscribed")
            served.pub("feeds/kitchen/temperature", "35")
            wait_for(lambda: len(ep_sub.messages) == 1, what="the alert on rtdp/alerts/kitchen")
            alert = ep_sub.messages[0]
            assert (alert["state"], alert["feed"], alert["axis"], alert["point"]["y"]) == (
                "firing", "kitchen", "temperature", 35.0)
            assert hook.wait(1)[0].signed_with(rule["secret"])
            assert "hot is firing" in str(mailbox.wait(1)[0]["Subject"])
            shown = api.get(f"/api/v1/alerts/{rule['id']}").json()
            assert shown["state"] == "firing" and [e["state"] for e in shown["events"]] == ["firing"]
            assert shown["events"][0]["point"]["y"] == 35.0
        finally:
            ep_sub.close()
            ap_sub.close()
        assert ap_sub.messages == []
    # A restart in the middle of firing: still firing, no second firing, then ok once.
    with serving(data_dir, mqtt_port, env) as served:
        api = httpx.Client(base_url=served.web, auth=EP, timeout=10)
        assert api.get(f"/api/v1/alerts/{rule['id']}").json()["state"] == "firing"
        served.pub("feeds/kitchen/temperature", "36")
        wait_for(lambda: any(p["y"] == 36 for p in served.points("kitchen", "temperature")), what="36 stored")
        served.pub("feeds/kitchen/temperature", "10")
        wait_for(lambda: api.get(f"/api/v1/alerts/{rule['id']}").json()["state"] == "ok", what="ok")
        events = api.get(f"/api/v1/alerts/{rule['id']}").json()["events"]
        assert [e["state"] for e in events] == ["ok", "firing"]  # newest first
        assert [h.body["state"] for h in hook.wait(2)] == ["firing", "ok"]
        assert len(mailbox.wait(2)) == 2

"""Two bridges on one share group (Mosquitto, PostgreSQL): one is SIGKILLed mid-stream and not restarted.

Mosquitto keeps queueing that bridge's share for its persistent session while it is away (nothing is lost,
but nothing arrives either); `rtdp bridge --retire --client-id <its id>`, run anywhere, stores what was
queued for it and removes the session, so the share group's messages go to the bridge that remains.
Afterwards every point is stored exactly once, and the survivor's memory stayed bounded."""

from __future__ import annotations

from pathlib import Path

import peewee as pw
import pytest

from tests.faults.conftest import BridgeProcess, PacedPublisher, count, exactly_once, fault_axis
from tests.support.env import wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = [pytest.mark.faults, pytest.mark.postgres]

TOTAL = 6_000
KILL_AT = 2_000
MORE = 1_000


def test_a_bridge_killed_for_good_is_retired_and_its_share_stored(
    mosquitto: Mosquitto, pg_url: str, pg_db: pw.Database, tmp_path: Path
) -> None:
    axis = fault_axis(x_cast="int", y_cast="int")
    bridges = [
        BridgeProcess(mosquitto, pg_url, tmp_path, f"bridge-{n}", "--share-group", "g") for n in (1, 2)
    ]
    for bridge in bridges:
        bridge.start()
    survivor, victim = bridges
    try:
        # Both sessions subscribed before publishing: a probe per bridge goes all the way through.
        wait_for(lambda: all(b.log.exists() and "connected to MQTT" in b.log.read_text() for b in bridges),
                 timeout=30, what="both bridges connected")
        publisher = PacedPublisher(mosquitto, "feeds/fault/a", 0, TOTAL, per_second=2_000)
        wait_for(lambda: count(axis.id) >= KILL_AT, timeout=60, what=f"{KILL_AT} points stored")
        victim.kill()
        publisher.finish()
        # The survivor stores its share; the victim's waits in Mosquitto for a session nobody resumes.
        wait_for(lambda: count(axis.id) > TOTAL // 2, timeout=60, what="the survivor's share")
        stalled = count(axis.id)
        assert stalled < TOTAL, "the kill landed after everything was stored: this test proves nothing"
        assert survivor.rss_mb() < 200
        # The operator retires the dead bridge's session, from any host.
        retire = BridgeProcess(mosquitto, pg_url, tmp_path, "bridge-2", "--share-group", "g")
        assert retire.start("--retire").wait(120) == 0, retire.log.read_text()[-3000:]
        assert "retired bridge-2" in retire.log.read_text()
        wait_for(lambda: count(axis.id) == TOTAL, timeout=60, what=f"{TOTAL} points")
        exactly_once(axis.id, TOTAL)
        # The share moved on: new points all reach the survivor, none wait for bridge-2.
        PacedPublisher(mosquitto, "feeds/fault/a", TOTAL, TOTAL + MORE, per_second=2_000).finish()
        wait_for(lambda: count(axis.id) == TOTAL + MORE, timeout=60, what="points after the retirement")
        exactly_once(axis.id, TOTAL + MORE)
        assert survivor.rss_mb() < 200
    finally:
        victim.stop()
        assert survivor.stop() == 0, survivor.log.read_text()[-3000:]

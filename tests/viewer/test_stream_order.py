"""Resume without gaps on any number of bridges (PostgreSQL): one writer's transaction is held open while
another writes the same feed, their notices reach the viewer in the wrong order (or one never does), and
SSE clients, live and resuming with Last-Event-ID, still get every point once, in commit order."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest

from rtdp.codec import Sample
from rtdp.models import Feed, Point
from rtdp.settings import BrokerURL, HostPort, Settings
from rtdp.store import Written, get_axis, points_after, write_points
from tests.support.env import wait_for
from tests.support.mosquitto import Mosquitto
from tests.viewer.conftest import LiveServer, make_world, serving
from tests.viewer.test_stream import EP, announce, stream

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_server(tmp_path: Path, mosquitto: Mosquitto, pg_url: str, pg_db: pw.Database) -> Iterator[LiveServer]:
    settings = Settings(
        data_dir=tmp_path / "pg",
        broker=BrokerURL.parse(mosquitto.url),
        db_url=pg_url,
        sse_heartbeat=0.3,
        http=HostPort("127.0.0.1", 0),  # never the standard port 8000 (the default)
    )
    with serving(settings) as live:
        yield live


def held_writer(batch: list[tuple[int, Sample]]) -> tuple[threading.Thread, threading.Event, dict[str, Written]]:
    """A bridge's transaction: writes `batch`, then stays open until the returned event is set."""
    # The database the models are bound to (the viewer opened it last), on this thread's own connection.
    db = Point._meta.database
    written: dict[str, Written] = {}
    inserted, release = threading.Event(), threading.Event()

    def run() -> None:
        try:
            with db.atomic():
                written["points"] = write_points(batch)
                inserted.set()
                release.wait(30)
        finally:
            db.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert inserted.wait(30)
    return thread, release, written


def test_resume_while_one_bridge_holds_its_transaction(
    pg_server: LiveServer, mosquitto: Mosquitto, pg_db: pw.Database
) -> None:
    make_world()
    feed = Feed.get(Feed.name == "feed_t")
    temp = get_axis(feed, "temp")
    start = write_points([(temp.id, Sample(float(i), 0.0)) for i in range(3)])
    announce(mosquitto, "feed_t", list(start), "temp")
    url = f"{pg_server.url}/api/v1/feeds/feed_t/stream"
    with stream(url, {**EP, "Last-Event-ID": str(start[-1].id)}) as live:
        wait_for(lambda: pg_server.app.state.viewer.hub.client_count == 1)
        # Bridge A: its points have ids, its transaction is still open.
        a_thread, release_a, a = held_writer([(temp.id, Sample(10.0 + i, 1.0)) for i in range(5)])
        # Bridge B writes the same feed meanwhile: it waits for A's commit, so it cannot commit a smaller id later.
        b: dict[str, Written] = {}
        b_thread = threading.Thread(target=lambda: b.update(points=write_points([(temp.id, Sample(20.0, 2.0))])))
        b_thread.start()
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        wait_for(lambda: pg_db.execute_sql(waiting).fetchone()[0] > 0, what="bridge B waiting for A")
        # A client resuming now gets nothing that is not committed, and misses nothing later.
        with stream(url, {**EP, "Last-Event-ID": str(start[-1].id)}) as resumed:
            wait_for(lambda: pg_server.app.state.viewer.hub.client_count == 2)
            release_a.set()
            a_thread.join(30)
            b_thread.join(30)
            a_points, b_points = a["points"], b["points"]
            assert max(p.id for p in a_points) < min(p.id for p in b_points)
            assert b_points.follows == {temp.id: a_points[-1].id}
            # The worst order: B's notice reaches the viewer before A's.
            announce(mosquitto, "feed_t", list(b_points), "temp", after=b_points.follows[temp.id])
            announce(mosquitto, "feed_t", list(a_points), "temp", after=a_points.follows[temp.id])
            expected = [p.id for p in [*a_points, *b_points]]
            assert resumed.ids(len(expected)) == expected
        assert live.ids(len(expected)) == expected
    # Resuming from the last event anyone got replays nothing twice; from the middle, the rest in order.
    with stream(url, {**EP, "Last-Event-ID": str(a_points[2].id)}) as again:
        assert again.ids(3) == expected[3:]


def test_a_notice_that_never_comes_is_read_from_the_database(
    pg_server: LiveServer, mosquitto: Mosquitto, pg_db: pw.Database
) -> None:
    """A bridge dies between its commit and its notice: the next notice says what it follows, and after a
    short wait the viewer reads the missing points from the database (viewer/order.py)."""
    make_world()
    feed = Feed.get(Feed.name == "feed_t")
    temp = get_axis(feed, "temp")
    url = f"{pg_server.url}/api/v1/feeds/feed_t/stream"
    with stream(url, EP) as client:
        wait_for(lambda: pg_server.app.state.viewer.hub.client_count == 1)
        first = write_points([(temp.id, Sample(1.0, 0.0))])
        announce(mosquitto, "feed_t", list(first), "temp", after=first.follows.get(temp.id))
        assert client.ids(1) == [first[0].id]
        lost = write_points([(temp.id, Sample(2.0 + i, 1.0)) for i in range(3)])  # its notice never comes
        later = write_points([(temp.id, Sample(9.0, 2.0))])
        announce(mosquitto, "feed_t", list(later), "temp", after=later.follows[temp.id])
        assert client.ids(4) == [*(p.id for p in lost), later[0].id]
    stored = [row[0] for row in points_after(feed, first[0].id)]
    assert stored == [*(p.id for p in lost), later[0].id]
    assert Point.select().count() == 5

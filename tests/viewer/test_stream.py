from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from rtdp.codec import Sample
from rtdp.models import Feed, Token
from rtdp.notices import StoredEvent
from rtdp.store import StoredPoint, get_axis, write_points
from tests.support.env import wait_for
from tests.support.mosquitto import Mosquitto
from tests.viewer.conftest import LiveServer, World, basic, bearer
from viewer.hub import Hub

EP = basic("ep@nothing.com", "1234")
END = object()


class SSEClient:
    """Reads an event stream in a thread; events (and ping comments) arrive on a queue."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.items: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        event: dict[str, str] = {}
        try:
            for line in self.response.iter_lines():
                if line.startswith(":"):
                    self.items.put(("comment", line))
                elif line == "":
                    if event:
                        self.items.put(("event", event))
                    event = {}
                else:
                    key, _, value = line.partition(":")
                    event[key] = value.lstrip(" ")
        except httpx.HTTPError:
            pass
        self.items.put(END)

    def next_event(self, timeout: float = 5.0) -> dict[str, Any] | object:
        deadline = time.monotonic() + timeout
        while True:
            item = self.items.get(timeout=max(0.01, deadline - time.monotonic()))
            if item is END:
                return END
            kind, value = item
            if kind == "event":
                return {"id": int(value["id"]), "event": value["event"], "data": json.loads(value["data"])}

    def ids(self, count: int) -> list[int]:
        events = [self.next_event() for _ in range(count)]
        assert END not in events, events
        return [e["id"] for e in events]  # type: ignore[index]


@contextmanager
def stream(url: str, headers: dict[str, str] | None = None) -> Iterator[SSEClient]:
    with httpx.Client(timeout=httpx.Timeout(10.0)) as http, http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SSEClient(response)


def announce(mosquitto: Mosquitto, feed: str, points: list[StoredPoint], axis: str) -> None:
    """Publish on rtdp/stored/<feed> exactly as the bridge does after a commit."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-bridge", protocol=mqtt.MQTTv311)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    payload = json.dumps([{"id": p.id, "axis": axis, "x": p.x, "y": p.y} for p in points])
    client.publish(f"rtdp/stored/{feed}", payload, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def test_live_events_and_replay_without_gap_or_duplicate(
    live_server: LiveServer, live_world: World, mosquitto: Mosquitto
) -> None:
    axis = get_axis(live_world.feed_t, "temp")
    first = write_points([(axis.id, Sample(1000.0 + i, float(i))) for i in range(3)])
    url = f"{live_server.url}/api/v1/feeds/feed_t/stream"
    with stream(url, {**EP, "Last-Event-ID": str(first[0].id)}) as client:
        # Replay: what came after the given id, from the database.
        assert client.ids(2) == [first[1].id, first[2].id]
        later = write_points([(axis.id, Sample(2000.0, 9.0))])
        # The bridge's notice overlaps what was replayed: only the new point comes through, once.
        announce(mosquitto, "feed_t", [*first, *later], "temp")
        event = client.next_event()
        assert event == {
            "id": later[0].id, "event": "point", "data": {"id": later[0].id, "axis": "temp", "x": 2000.0, "y": 9.0}
        }
        assert "rtdp_sse_clients 1.0" in httpx.get(f"{live_server.url}/metrics").text
    # Several bridges may announce slightly out of id order: a lower id not yet replayed still arrives.
    with stream(url, {**EP, "Last-Event-ID": str(later[0].id)}) as client:
        wait_for(lambda: live_server.app.state.viewer.hub.client_count == 1)
        low, high = write_points([(axis.id, Sample(3000.0, 1.0)), (axis.id, Sample(3001.0, 2.0))])
        announce(mosquitto, "feed_t", [high], "temp")
        announce(mosquitto, "feed_t", [low], "temp")
        assert client.ids(2) == [high.id, low.id]
    # Resuming by query parameter (EventSource polyfills that cannot set headers).
    with stream(f"{url}?last_event_id={first[2].id}", EP) as client:
        assert client.ids(3) == [later[0].id, low.id, high.id]


def test_heartbeat(live_server: LiveServer, live_world: World) -> None:
    with stream(f"{live_server.url}/api/v1/feeds/feed_t/stream", EP) as client:
        kind, line = client.items.get(timeout=5)
        assert kind == "comment" and "ping" in line


def test_stream_permissions(live_server: LiveServer, live_world: World) -> None:
    url = f"{live_server.url}/api/v1/feeds/feed_t/stream"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers=basic("ap@nothing.com", "1234")).status_code == 403
    assert httpx.get(url, headers={**EP, "Last-Event-ID": "abc"}).status_code == 400
    Feed.update(public=True).where(Feed.id == live_world.feed_t.id).execute()
    with stream(url) as client:
        kind, _ = client.items.get(timeout=5)
        assert kind == "comment"


def test_last_event_id_beyond_any_point_id_is_a_400(live_server: LiveServer, live_world: World) -> None:
    # A 64-bit point id is the most there can be: 2**63 once reached SQLite and killed the stream.
    url = f"{live_server.url}/api/v1/feeds/feed_t/stream"
    for value in (str(2**63), "9" * 30):
        response = httpx.get(url, headers={**EP, "Last-Event-ID": value})
        assert response.status_code == 400, value
        assert response.json()["field"] == "last_event_id"


def test_client_that_falls_behind_is_dropped_and_resumes(
    tmp_path: Any, mosquitto: Mosquitto, live_world: World, live_server: LiveServer
) -> None:
    # One notice with more points than the client's queue holds (sse_queue is set small below).
    live_server.app.state.viewer.hub.queue_size = 5
    axis = get_axis(live_world.feed_t, "temp")
    points = write_points([(axis.id, Sample(3000.0 + i, float(i))) for i in range(50)])
    url = f"{live_server.url}/api/v1/feeds/feed_t/stream"
    with stream(url, EP) as client:
        wait_for(lambda: live_server.app.state.viewer.hub.client_count == 1)
        announce(mosquitto, "feed_t", points, "temp")
        assert client.next_event() is END  # disconnected, not waited for
    assert "rtdp_sse_dropped_clients_total 1.0" in httpx.get(f"{live_server.url}/metrics").text
    with stream(url, {**EP, "Last-Event-ID": "0"}) as client:
        assert client.ids(50) == [p.id for p in points]


def test_server_stops_with_open_streams(live_server: LiveServer, live_world: World) -> None:
    with stream(f"{live_server.url}/api/v1/feeds/feed_t/stream", EP) as client:
        client.items.get(timeout=5)
        started = time.monotonic()
        live_server.server.should_exit = True
        assert client.next_event(timeout=10) is END
        wait_for(lambda: not live_server.server.started or live_server.server.should_exit, timeout=10)
    assert time.monotonic() - started < 10


def test_hub_drops_only_the_slow_subscriber() -> None:
    async def scenario() -> None:
        hub = Hub(queue_size=3)
        slow, fast = hub.subscribe("f"), hub.subscribe("f")
        other = hub.subscribe("g")
        for i in range(5):
            hub.dispatch("f", [StoredEvent(i, "a", float(i), 0.0)])
            event = await fast.get()
            assert event is not None and event.id == i
        assert await slow.get() is None and slow.dropped
        assert hub.client_count == 2
        assert other.queue.empty()
        hub.close()
        assert await fast.get() is None and not fast.dropped

    asyncio.run(scenario())


def test_hub_says_which_feeds_are_watched() -> None:
    """The publisher drops notices for unwatched feeds unparsed; a stream subscribes before replaying."""

    async def scenario() -> None:
        hub = Hub(queue_size=3)
        assert not hub.watched("f")
        first, second = hub.subscribe("f"), hub.subscribe("f")
        assert hub.watched("f") and not hub.watched("g")
        first.close()
        assert hub.watched("f")
        second.close()
        assert not hub.watched("f")

    asyncio.run(scenario())


def test_open_stream_ends_when_access_is_revoked(live_server: LiveServer, live_world: World) -> None:
    """Permission is asked again while a stream is open: a revoked token, or a public feed made
    private again, ends the stream (the client's reconnect then gets 401/403/404)."""
    url = f"{live_server.url}/api/v1/feeds/feed_t/stream"
    state = live_server.app.state.viewer
    with stream(url, bearer(live_world.ep_token)) as client:
        kind, _ = client.items.get(timeout=5)
        assert kind == "comment"  # open: a heartbeat came
        Token.update(revoked=True).execute()
        state.credentials.clear()  # what a revocation through this viewer does; otherwise the TTL
        wait_for(lambda: END in list(client.items.queue), timeout=10, what="the stream to end")
    assert httpx.get(url, headers=bearer(live_world.ep_token)).status_code == 401

    Feed.update(public=True).where(Feed.id == live_world.feed_t.id).execute()
    with stream(url) as client:  # anonymous reader of a public feed
        kind, _ = client.items.get(timeout=5)
        Feed.update(public=False).where(Feed.id == live_world.feed_t.id).execute()
        state.forget_decisions()
        wait_for(lambda: END in list(client.items.queue), timeout=10, what="the stream to end")

from __future__ import annotations

import asyncio
import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from rtdp.casts import XCast, YCast
from rtdp.codec import Casts, Sample
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


def announce(mosquitto: Mosquitto, feed: str, points: list[StoredPoint], axis: str, after: int | None = None) -> None:
    """Publish on rtdp/stored/<feed> as the bridge does after a commit (`after`: the head it follows)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-bridge", protocol=mqtt.MQTTv311)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    items: list[dict[str, Any]] = [{"id": p.id, "axis": axis, "x": p.x, "y": p.y} for p in points]
    if after is not None:
        items[0]["after"] = after
    payload = json.dumps(items)
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
    # Several bridges may announce out of commit order: each notice says which head it follows, and the
    # viewer passes them on in commit order (viewer/order.py), so Last-Event-ID never skips a point.
    with stream(url, {**EP, "Last-Event-ID": str(later[0].id)}) as client:
        wait_for(lambda: live_server.app.state.viewer.hub.client_count == 1)
        one = write_points([(axis.id, Sample(3000.0, 1.0))])
        two = write_points([(axis.id, Sample(3001.0, 2.0))])
        low, high = one[0], two[0]
        assert one.follows == {axis.id: later[0].id} and two.follows == {axis.id: low.id}
        announce(mosquitto, "feed_t", [high], "temp", after=low.id)
        announce(mosquitto, "feed_t", [low], "temp", after=later[0].id)
        assert client.ids(2) == [low.id, high.id]
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


def soon() -> float:
    """A wait's deadline on the running loop's clock."""
    return asyncio.get_running_loop().time() + 5


def test_hub_drops_only_the_slow_subscriber() -> None:
    async def scenario() -> None:
        hub = Hub(queue_size=3)
        slow, fast = hub.subscribe("f"), hub.subscribe("f")
        other = hub.subscribe("g")
        for i in range(5):
            hub.dispatch("f", [StoredEvent(i, "a", float(i), 0.0)])
            await fast.wait(soon())
            assert [point_id for point_id, _ in fast.take()] == [i]
        await slow.wait(soon())
        assert slow.ended and slow.dropped and slow.take() == []
        assert hub.client_count == 2
        assert other.take() == []
        hub.close()
        await fast.wait(soon())
        assert fast.ended and not fast.dropped

    asyncio.run(scenario())


def test_hub_counts_only_the_clients_it_cut() -> None:
    """rtdp_sse_dropped_clients counts streams cut for falling behind, not those that had ended on their
    own (a client gone, rights revoked) and met a delivery before they unsubscribed."""
    drops: list[int] = []
    hub = Hub(queue_size=1, on_drop=lambda: drops.append(1))
    gone, slow = hub.subscribe("f"), hub.subscribe("f")
    gone.stop()  # its stream ended; it unsubscribes once its task runs again
    hub.dispatch("f", [StoredEvent(1, "a", 1.0, 0.0), StoredEvent(2, "a", 2.0, 0.0)])  # more than `slow` holds
    assert slow.ended and slow.dropped and not gone.dropped
    assert len(drops) == 1 and hub.client_count == 0


def test_hub_cuts_a_live_client_whose_points_waited_too_long() -> None:
    """Beyond the process's capacity every stream falls behind a little; one whose queued points waited
    longer than max_lag is cut (it resumes from the database), so those that stay are never far behind.
    Before its first take (the replay) only the queue's size counts."""
    now = [0.0]
    hub = Hub(queue_size=100, max_lag=1.0, clock=lambda: now[0])
    replaying, reading, behind = hub.subscribe("f"), hub.subscribe("f"), hub.subscribe("f")
    reading.take(), behind.take()  # both are live
    for second in range(5):
        now[0] = float(second)
        hub.dispatch("f", [StoredEvent(second, "a", float(second), 0.0)])
        assert [point_id for point_id, _ in reading.take()] == [second]
    assert behind.ended and behind.dropped  # its point from second 0 still waited at second 2
    assert not replaying.ended and len(replaying.frames) == 5
    assert hub.client_count == 2


def test_hub_encodes_each_event_once_for_all_subscribers() -> None:
    """The same bytes object goes to every client of a feed; a feed recreated with other casts while old
    streams are open gets one encoding per casts."""
    hub = Hub(queue_size=10)
    first, second = hub.subscribe("f"), hub.subscribe("f")
    counted = hub.subscribe("f", Casts(XCast.INT, YCast.INT))
    hub.dispatch("f", [StoredEvent(7, "a", 1000.0, 2.0)])
    [(_, one)], [(_, two)], [(_, three)] = first.take(), second.take(), counted.take()
    assert one is two
    assert one == b'id: 7\r\nevent: point\r\ndata: {"id": 7, "axis": "a", "x": 1000.0, "y": 2.0}\r\n\r\n'
    assert three == b'id: 7\r\nevent: point\r\ndata: {"id": 7, "axis": "a", "x": 1000, "y": 2}\r\n\r\n'


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


def _dechunk(raw: bytes) -> bytes:
    """The body of a chunked HTTP/1.1 response (headers already removed)."""
    body, rest = bytearray(), raw
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body += rest[:size]
        rest = rest[size + 2 :]
    return bytes(body)


def _frame_ids(body: bytes) -> list[int]:
    # Only whole frames (ending in a blank line) count, as EventSource dispatches nothing else.
    return [int(frame.split(b"\r\n")[0][4:]) for frame in body.split(b"\r\n\r\n")[:-1] if frame.startswith(b"id: ")]


@pytest.mark.faults
def test_stalled_reader_is_cut_while_a_fast_one_keeps_up_and_resumes_without_gap(
    mosquitto: Mosquitto, live_world: World, live_server: LiveServer
) -> None:
    """A client that stops reading fills its socket, then its queue, and is cut alone; the reading one gets
    every event. Once the stalled one reads again its stream ends after what it had, and resuming from the
    last id it saw replays the rest: every point once."""
    hub = live_server.app.state.viewer.hub
    hub.queue_size = 1200
    axis = get_axis(live_world.feed_t, "temp")
    points = write_points([(axis.id, Sample(5000.0 + i, float(i))) for i in range(60_000)])
    url = f"{live_server.url}/api/v1/feeds/feed_t/stream"
    host, port = live_server.url.removeprefix("http://").split(":")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills sooner
    stalled.connect((host, int(port)))
    request = f"GET /api/v1/feeds/feed_t/stream HTTP/1.1\r\nHost: x\r\nAuthorization: {EP['Authorization']}\r\n"
    stalled.sendall(f"{request}Connection: close\r\n\r\n".encode())
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-bridge", protocol=mqtt.MQTTv311)
    publisher.connect(mosquitto.host, mosquitto.port)
    publisher.loop_start()
    try:
        with stream(url, EP) as fast:
            wait_for(lambda: hub.client_count == 2, what="both streams to subscribe")
            received: list[int] = []
            sent = 0
            # One notice at a time, the next once the fast client has the last: it never lags, the stalled one does.
            while hub.client_count == 2 and sent < len(points):
                batch = points[sent : sent + 500]
                payload = json.dumps([{"id": p.id, "axis": "temp", "x": p.x, "y": p.y} for p in batch])
                publisher.publish("rtdp/stored/feed_t", payload, qos=1).wait_for_publish(5)
                received += fast.ids(len(batch))
                sent += len(batch)
            assert hub.client_count == 1, "the stalled client was never cut"
            assert "rtdp_sse_dropped_clients_total 1.0" in httpx.get(f"{live_server.url}/metrics").text
            # The fast client goes on receiving after the cut.
            after = points[sent : sent + 500]
            payload = json.dumps([{"id": p.id, "axis": "temp", "x": p.x, "y": p.y} for p in after])
            publisher.publish("rtdp/stored/feed_t", payload, qos=1).wait_for_publish(5)
            received += fast.ids(len(after))
            assert received == [p.id for p in points[: sent + len(after)]]
    finally:
        publisher.disconnect()
        publisher.loop_stop()
    # The stalled client reads again: what was written before the cut, then the end of the stream.
    stalled.settimeout(10)
    raw = bytearray()
    while chunk := stalled.recv(65536):
        raw += chunk
    stalled.close()
    head, _, body = bytes(raw).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    seen = _frame_ids(_dechunk(body))
    assert seen and seen == [p.id for p in points[: len(seen)]]
    with stream(url, {**EP, "Last-Event-ID": str(seen[-1])}) as resumed:
        rest = resumed.ids(len(points) - len(seen))
    assert seen + rest == [p.id for p in points]


def test_one_stream_of_several_feeds(live_server: LiveServer, live_world: World, mosquitto: Mosquitto) -> None:
    """`/api/v1/stream?feed=A&feed=B` (a dashboard's): both feeds' points on one connection, each naming its
    feed, replayed in id order across them from Last-Event-ID, then live."""
    temp, counter = get_axis(live_world.feed_t, "temp"), get_axis(live_world.feed_a, "axis_a00")
    before = write_points([(temp.id, Sample(1000.0, 1.0))])
    replayed = write_points([(counter.id, Sample(5, 7.0)), (temp.id, Sample(1001.0, 2.5))])
    url = f"{live_server.url}/api/v1/stream?feed=feed_t&feed=feed_a&feed=feed_t"
    with stream(url, {**EP, "Last-Event-ID": str(before[0].id)}) as client:
        events = [client.next_event(), client.next_event()]
        assert sorted((e["data"]["feed"], e["data"]["axis"], e["data"]["y"]) for e in events) == [  # type: ignore[index]
            ("feed_a", "axis_a00", 7), ("feed_t", "temp", 2.5)
        ]
        assert {e["id"] for e in events} == {p.id for p in replayed}  # type: ignore[index]
        assert live_server.app.state.viewer.hub.client_count == 1
        later = write_points([(counter.id, Sample(6, 8.0))])
        announce(mosquitto, "feed_a", [*replayed[:1], *later], "axis_a00")
        assert client.next_event() == {
            "id": later[0].id, "event": "point",
            "data": {"feed": "feed_a", "id": later[0].id, "axis": "axis_a00", "x": 6, "y": 8},
        }
    wait_for(lambda: live_server.app.state.viewer.hub.client_count == 0, what="the stream to unsubscribe")
    assert not live_server.app.state.viewer.hub.watched("feed_a")
    # The rule of one feed, for each: ap may read none of ep's private feeds.
    assert httpx.get(url, headers=basic("ap@nothing.com", "1234")).status_code == 403
    assert httpx.get(f"{live_server.url}/api/v1/stream?" + "&".join(f"feed=f{i}" for i in range(65)),
                     headers=EP).status_code == 400


def test_hub_stream_of_several_feeds_is_one_client() -> None:
    hub = Hub(queue_size=10)
    plain, many = hub.subscribe("f"), hub.subscribe_many({"f": Casts(), "g": Casts(XCast.INT, YCast.INT)})
    assert hub.client_count == 2
    hub.dispatch("g", [StoredEvent(8, "a", 3.0, 4.0)])
    hub.dispatch("f", [StoredEvent(9, "b", 1.5, 2.0)])
    assert plain.take() == [(9, b'id: 9\r\nevent: point\r\ndata: {"id": 9, "axis": "b", "x": 1.5, "y": 2.0}\r\n\r\n')]
    assert [frame for _, frame in many.take()] == [
        b'id: 8\r\nevent: point\r\ndata: {"feed": "g", "id": 8, "axis": "a", "x": 3, "y": 4}\r\n\r\n',
        b'id: 9\r\nevent: point\r\ndata: {"feed": "f", "id": 9, "axis": "b", "x": 1.5, "y": 2.0}\r\n\r\n',
    ]
    many.close()
    assert hub.client_count == 1 and hub.watched("f") and not hub.watched("g")


class FakeWire:
    """A stream's socket for the hub's direct writes: what was written, and whether it takes more now."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.full = False

    def ready(self) -> bool:
        return not self.full

    def write(self, body: bytes, chunk: bytes | None = None) -> None:
        self.writes.append(chunk if chunk is not None else b"%x\r\n%s\r\n" % (len(body), body))


def _chunk(*frames: bytes) -> bytes:
    body = b"".join(frames)
    return b"%x\r\n%s\r\n" % (len(body), body)


def _frame(point_id: int) -> bytes:
    return b'id: %d\r\nevent: point\r\ndata: {"id": %d, "axis": "a", "x": %d.0, "y": 0.0}\r\n\r\n' % (
        point_id, point_id, point_id)


def test_hub_writes_an_event_once_to_the_sockets_of_idle_live_streams() -> None:
    """A live stream whose task waits is written to by the hub itself, the same bytes for every such stream,
    without waking its task; frames its replay sent already (ids up to its floor) are left out."""

    async def scenario() -> None:
        hub = Hub(queue_size=3)
        subs, wires = [hub.subscribe("f") for _ in range(3)], [FakeWire() for _ in range(3)]
        for sub, wire, floor in zip(subs, wires, (-1, -1, 1), strict=True):
            sub.go_live(wire, floor)
        waits = [asyncio.ensure_future(sub.wait(soon())) for sub in subs]
        await asyncio.sleep(0)  # each task now waits
        for i in range(5):  # more than a queue holds: nothing queues
            hub.dispatch("f", [StoredEvent(i, "a", float(i), 0.0)])
        hub.dispatch("f", [StoredEvent(1, "a", 1.0, 0.0), StoredEvent(9, "a", 9.0, 0.0)])  # out of id order
        expected = [*(_chunk(_frame(i)) for i in range(5)), _chunk(_frame(1), _frame(9))]
        assert wires[0].writes == wires[1].writes == expected
        assert all(one is two for one, two in zip(wires[0].writes, wires[1].writes, strict=True))
        assert wires[2].writes == [*(_chunk(_frame(i)) for i in range(2, 5)), _chunk(_frame(9))]
        assert not any(wait.done() for wait in waits) and all(sub.frames == [] for sub in subs)
        hub.close()
        await asyncio.gather(*waits)

    asyncio.run(scenario())


def test_hub_queues_for_a_full_socket_and_cuts_the_stream_past_its_bound() -> None:
    """A stream whose socket is full, or whose task is busy (replaying, or before it is live), gets frames
    queued and its task woken; past the queue's size it is cut, and the other streams go on. One delivery
    larger than the queue cuts even a stream that keeps up (as when every event was queued)."""

    async def scenario() -> None:
        hub = Hub(queue_size=3)
        full, reading = hub.subscribe("f"), hub.subscribe("f")
        full_wire, reading_wire = FakeWire(), FakeWire()
        full.go_live(full_wire, -1)
        reading.go_live(reading_wire, -1)
        full_wire.full = True
        waits = [asyncio.ensure_future(sub.wait(soon())) for sub in (full, reading)]
        await asyncio.sleep(0)
        hub.dispatch("f", [StoredEvent(1, "a", 1.0, 0.0)])
        assert [point_id for point_id, _ in full.frames] == [1] and full_wire.writes == []
        await waits[0]  # woken: it writes through the ASGI send once the socket drains
        for i in range(2, 5):
            hub.dispatch("f", [StoredEvent(i, "a", float(i), 0.0)])
        assert full.ended and full.dropped and hub.client_count == 1
        assert reading_wire.writes == [_chunk(_frame(i)) for i in range(1, 5)] and not waits[1].done()
        # More points in one delivery than the queue holds: that far behind, even with room in the socket.
        hub.dispatch("f", [StoredEvent(i, "a", float(i), 0.0) for i in range(5, 9)])
        assert reading.ended and reading.dropped and hub.client_count == 0
        assert len(reading_wire.writes) == 4
        await waits[1]

    asyncio.run(scenario())


def test_hub_delivers_notices_taken_together_in_one_write() -> None:
    """Notices that came while the loop was busy (`held`) go to each stream in one write, in order, a feed's
    points that follow each other as one chunk; an alert between them keeps its place."""

    async def scenario() -> None:
        hub = Hub(queue_size=10)
        sub, wire = hub.subscribe("f"), FakeWire()
        sub.go_live(wire, -1)
        wait = asyncio.ensure_future(sub.wait(soon()))
        await asyncio.sleep(0)
        with hub.held():
            hub.dispatch("g", [StoredEvent(0, "a", 0.0, 0.0)])  # nobody's
            hub.dispatch("f", [StoredEvent(1, "a", 1.0, 0.0)])
            hub.dispatch("f", [StoredEvent(3, "a", 3.0, 0.0), StoredEvent(4, "a", 4.0, 0.0)])
            hub.dispatch("g", [StoredEvent(2, "a", 2.0, 0.0)])  # between two of f: their order is kept
            hub.alert("f", b'{"rule": 1}')
            hub.dispatch("f", [StoredEvent(5, "a", 5.0, 0.0)])
            assert wire.writes == []
        alert = b'event: alert\r\ndata: {"rule": 1}\r\n\r\n'
        assert wire.writes == [_chunk(_frame(1), _frame(3), _frame(4)), _chunk(alert), _chunk(_frame(5))]
        many, many_wire = hub.subscribe_many({"f": Casts(), "g": Casts()}), FakeWire()
        many.go_live(many_wire, -1)
        waits = [asyncio.ensure_future(many.wait(soon()))]
        await asyncio.sleep(0)
        with hub.held():
            hub.dispatch("f", [StoredEvent(6, "a", 6.0, 0.0)])
            hub.dispatch("g", [StoredEvent(7, "a", 7.0, 0.0)])
            hub.dispatch("f", [StoredEvent(8, "a", 8.0, 0.0)])
        assert [int(write.split(b"id: ")[1].split(b"\r")[0]) for write in many_wire.writes] == [6, 7, 8]
        hub.close()
        await asyncio.gather(wait, *waits)

    asyncio.run(scenario())

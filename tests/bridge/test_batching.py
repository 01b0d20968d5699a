"""The Inbox between the network thread and the writer: bounded, in order, many messages per call."""

from __future__ import annotations

import threading

from bridge.batching import Inbox
from bridge.writer import Incoming
from tests.support.env import wait_for


def item(n: int, payload: bytes = b"1") -> Incoming:
    return Incoming("feeds/f/a", payload, n, 1, False, 0.0)


def test_put_many_waits_for_room_and_keeps_the_order() -> None:
    inbox = Inbox(maxsize=3)
    stop = threading.Event()
    done = threading.Event()
    items = [item(n) for n in range(7)]

    def put() -> None:
        assert inbox.put_many(items, stop, poll=0.05)
        done.set()

    thread = threading.Thread(target=put)
    thread.start()
    wait_for(lambda: inbox.qsize() == 3, what="the inbox full")
    assert not done.is_set()  # bounded: the other four wait
    taken = []
    while len(taken) < 7:
        taken += inbox.get_many(100, timeout=5)[0]
        assert inbox.qsize() <= 3
    thread.join(5)
    assert done.is_set() and taken == items


def test_put_many_gives_up_when_stopped_while_full() -> None:
    inbox = Inbox(maxsize=2)
    stop = threading.Event()
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(inbox.put_many([item(n) for n in range(5)], stop, 0.05)))
    thread.start()
    wait_for(lambda: inbox.qsize() == 2, what="the inbox full")
    stop.set()
    thread.join(5)
    assert result == [False] and [i.mid for i in inbox.get_many(100, 0)[0]] == [0, 1]


def test_get_many_takes_about_the_points_asked_for() -> None:
    inbox = Inbox()
    stop = threading.Event()
    arrays = [item(n, b"[" + b",".join([b'{"y":1}'] * 40) + b"]") for n in range(5)]  # 40 points each
    inbox.put_many(arrays, stop)
    taken, points = inbox.get_many(100, 0)
    assert [i.mid for i in taken] == [0, 1, 2] and points == 120  # up to the message that reaches 100
    assert [i.mid for i in inbox.get_many(1, 0)[0]] == [3]  # at least one message, however large
    assert [i.mid for i in inbox.get_many(1000, 0)[0]] == [4]
    assert inbox.get_many(1000, 0) == ([], 0) and inbox.get_many(1000, 0.01) == ([], 0)

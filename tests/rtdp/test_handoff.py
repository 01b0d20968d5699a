from __future__ import annotations

import asyncio
import threading

from rtdp.handoff import NoticeTap


def test_notice_tap_hands_notices_posted_meanwhile_over_together() -> None:
    """Notices the writer posts while the loop has not yet taken the previous ones reach the handler in one
    call, in order (the hub then writes them to each client at once); other topics are not passed on."""

    async def scenario() -> list[list[tuple[str, bytes]]]:
        calls: list[list[tuple[str, bytes]]] = []
        tap = NoticeTap()
        tap.post("rtdp/stored/f", b"[]")  # before attach: dropped
        tap.attach(calls.append)

        def writer() -> None:
            for index in range(3):
                tap.post("rtdp/stored/f", b"[%d]" % index)
            tap.post("rtdp/errors/f/a", b"{}")
            tap.post("rtdp/alerts/f", b"{}")

        # The loop is busy (this coroutine does not yield) while the thread posts.
        thread = threading.Thread(target=writer)
        thread.start()
        thread.join()
        await asyncio.sleep(0)  # the callbacks posted so far run first
        tap.post("rtdp/stored/f", b"[3]")
        await asyncio.sleep(0)  # the callbacks posted so far run first
        tap.detach()
        tap.post("rtdp/stored/f", b"[4]")
        await asyncio.sleep(0)  # the callbacks posted so far run first
        return calls

    calls = asyncio.run(scenario())
    assert calls == [
        [("rtdp/stored/f", b"[0]"), ("rtdp/stored/f", b"[1]"), ("rtdp/stored/f", b"[2]"), ("rtdp/alerts/f", b"{}")],
        [("rtdp/stored/f", b"[3]")],
    ]

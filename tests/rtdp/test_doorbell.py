"""rtdp.doorbell: callbacks rung from another thread run on the loop, in order, none lost."""

from __future__ import annotations

import asyncio
import threading

from rtdp.doorbell import Doorbell


def test_every_ring_from_a_thread_is_answered_in_order() -> None:
    """A thread rings in bursts while the loop answers: each burst's last callback must come, however the
    rings and the loop's reads interleave (a ring's byte read while its flag stayed set lost every later one)."""

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        bell = Doorbell(loop)
        seen: list[int] = []
        lost: list[int] = []

        def ring_all() -> None:
            answered = threading.Event()
            for burst in range(3000):
                answered.clear()
                for n in range(3):
                    bell.ring(seen.append, 3 * burst + n)
                bell.ring(answered.set)
                if not answered.wait(10):
                    lost.append(burst)
                    return

        await asyncio.to_thread(ring_all)
        bell.close()
        assert not lost, f"burst {lost[0]} never answered"
        return seen

    assert asyncio.run(main()) == list(range(9000))


def test_close_runs_what_was_rung_and_later_rings_do_nothing() -> None:
    async def main() -> list[str]:
        bell = Doorbell(asyncio.get_running_loop())
        calls: list[str] = []
        bell.ring(calls.append, "before")
        bell.close()
        bell.ring(calls.append, "after")
        await asyncio.sleep(0)
        return calls

    assert asyncio.run(main()) == ["before"]

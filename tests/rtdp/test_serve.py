from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

from rtdp.serve import stop_on_failure


def test_a_failed_writer_stops_the_server() -> None:
    failed = threading.Event()
    server = SimpleNamespace(should_exit=False)

    async def main() -> None:
        watcher = asyncio.create_task(stop_on_failure(failed, server))
        await asyncio.sleep(0)
        assert not watcher.done() and server.should_exit is False
        threading.Thread(target=failed.set).start()
        await asyncio.wait_for(watcher, 30)

    asyncio.run(main())
    assert server.should_exit is True

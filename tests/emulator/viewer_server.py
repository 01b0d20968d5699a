"""The real viewer (viewer.app) served by uvicorn on a free port in a thread, for end-to-end HTTP tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rtdp.settings import HostPort, Settings
from tests.support.env import free_port, wait_for


@contextmanager
def running_viewer(settings: Settings) -> Iterator[str]:
    """Yield the viewer's base URL once it answers /readyz (broker connected)."""
    import urllib.error
    import urllib.request

    from viewer.app import build_server, create_app

    settings = settings.replace(http=HostPort("127.0.0.1", free_port()))
    app = create_app(settings)
    server = build_server(settings, app, log_config=None)
    thread = threading.Thread(target=server.run, name="test-viewer", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.http.port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    try:
        wait_for(ready, timeout=20, what="the viewer's /readyz")
        yield url
    finally:
        server.should_exit = True
        thread.join(15)

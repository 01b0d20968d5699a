"""Which asyncio event loop runs `rtdp serve`, `rtdp broker` and `rtdp viewer`.

uvloop by default where it is installed (not on Windows): bench/pipeline.py's "layouts" section measures
it against the standard loop. `--loop asyncio` (RTDP_LOOP) is the way back if uvloop misbehaves somewhere.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, TypeVar

from rtdp.errors import ConfigError

T = TypeVar("T")


def resolve(choice: str) -> str:
    """`auto` becomes uvloop when it can be imported, else asyncio; `uvloop` without uvloop is an error."""
    have_uvloop = importlib.util.find_spec("uvloop") is not None
    if choice == "auto":
        return "uvloop" if have_uvloop else "asyncio"
    if choice == "uvloop" and not have_uvloop:
        raise ConfigError("--loop uvloop: uvloop is not installed (pip install uvloop, or use --loop asyncio)")
    return choice


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """Run `main` to completion on the chosen loop (a new one)."""
    if resolve(choice) == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def new_loop(choice: str) -> asyncio.AbstractEventLoop:
    """A new loop of the chosen kind, not running (for a thread of its own: rtdp.mqtt.loopthread)."""
    if resolve(choice) == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()

"""`rtdp viewer --workers N`: N viewer processes on one port, and the process that keeps them running.

Each worker is a whole viewer (its own event loop, MQTT client, SSE hub, database connections and
/metrics) listening on the same address with SO_REUSEPORT: the kernel spreads new connections over the
workers by a hash of their addresses. A shared accept queue would not: uvloop accepts until the queue is
empty, so one worker takes a whole burst of browsers. This process binds the address first without
listening, so that port 0 picks one port for all and the port stays taken while a worker restarts; it
accepts nothing itself. A worker that exits is forked again after RESTART_DELAY; the streams it had end
and the browsers resume on the others by Last-Event-ID. QUICK_FAILURES exits in a row, each within
STARTUP seconds of its start, end the lot: a worker that cannot start will not start on the next try.
SIGTERM or SIGINT goes to every worker as SIGTERM (each closes its streams), then this process exits.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

from rtdp.errors import RtdpError
from rtdp.logs import configure_logging
from rtdp.settings import HostPort, Settings

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0
STARTUP = 10.0
QUICK_FAILURES = 5
PR_SET_PDEATHSIG = 1  # prctl(2)


class Workers:
    """Forks `serve(settings)` `settings.workers` times on one SO_REUSEPORT address and keeps them running."""

    def __init__(self, settings: Settings, serve: Callable[[Settings], None]) -> None:
        from viewer.app import bind_socket

        self.serve = serve
        # Bound, never listening: holds the port (and resolves port 0) without taking connections.
        self.reserve = bind_socket(settings.http, reuse_port=True)
        address = HostPort(settings.http.host, self.reserve.getsockname()[1])
        self.settings = dataclasses.replace(settings, http=address)
        self.children: dict[int, tuple[int, float]] = {}  # pid -> (slot, started)
        self.stopping = False
        self.failed = False

    def run(self) -> None:
        """Blocks until stopped by a signal; raises RtdpError when the workers keep failing to start."""
        configure_logging(self.settings.log_level)
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for slot in range(self.settings.workers):
                self._start(slot)
            log.info("viewer on http://%s: %d workers (%s)", self.settings.http, self.settings.workers,
                     ", ".join(str(pid) for pid in self.children))
            self._watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.reserve.close()
        if self.failed:
            raise RtdpError(f"viewer workers exited {QUICK_FAILURES} times in a row within {STARTUP:.0f} s of "
                            "starting; see the log above")

    def _watch(self) -> None:
        quick = 0
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                return
            slot, started = self.children.pop(pid)
            if self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            quick = quick + 1 if time.monotonic() - started < STARTUP else 0
            log.warning("viewer worker %d (pid %d) exited with %s; %s", slot, pid,
                        f"signal {-code}" if code < 0 else f"status {code}",
                        "giving up" if quick >= QUICK_FAILURES else "starting it again")
            if quick >= QUICK_FAILURES:
                self.failed = True
                self._stop(signal.SIGTERM, None)
                continue
            time.sleep(RESTART_DELAY)  # a signal meanwhile sets `stopping`
            if not self.stopping:
                self._start(slot)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        # SIGTERM to each even after a SIGINT: Ctrl-C already reached them, and a second SIGINT makes
        # uvicorn drop its connections at once, where another SIGTERM changes nothing.
        self.stopping = True
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _start(self, slot: int) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid:
            self.children[pid] = (slot, time.monotonic())
            if self.stopping:  # the signal came between the fork and the line above
                os.kill(pid, signal.SIGTERM)
            return
        os._exit(self._child(parent))

    def _child(self, parent: int) -> int:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # A worker outlives nothing: if this process is killed, the kernel sends it SIGTERM.
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:
            return 0
        self.reserve.close()
        try:
            self.serve(self.settings)
        except KeyboardInterrupt:
            pass
        except SystemExit as exc:  # uvicorn's own exit, e.g. 3 when the app's startup failed (logged already)
            return exc.code if isinstance(exc.code, int) else 1
        except RtdpError as exc:
            print(f"error: {exc.message}", file=sys.stderr, flush=True)
            return 2 if exc.status == 400 else 1
        except BaseException:
            log.exception("viewer worker failed")
            return 1
        finally:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        return 0

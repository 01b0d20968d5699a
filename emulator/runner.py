"""Running sources: one thread steps every enabled source on its interval and publishes its readings.

`Emulator` runs beside the rest of `rtdp serve --emulate`; `run()` blocks for `rtdp emulate`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Literal

import peewee as pw

from emulator import system  # noqa: F401 -- defining SystemSource registers it (emulator.sources.Source)
from emulator.errors import EmulatorError, PublishFailed
from emulator.publish import HttpPublisher, MqttPublisher, Publisher
from emulator.sources import SOURCES, Source
from rtdp import catalog
from rtdp import emulation as state
from rtdp.accounts import create_token, get_user, principal_for
from rtdp.casts import XCast
from rtdp.database import open_database
from rtdp.errors import NotFound, PermissionDenied, RtdpError
from rtdp.models import Axis, Token, User
from rtdp.mqtt import Endpoint
from rtdp.permissions import Access, Principal
from rtdp.settings import Settings

log = logging.getLogger(__name__)

Via = Literal["mqtt", "http"]
POLL_INTERVAL = 1.0  # how often the runner re-reads the on/off switches
LOG_EVERY = 30.0  # seconds between repeated warnings about the same trouble


def available_sources() -> list[str]:
    """Source names this machine can run (the system source needs Linux's /proc)."""
    return [name for name in state.SOURCES if state.available(name)]


def resolve_sources(sources: Sequence[str | Source]) -> list[Source]:
    """Names become default-configured sources; instances pass through. No sources means all available."""
    chosen = list(sources) or list(available_sources())
    resolved: list[Source] = []
    for item in chosen:
        source = SOURCES[state.check_source(item)]() if isinstance(item, str) else item
        if any(other.name == source.name for other in resolved):
            raise EmulatorError(f"emulator source {source.name!r} given twice", source=source.name)
        resolved.append(source)
    return resolved


def http_base_url(settings: Settings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = "127.0.0.1" if settings.http.host in ("0.0.0.0", "::", "") else settings.http.host
    return f"http://[{host}]:{settings.http.port}" if ":" in host else f"http://{host}:{settings.http.port}"


class _Throttle:
    """Log the same kind of trouble at most once per LOG_EVERY seconds, with a count of what was skipped."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.skipped: dict[str, int] = {}

    def warn(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last.get(key, -LOG_EVERY) < LOG_EVERY:
            self.skipped[key] = self.skipped.get(key, 0) + 1
            return
        skipped = self.skipped.pop(key, 0)
        self.last[key] = now
        log.warning(message + (f" ({skipped} similar since)" if skipped else ""), *args)


class Emulator:
    """Simulated devices publishing over MQTT (default) or HTTP, authenticated with a token. `db` is the
    process's opened database (rtdp.database.open_database).

    `start()` prepares feeds, axes, saved positions and (unless `token` is given) a write token for
    `owner_email` in the emulator's thread, waits for that, and raises EmulatorError if it failed. It and
    `stop()` block briefly: from async code call them through `asyncio.to_thread`. A token the emulator
    created is revoked on `stop()`; nothing secret is stored in EmulatorState.
    """

    def __init__(
        self,
        settings: Settings,
        db: pw.Database,
        *,
        owner_email: str,
        sources: Sequence[str | Source] = (),
        via: Via = "mqtt",
        token: str | None = None,
        http_url: str | None = None,
        poll_interval: float = POLL_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if via not in ("mqtt", "http"):
            raise EmulatorError(f"via must be 'mqtt' or 'http', got {via!r}")
        self.settings = settings
        self.db = db
        self.owner_email = owner_email
        self.sources = resolve_sources(sources)
        self.via: Via = via
        self.token = token
        self.http_url = http_url or http_base_url(settings)
        self.poll_interval = poll_interval
        self.clock = clock
        self.published: dict[str, int] = {source.name: 0 for source in self.sources}
        self.failed: dict[str, int] = {source.name: 0 for source in self.sources}
        self.steps: dict[str, int] = {source.name: 0 for source in self.sources}
        self._created_token_id: int | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._throttle = _Throttle()

    # -- public API ---------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        if self._thread is not None:
            raise EmulatorError("emulator already started")
        self._thread = threading.Thread(target=self._main, name="rtdp-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise EmulatorError(f"emulator did not get ready within {timeout}s")
        if self._error is not None:
            self._thread.join()
            error = self._error
            raise error if isinstance(error, EmulatorError) else EmulatorError(f"emulator failed to start: {error}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop stepping, disconnect, revoke a token the emulator created. Safe to call twice."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def set_enabled(self, source: str, on: bool) -> None:
        """Switch a source on or off in the database (the running thread picks it up within a poll)."""
        state.set_enabled(source, on)

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the thread ---------------------------------------------------------------------------------

    def _main(self) -> None:
        publisher: Publisher | None = None
        try:
            try:
                owner = self._prepare()
                publisher = self._publisher(owner)
                publisher.open()
            except BaseException as exc:  # handed to start(), which raises it in the caller's thread
                self._error = exc
                return
            finally:
                self._ready.set()
            log.info(
                "emulator: %s publishing over %s as %s",
                ", ".join(source.name for source in self.sources), self.via, self.owner_email,
            )
            self._loop(publisher)
        except Exception:
            # Not expected (step, publish and database errors are handled per step); make it visible.
            log.exception("emulator: stopped by an unexpected error")
        finally:
            if publisher is not None:
                publisher.close()
            self._revoke_token()
            if not self.db.is_closed():
                self.db.close()  # this thread's connection only (Peewee keeps one per thread)

    def _prepare(self) -> User:
        try:
            owner = get_user(self.owner_email)
        except NotFound:
            raise EmulatorError(
                f"emulator owner {self.owner_email!r} does not exist (create it with: rtdp user add EMAIL)",
                owner=self.owner_email,
            ) from None
        principal = principal_for(owner)
        for source in self.sources:
            self._prepare_feed(source, principal)
            source.restore(state.load(source.name).state)
        if self.token is None:
            issued = create_token(owner, access=Access.WRITE, name="emulator (revoked when it stops)")
            self.token = issued.token
            self._created_token_id = issued.row.id
        return owner

    def _prepare_feed(self, source: Source, principal: Principal) -> None:
        """The source's feed and axes, created for the owner as an operator's tool does (no quota)."""
        spec = catalog.FeedSpec(XCast.DATETIME, source.y_cast, description=f"emulated by rtdp ({source.name} source)")
        try:
            places = catalog.resolve_axes(
                principal, source.feed, list(source.axes), catalog.OPERATOR, create=True, spec=spec
            )
        except PermissionDenied:
            log.warning(
                "emulator: %s may not write to feed %r; its points will be refused", principal.email, source.feed
            )
            return
        for place in places:
            unit = source.units.get(place.axis)
            if unit and place.axis_id is not None:  # an axis without a unit (new, or from before units)
                Axis.update(unit=unit).where((Axis.id == place.axis_id) & Axis.unit.is_null()).execute()
        casts = places[0].casts
        if casts != spec.casts:
            log.warning(
                "emulator: feed %r has casts x=%s y=%s, the %s source sends x=datetime y=%s",
                source.feed, casts.x.value, casts.y.value, source.name, source.y_cast.value,
            )

    def _publisher(self, owner: User) -> Publisher:
        assert self.token is not None
        if self.via == "http":
            return HttpPublisher(self.http_url, self.token)
        target = self.settings.broker or self.settings.mqtt
        return MqttPublisher(
            Endpoint.of(target, owner.email, self.token),
            f"rtdp-emulator-{secrets.token_hex(6)}",
            loop=self.settings.loop,
        )

    def _loop(self, publisher: Publisher) -> None:
        names = [source.name for source in self.sources]
        enabled: set[str] = set()
        next_due = {name: 0.0 for name in names}
        next_poll = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_poll:
                switched = self._poll_enabled(names, enabled)
                for name in switched - enabled:
                    log.info("emulator: %s on", name)
                    next_due[name] = now  # a source switched on steps at once
                for name in enabled - switched:
                    log.info("emulator: %s off", name)
                enabled = switched
                next_poll = now + self.poll_interval
            for source in self.sources:
                if source.name in enabled and now >= next_due[source.name]:
                    self._step(source, publisher)
                    # Keep a steady rate, but after a stall start afresh rather than catch up in a burst.
                    next_due[source.name] = max(next_due[source.name] + source.interval, now)
            wake = min([next_poll] + [next_due[name] for name in enabled])
            self._stop.wait(max(0.0, wake - time.monotonic()))

    def _poll_enabled(self, names: list[str], previous: set[str]) -> set[str]:
        try:
            return state.enabled_sources(names)
        except pw.PeeweeException as exc:
            self._throttle.warn("db", "emulator: cannot read the on/off switches, keeping them: %s", exc)
            return previous

    def _step(self, source: Source, publisher: Publisher) -> None:
        try:
            readings = source.step(self.clock())
        except (OSError, ValueError, RtdpError) as exc:
            self._throttle.warn(f"step:{source.name}", "emulator: %s failed to step: %s", source.name, exc)
            return
        self.steps[source.name] += 1
        # A step is published and saved whole, even while stopping: the saved position then matches
        # what was sent, so a restart neither repeats nor skips a point.
        for reading in readings:
            try:
                publisher.publish(source.feed, reading.axis, reading.x, reading.y)
            except PublishFailed as exc:
                self.failed[source.name] += 1
                self._throttle.warn(f"publish:{source.name}", "emulator: %s", exc.message)
            else:
                self.published[source.name] += 1
        try:
            state.save_position(source.name, source.state())
        except pw.PeeweeException as exc:
            self._throttle.warn("db", "emulator: cannot save the %s position: %s", source.name, exc)

    def _revoke_token(self) -> None:
        if self._created_token_id is None:
            return
        try:
            Token.update(revoked=True).where(Token.id == self._created_token_id).execute()
        except pw.PeeweeException as exc:
            log.warning("emulator: could not revoke its token %s: %s", self._created_token_id, exc)


def run(
    settings: Settings,
    sources: Sequence[str | Source] = (),
    via: Via = "mqtt",
    *,
    owner_email: str,
    token: str | None = None,
    http_url: str | None = None,
    stop_event: threading.Event | None = None,
) -> None:
    """Run the emulator until Ctrl-C or `stop_event` is set (`rtdp emulate [SOURCE...]`). Opens the database."""
    db = open_database(settings.database_url)
    emulator = Emulator(settings, db, owner_email=owner_email, sources=sources, via=via, token=token, http_url=http_url)
    emulator.start()
    stop = stop_event or threading.Event()
    try:
        # A timed wait keeps Ctrl-C responsive and notices a thread that died.
        while emulator.running and not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()




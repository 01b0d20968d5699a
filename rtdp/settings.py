"""One typed settings object per process: CLI flags, then RTDP_ environment, then defaults."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rtdp.errors import ConfigError

log = logging.getLogger(__name__)

ENV_PREFIX = "RTDP_"
# RTDP_ variables that are not settings: read by the scripts in examples/.
OTHER_VARIABLES = frozenset(
    {"RTDP_TOKEN", "RTDP_URL", "RTDP_EMAIL", "RTDP_PASSWORD", "RTDP_MQTT_HOST", "RTDP_MQTT_PORT"}
)
LOOPS = ("auto", "uvloop", "asyncio")  # rtdp.eventloop
ACCESS_LOGS = ("errors", "all", "off")  # viewer.accesslog
REGISTRATION = ("open", "closed")  # Settings.registration
SQLITE_SYNCHRONOUS = ("normal", "full")  # rtdp.database


def option_label(name: str) -> str:
    """How error messages name a setting: as its command-line option (`--max-payload`), or as its
    RTDP_ variable when it has no option."""
    spec = SPECS.get(name)
    if spec is not None and spec.flag is None:
        return env_name(name)
    return spec.flag if spec is not None and spec.flag else "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _invalid(name: str, problem: str) -> ConfigError:
    return ConfigError(f"{option_label(name)}: {problem}", setting=name)


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    @classmethod
    def parse(cls, value: str, option: str) -> HostPort:
        text = value.strip()
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, ""
        host = host.strip("[]") or "127.0.0.1"
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(f"{option}: expected HOST:PORT, got {value!r}") from None
        if not 0 <= port <= 65535:
            raise ConfigError(f"{option}: port {port} is out of range 0-65535")
        return cls(host, port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class BrokerURL:
    """`mqtt://USER:PASS@HOST:PORT` (or `mqtts://`); credentials optional."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False

    @classmethod
    def parse(cls, value: str, option: str = "--broker") -> BrokerURL:
        parts = urlsplit(value if "://" in value else f"mqtt://{value}")
        if parts.scheme not in ("mqtt", "mqtts", "tcp"):
            raise ConfigError(f"{option}: scheme must be mqtt:// or mqtts://, got {parts.scheme!r}")
        try:
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError:
            raise ConfigError(f"{option}: bad port in {cls._redact(value)!r}") from None
        if not parts.hostname:
            raise ConfigError(f"{option}: no host in {cls._redact(value)!r}")
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme == "mqtts",
        )

    def with_credentials(self, username: str, password: str) -> BrokerURL:
        return dataclasses.replace(self, username=username, password=password)

    @staticmethod
    def _redact(value: str) -> str:
        parts = urlsplit(value)
        if parts.password:
            return value.replace(parts.password, "***")
        return value

    def __str__(self) -> str:
        auth = f"{quote(self.username, safe='')}:***@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{auth}{self.host}:{self.port}"


def _bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}: expected a boolean, got {value!r}")


# The settings table. Each field of Settings below is declared with `setting(...)`: its default, its help
# text, the commands that take it, and its flag. rtdp.cli builds every command's options from it and
# docs/settings.md is generated from it (scripts/docs), so a setting is added in one place:
#     name: type = setting(default, "Help text.", serve_and("viewer"))
# plus its check in Settings.__post_init__ and, for a new kind of value, a line in _convert.
EVERY = "*"  # in `commands`: every command, the management ones too
_NAMED = ""  # setting(flag=...): the option named after the setting
LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True, slots=True)
class Spec:
    """How a setting is given and explained."""

    help: str
    # The `rtdp` commands that take it as an option (EVERY: all of them).
    commands: tuple[str, ...]
    # Its command-line option (`--name-with-dashes` unless given); None: only its RTDP_ variable sets it
    # (a secret has no place in `ps`).
    flag: str | None
    # The default as --help and the docs show it; None: str() of the default.
    shown: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] = ()

    def takes(self, command: str) -> bool:
        return EVERY in self.commands or command in self.commands


def serve_and(*commands: str) -> tuple[str, ...]:
    """`rtdp serve` runs every part, so it takes every setting of the parts it runs."""
    return ("serve", *commands)


def setting(
    default: Any,
    help: str,  # noqa: A002 -- the word click and the docs use
    commands: tuple[str, ...],
    *,
    flag: str | None = _NAMED,
    shown: str | None = None,
    metavar: str | None = None,
    choices: tuple[str, ...] = (),
    secret: bool = False,
) -> Any:
    """A Settings field with its row of the table."""
    spec = Spec(help, commands, flag, shown, metavar, choices)
    return field(default=default, repr=not secret, metadata={"spec": spec})


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to know, validated once when built."""

    data_dir: Path = setting(
        Path("rtdp-data"), "Data directory: the SQLite database, the service account, import state.", (EVERY,),
        shown="./rtdp-data",
    )
    db_url: str | None = setting(
        None, "Database URL: sqlite:///PATH or postgresql://USER@HOST/DB.", (EVERY,), flag="--db",
        shown="SQLite in the data dir",
    )
    http: HostPort = setting(HostPort("127.0.0.1", 8000), "Web address HOST:PORT.", serve_and("viewer", "emulate"))
    # `rtdp viewer` only: processes sharing the --http port (SO_REUSEPORT; viewer.workers).
    workers: int = setting(
        1, "Viewer processes sharing the --http port (the kernel spreads connections); one that dies is started"
        " again (1-64).", ("viewer",),
    )
    mqtt: HostPort = setting(
        HostPort("127.0.0.1", 1883),
        "The embedded broker's address HOST:PORT (the others connect to it when --broker is not given).",
        serve_and("broker", "bridge", "viewer", "emulate"),
    )
    # The embedded broker also speaks MQTT over WebSockets here (browser clients); None: not at all.
    mqtt_ws: HostPort | None = setting(
        None, "Also serve MQTT over WebSockets here, e.g. 127.0.0.1:8083 (for MQTT clients in a browser).",
        serve_and("broker"), metavar="HOST:PORT", shown="off",
    )
    # An external broker; None means run the embedded one on `mqtt`.
    broker: BrokerURL | None = setting(
        None, "External broker URL mqtt://USER:PASS@HOST:PORT (instead of the embedded one).",
        serve_and("bridge", "viewer", "emulate"), shown="the embedded broker",
    )
    demo: bool = setting(False, "Create the original app's demo users and feeds if empty.", serve_and())
    emulate: bool = setting(False, "Run the emulated devices (sine wave and others).", serve_and())
    auto_create: bool = setting(
        True, "Create a feed on its first valid point, owned by its publisher (HTTP, embedded broker).",
        serve_and("broker", "viewer"),
    )
    # None: closed, or open with `demo`. While the database has no user the first account may always register
    # (viewer.pages.render.may_register), and becomes an administrator.
    registration: str | None = setting(
        None, "Who may create an account on /register: anyone (open) or nobody (closed; the first account on an"
        " empty database still may, and becomes the administrator).", serve_and("viewer"), choices=REGISTRATION,
        shown="closed, open with --demo",
    )
    max_payload: int = setting(
        256 * 1024, "Largest payload accepted, in bytes (at least 16).", serve_and("bridge", "viewer")
    )
    timezone: str = setting(
        "UTC", "Time zone of times given without an offset.", serve_and("bridge", "viewer", "export", "import")
    )
    share_group: str | None = setting(
        None, "Share the feeds/# subscription with other bridges ($share/NAME/...).", serve_and("bridge"),
        shown="none",
    )
    retire: bool = setting(
        False,
        "Store what the broker queued for --client-id's session (a bridge gone for good), remove the session so"
        " its share goes to the other bridges, and exit.",
        ("bridge",),
    )
    # The bridge's MQTT client id; None derives a stable one (the broker keeps its session by id).
    client_id: str | None = setting(
        None, "Stable MQTT client id of the bridge, so the broker keeps its session.", serve_and("bridge"),
        shown="derived",
    )
    # Bridge batching: flush at this many points or this many seconds, whichever comes first.
    batch_size: int = setting(
        2000, "The bridge commits at this many points, or after --batch-interval (1-100000).", serve_and("bridge")
    )
    batch_interval: float = setting(
        0.05, "Seconds the bridge collects points before it commits them, at most (up to 4).", serve_and("bridge")
    )
    # QoS 1 messages the bridge may hold unacknowledged (bounds paho's 65,535 message ids).
    max_inflight: int = setting(
        1000, "QoS 1 messages the bridge may hold unacknowledged (1-60000).", serve_and("bridge")
    )
    # HTTP ingestion: publishes awaiting their PUBACK before new requests get 503.
    http_max_pending: int = setting(
        1000, "HTTP points awaiting the broker's acknowledgement before more get 503 (1-60000).", serve_and("viewer")
    )
    # HTTP ingestion: seconds to wait for the broker's PUBACK before answering 503.
    http_publish_timeout: float = setting(
        5.0, "Seconds an HTTP point waits for the broker's acknowledgement before 503 (up to 60).",
        serve_and("viewer"),
    )
    min_free_disk: int = setting(
        16 * 1024 * 1024,
        "Bytes that must stay free where the SQLite database is for /readyz to say ready (a full disk stops"
        " every write).",
        serve_and("viewer"),
    )
    sse_queue: int = setting(
        1000, "Live streams: points queued per client; a client that falls further behind reconnects.",
        serve_and("viewer"),
    )
    sse_max_lag: float = setting(
        1.0, "Live streams: seconds a client's points may wait to be written; a client further behind reconnects.",
        serve_and("viewer"),
    )
    sse_heartbeat: float = setting(
        15.0, "Live streams: seconds between heartbeats; who may read is checked again as often.", serve_and("viewer")
    )
    secret_key: str | None = setting(
        None, "Key that signs session cookies (the same on every viewer of one site).", serve_and("viewer"),
        flag=None, shown="generated once into the data dir", secret=True,
    )
    log_level: str = setting(
        "info", "Logging level.", serve_and("broker", "bridge", "viewer", "emulate"), choices=LEVELS
    )
    access_log: str = setting(
        "errors", "HTTP requests logged: errors (400 and above, repeats rate-limited), all, or off.",
        serve_and("viewer"), choices=ACCESS_LOGS,
    )
    public_url: str | None = setting(
        None, "The address people reach the web at, e.g. https://rtdp.example.org (behind a proxy).",
        serve_and("viewer", "emulate"), shown="the --http address",
    )
    # Seconds between retention purges in the bridge (rtdp.retention); 0 disables them.
    retention_interval: float = setting(
        600.0, "Seconds between the bridge's retention purges (and trims of each alert rule's history to its"
        " newest 10,000 events); 0 turns them off.", serve_and("bridge")
    )
    # `rtdp bridge` / `rtdp broker` run apart: serve Prometheus /metrics here (None: no metrics server).
    metrics: HostPort | None = setting(
        None, "Serve Prometheus /metrics here, e.g. 127.0.0.1:9464 (`rtdp serve`: on the web address).",
        ("broker", "bridge"), metavar="HOST:PORT", shown="off",
    )
    # Seconds a verified login (password, token, session) is trusted before it is checked again, by the
    # viewer and by the embedded broker, also for an open MQTT connection: a revoked token or a disabled
    # user loses access within this time.
    credential_ttl: float = setting(
        30.0, "Seconds a verified login is trusted before it is checked again, on the web and MQTT (0-3600).",
        serve_and("broker", "viewer"),
    )
    # Seconds a feed permission decision is reused (a removed share or a deleted feed counts after it).
    decision_ttl: float = setting(
        5.0, "Seconds a feed permission decision is reused (0-3600).", serve_and("broker", "viewer")
    )
    # Feeds a non-admin user may own, however they are created (auto-create, API, pages); 0: no limit.
    feed_quota: int = setting(
        100, "Feeds a user who is not an admin may own; 0: no limit.", serve_and("bridge", "viewer")
    )
    # Axes one feed may have, however they are created (auto-create, API, pages, MQTT); 0: no limit.
    axis_quota: int = setting(1000, "Axes one feed may have; 0: no limit.", serve_and("bridge", "viewer"))
    # Axes listed per feed page (with their copy-paste examples), and feed/axis rows per /admin page and
    # its live snapshots; more go on further pages (?page=2).
    page_size: int = setting(
        100, "Axes per feed page, and feed/axis rows per /admin page (1-10000).", serve_and("viewer")
    )
    # The asyncio event loop of serve, broker and viewer, and of the bridge's and emulator's MQTT thread:
    # auto (uvloop where installed), uvloop or asyncio.
    loop: str = setting(
        "auto", "Event loop: uvloop where installed (auto), or the standard asyncio one.",
        serve_and("broker", "bridge", "viewer", "emulate"), choices=LOOPS,
    )
    # Password attempts (login form, HTTP Basic) allowed per account and per client address in
    # `login_window` seconds, as a burst refilled evenly; beyond, 429 with Retry-After.
    login_attempts: int = setting(
        10, "Password attempts per account and per address in --login-window seconds; more get 429 (a"
        " delayed CONNACK 5 over MQTT).",
        serve_and("broker", "viewer"),
    )
    login_window: float = setting(
        60.0, "Seconds in which --login-attempts refill (evenly).", serve_and("broker", "viewer")
    )
    # Accounts one client address may register per hour (the form answers 429 beyond).
    signups_per_hour: int = setting(10, "Accounts one address may register per hour.", serve_and("viewer"))
    # Threads hashing passwords (argon2): a login flood waits for these, never for the database's.
    hash_threads: int = setting(
        2, "Threads verifying passwords, apart from the database's (1-64).", serve_and("broker", "viewer")
    )
    # HTTP: the request line and headers together may hold this many bytes (431, or 414 for the line).
    http_max_header: int = setting(
        16 * 1024, "Bytes in an HTTP request line and headers; more get 414 or 431.", serve_and("viewer")
    )
    # HTTP: seconds a client has to send its request line and headers, once connected or between requests.
    http_header_timeout: float = setting(
        10.0, "Seconds to send an HTTP request's line and headers, however slowly.", serve_and("viewer")
    )
    # HTTP: seconds an idle keep-alive connection is kept open.
    http_keepalive: float = setting(
        5.0, "Seconds an idle HTTP keep-alive connection stays open.", serve_and("viewer")
    )
    # HTTP: open connections in total and from one client address; more are answered 503 and closed at
    # once. In all: room for 1,000 live (SSE) viewers and the scripts beside them, which one process
    # serves (bench/README.md); the process raises its open-file limit to match (rtdp.openfiles). Per
    # address above a script's own pool (httpx opens up to 100) and a browser's 6 per host, a quarter
    # of the total: one address cannot take every connection.
    http_max_connections: int = setting(
        2048, "Open HTTP connections in all; more are answered 503 and closed.", serve_and("viewer")
    )
    http_connections_per_ip: int = setting(
        512, "Open HTTP connections from one address (behind a proxy: all of them).", serve_and("viewer")
    )
    # Embedded broker: messages one MQTT client may have read but not yet settled (stored, for feeds/ in
    # `rtdp serve`; QoS 1/2 ones are unacknowledged until then). Beyond it the broker stops reading from it.
    mqtt_inflight: int = setting(
        100, "Embedded broker: messages one client may have sent but not yet had stored; beyond it the"
        " broker stops reading from that client (MQTT's own back-pressure).", serve_and("broker"),
    )
    # Embedded broker: seconds a new connection has to send its CONNECT; then it is closed.
    mqtt_connect_timeout: float = setting(
        10.0, "Embedded broker: seconds a new connection has to send its CONNECT (0.1-3600).", serve_and("broker"),
    )
    # Embedded broker: open connections in all and from one address; more are closed at once, unread. Below
    # the process's usual 1,024 file descriptors together with --http-max-connections.
    mqtt_max_connections: int = setting(
        400, "Embedded broker: open MQTT connections in all; more are closed at once.", serve_and("broker"),
    )
    mqtt_connections_per_ip: int = setting(
        100, "Embedded broker: open MQTT connections from one address.", serve_and("broker"),
    )
    # Embedded broker: a persistent session (clean session 0) unused this long is removed with its queue.
    session_expiry: float = setting(
        7 * 24 * 3600.0, "Embedded broker: seconds an offline persistent MQTT session is kept (60 or more).",
        serve_and("broker"), shown="604800 (7 days)",
    )
    # Embedded broker: messages queued for one offline persistent session; beyond, the oldest are dropped
    # (counted in rtdp_broker_session_dropped_total): a device back online wants the latest readings.
    session_queue: int = setting(
        1000, "Embedded broker: messages queued for one offline persistent session; beyond, the oldest"
        " are dropped.", serve_and("broker"),
    )
    # Embedded broker: persistent sessions one user (with any of their tokens) may keep; a CONNECT that
    # would make one more is refused (CONNACK 3). Each one can hold RTDP_SESSION_QUEUE messages, and each
    # publish to a topic they subscribe to is queued (and saved) for every offline one of them.
    sessions_per_user: int = setting(
        100, "Embedded broker: persistent MQTT sessions (clean session 0) one user may keep; beyond, a"
        " CONNECT that would make one more is refused with CONNACK 3.", serve_and("broker"),
    )
    # Embedded broker: a publish queued for offline persistent sessions costs a copy per session on the loop
    # every client shares; one user's publishes may queue this many a second (a second's worth at once),
    # beyond, the connection that published is not read until they are back within it (broker.limits).
    offline_copies: int = setting(
        20_000, "Embedded broker: copies per second one user's publishes may queue for offline persistent"
        " sessions (a publish to 100 offline sessions makes 100); beyond, the broker stops reading from"
        " the publishing connection until the rate is back (MQTT's own back-pressure: nothing is dropped).",
        serve_and("broker"),
    )
    # SQLite's `synchronous` pragma: normal (WAL: a commit survives a crash of the process, kill -9) or
    # full (also a power loss or OS crash, at the cost of an fsync per commit).
    sqlite_synchronous: str = setting(
        "normal", "SQLite durability: normal (a commit survives kill -9) or full (also a power loss, at the"
        " cost of an fsync per commit).", serve_and("bridge"), choices=SQLITE_SYNCHRONOUS,
    )
    # Alert actions (rtdp.alert_actions) run in the processes that store points: rtdp serve and rtdp bridge.
    webhook_allow_private: bool = setting(
        False, "Alert webhooks may call loopback, private and link-local addresses (off: refused, against"
        " server-side request forgery).", serve_and("bridge", "viewer"), flag=None,
    )
    webhook_timeout: float = setting(
        5.0, "Seconds an alert webhook may take to answer (0.1-60); it is tried 3 times with back-off.",
        serve_and("bridge"),
    )
    smtp_url: str | None = setting(
        None, "SMTP server for alert e-mails: smtp://[USER:PASS@]HOST[:PORT][?from=ADDR] (smtps:// for TLS).",
        serve_and("bridge"), flag=None, shown="no e-mail", secret=True,
    )

    def _check_per_address(self, per_address: str, total: str) -> None:
        limit, cap = getattr(self, per_address), getattr(self, total)
        if not 1 <= limit <= cap:
            raise _invalid(per_address, f"must be 1 to {option_label(total)} ({cap}), got {limit}")

    def __post_init__(self) -> None:
        if not 0.1 <= self.webhook_timeout <= 60:
            raise _invalid("webhook_timeout", f"must be 0.1 to 60 seconds, got {self.webhook_timeout}")
        if self.smtp_url is not None and not self.smtp_url.startswith(("smtp://", "smtps://")):
            raise _invalid("smtp_url", "must start with smtp:// or smtps://")
        if self.max_payload < 16:
            raise _invalid("max_payload", f"must be at least 16 bytes, got {self.max_payload}")
        if not 1 <= self.batch_size <= 100_000:
            raise _invalid("batch_size", f"must be 1-100000, got {self.batch_size}")
        if not 0 < self.batch_interval <= 4:
            # amqtt drops a QoS 1 message unacknowledged after 5 s: commit well inside that.
            raise _invalid("batch_interval", f"must be in (0, 4] seconds, got {self.batch_interval}")
        if not 1 <= self.max_inflight <= 60_000:
            raise _invalid("max_inflight", f"must be 1-60000, got {self.max_inflight}")
        if not 1 <= self.workers <= 64:
            raise _invalid("workers", f"must be 1-64, got {self.workers}")
        if not 1 <= self.http_max_pending <= 60_000:
            # paho's message ids wrap at 65,535: more in flight would silently lose points.
            raise _invalid("http_max_pending", f"must be 1-60000, got {self.http_max_pending}")
        if not 0 < self.http_publish_timeout <= 60:
            raise _invalid("http_publish_timeout", f"must be in (0, 60] seconds, got {self.http_publish_timeout}")
        if self.min_free_disk < 0:
            raise _invalid("min_free_disk", f"must not be negative, got {self.min_free_disk}")
        if self.sse_queue < 1:
            raise _invalid("sse_queue", f"must be at least 1, got {self.sse_queue}")
        if not 0 < self.sse_max_lag <= 3600:
            raise _invalid("sse_max_lag", f"must be in (0, 3600] seconds, got {self.sse_max_lag}")
        if self.sse_heartbeat <= 0:
            raise _invalid("sse_heartbeat", f"must be positive, got {self.sse_heartbeat}")
        if self.retire and self.client_id is None:
            raise _invalid("retire", "needs --client-id: the client id of the bridge whose session to take over")
        if self.share_group is not None and ("/" in self.share_group or not self.share_group):
            raise _invalid("share_group", f"must be a non-empty name without '/', got {self.share_group!r}")
        if self.log_level.lower() not in LEVELS:
            raise _invalid("log_level", f"unknown level {self.log_level!r}")
        if not 0 <= self.retention_interval <= 7 * 86400:
            raise _invalid("retention_interval", f"must be 0 (off) to 604800 seconds, got {self.retention_interval}")
        if not 0 <= self.credential_ttl <= 3600:
            raise _invalid("credential_ttl", f"must be 0 to 3600 seconds, got {self.credential_ttl}")
        if not 0 <= self.decision_ttl <= 3600:
            raise _invalid("decision_ttl", f"must be 0 to 3600 seconds, got {self.decision_ttl}")
        if self.feed_quota < 0:
            raise _invalid("feed_quota", f"must be 0 (no limit) or more, got {self.feed_quota}")
        if self.access_log not in ACCESS_LOGS:
            raise _invalid("access_log", f"must be one of {', '.join(ACCESS_LOGS)}, got {self.access_log!r}")
        if self.registration not in (None, *REGISTRATION):
            raise _invalid("registration", f"must be open or closed, got {self.registration!r}")
        if not 1 <= self.login_attempts <= 100_000:
            raise _invalid("login_attempts", f"must be 1-100000, got {self.login_attempts}")
        if not 0 < self.login_window <= 86400:
            raise _invalid("login_window", f"must be in (0, 86400] seconds, got {self.login_window}")
        if not 1 <= self.signups_per_hour <= 100_000:
            raise _invalid("signups_per_hour", f"must be 1-100000, got {self.signups_per_hour}")
        if not 1 <= self.hash_threads <= 64:
            raise _invalid("hash_threads", f"must be 1-64, got {self.hash_threads}")
        if not 1024 <= self.http_max_header <= 1024 * 1024:
            raise _invalid("http_max_header", f"must be 1024-1048576 bytes, got {self.http_max_header}")
        if not 0 < self.http_header_timeout <= 600:
            raise _invalid("http_header_timeout", f"must be in (0, 600] seconds, got {self.http_header_timeout}")
        if not 0 < self.http_keepalive <= 600:
            raise _invalid("http_keepalive", f"must be in (0, 600] seconds, got {self.http_keepalive}")
        self._check_per_address("http_connections_per_ip", "http_max_connections")
        if self.axis_quota < 0:
            raise _invalid("axis_quota", f"must be 0 (no limit) or more, got {self.axis_quota}")
        if not 1 <= self.page_size <= 10_000:
            raise _invalid("page_size", f"must be 1-10000, got {self.page_size}")
        if not 1 <= self.mqtt_inflight <= 65_535:
            raise _invalid("mqtt_inflight", f"must be 1-65535, got {self.mqtt_inflight}")
        if not 0.1 <= self.mqtt_connect_timeout <= 3600:
            raise _invalid("mqtt_connect_timeout", f"must be 0.1-3600 seconds, got {self.mqtt_connect_timeout}")
        if not 1 <= self.mqtt_max_connections <= 1_000_000:
            raise _invalid("mqtt_max_connections", f"must be 1-1000000, got {self.mqtt_max_connections}")
        self._check_per_address("mqtt_connections_per_ip", "mqtt_max_connections")
        if self.session_expiry < 60:
            raise _invalid("session_expiry", f"must be at least 60 seconds, got {self.session_expiry}")
        if not 1 <= self.session_queue <= 1_000_000:
            raise _invalid("session_queue", f"must be 1-1000000, got {self.session_queue}")
        if not 1 <= self.sessions_per_user <= 1_000_000:
            raise _invalid("sessions_per_user", f"must be 1-1000000, got {self.sessions_per_user}")
        if not 1 <= self.offline_copies <= 100_000_000:
            raise _invalid("offline_copies", f"must be 1-100000000, got {self.offline_copies}")
        if self.sqlite_synchronous not in SQLITE_SYNCHRONOUS:
            choices = ", ".join(SQLITE_SYNCHRONOUS)
            raise _invalid("sqlite_synchronous", f"must be one of {choices}, got {self.sqlite_synchronous!r}")
        if self.loop not in LOOPS:
            raise _invalid("loop", f"must be one of {', '.join(LOOPS)}, got {self.loop!r}")
        self.tz  # noqa: B018 -- validates the time zone name now, not at the first point

    @property
    def tz(self) -> tzinfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise _invalid("timezone", f"unknown time zone {self.timezone!r}") from None

    @property
    def registration_open(self) -> bool:
        """Anyone may register (the first account on an empty database may anyway: viewer.pages)."""
        return self.registration == "open" if self.registration is not None else self.demo

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.data_dir / 'rtdp.sqlite3').resolve()}"

    @property
    def embedded_broker(self) -> bool:
        return self.broker is None

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def build(cls, env: Mapping[str, str] | None = None, **options: Any) -> Settings:
        """Options given (not None) win over `RTDP_<NAME>` variables in `env`, which win over defaults.

        A bad value's error names the setting as the user gave it: `--max-payload` for an option,
        `RTDP_MAX_PAYLOAD` for a variable. An `RTDP_` variable that is no setting is logged as a warning
        (with the closest setting's name): a misspelt one would otherwise be ignored without a word.
        """
        env = os.environ if env is None else env
        names = [spec.name for spec in dataclasses.fields(cls)]
        _warn_unknown_variables(env, names)
        values: dict[str, Any] = {}
        from_env: set[str] = set()
        for spec in dataclasses.fields(cls):
            name = spec.name
            raw: Any = options.get(name)
            label = option_label(name)
            if raw is None:
                env_value = env.get(env_name(name))
                if env_value is None:
                    continue
                raw, label = env_value, env_name(name)
                from_env.add(name)
            values[name] = _convert(name, raw, spec.type, label)
        try:
            return cls(**values)
        except ConfigError as exc:
            setting = exc.detail.get("setting")
            if isinstance(setting, str) and setting in from_env:
                message = env_name(setting) + exc.message.removeprefix(option_label(setting))
                raise ConfigError(message, **exc.detail) from None
            raise


def _specs() -> dict[str, Spec]:
    found: dict[str, Spec] = {}
    for spec_field in dataclasses.fields(Settings):
        spec = spec_field.metadata.get("spec")
        if spec is None:
            continue  # a field declared without setting(): tests/rtdp/test_settings.py names it
        if spec.flag == _NAMED:
            spec = dataclasses.replace(spec, flag="--" + spec_field.name.replace("_", "-"))
        found[spec_field.name] = spec
    return found


# Each setting's row of the table, in the order of the fields.
SPECS: dict[str, Spec] = _specs()


def default_text(name: str) -> str:
    """A setting's default as --help and docs/settings.md show it."""
    spec, default = SPECS[name], Settings.__dataclass_fields__[name].default
    if spec.shown is not None:
        return spec.shown
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(default)


def reference() -> str:
    """docs/settings.md, generated from the table (scripts/docs writes it; a test compares)."""
    lines = [
        "# Settings",
        "",
        "<!-- Generated from the table in rtdp/settings.py by scripts/docs: edit it there. -->",
        "",
        "Each setting comes from its command-line option, else its `RTDP_` environment variable, else its",
        "default. `rtdp serve` runs every part, so it takes the settings of all of them; the other commands",
        "take those of the part they run. An option shown as `--x` is a switch with `--no-x` for off; as a",
        "variable it takes 1/0, true/false, yes/no or on/off.",
        "",
        "| option | variable | default | commands | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, spec in SPECS.items():
        option = f"`{spec.flag}`" if spec.flag else "(none)"
        commands = "all" if EVERY in spec.commands else ", ".join(spec.commands)
        lines.append(f"| {option} | `{env_name(name)}` | {default_text(name)} | {commands} | {spec.help} |")
    return "\n".join(lines) + "\n"


def _warn_unknown_variables(env: Mapping[str, str], names: list[str]) -> None:
    known = sorted(env_name(name) for name in names)
    for variable in env:
        if not variable.startswith(ENV_PREFIX) or variable in known or variable in OTHER_VARIABLES:
            continue
        close = difflib.get_close_matches(variable, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else f"; the settings are {', '.join(known)}"
        log.warning("environment variable %s is not an rtdp setting and is ignored%s", variable, hint)


def _convert(name: str, raw: Any, declared: Any, label: str) -> Any:
    if not isinstance(raw, str):
        if name == "data_dir":
            return Path(raw)
        return raw
    kind = str(declared)
    if name == "data_dir":
        return Path(raw)
    if name == "http" or name == "mqtt":
        return HostPort.parse(raw, label)
    if name in ("metrics", "mqtt_ws"):
        return HostPort.parse(raw, label) if raw else None
    if name == "broker":
        return BrokerURL.parse(raw, label) if raw else None
    if kind == "bool":
        return _bool(raw, label)
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{label}: expected an integer, got {raw!r}", setting=name) from None
    if kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{label}: expected a number, got {raw!r}", setting=name) from None
    return raw or None if "None" in kind else raw

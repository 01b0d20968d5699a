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
# RTDP_ variables that are not settings: read by the scripts in examples/ and by the test suite.
OTHER_VARIABLES = frozenset(
    {"RTDP_TOKEN", "RTDP_URL", "RTDP_EMAIL", "RTDP_PASSWORD", "RTDP_MQTT_HOST", "RTDP_MQTT_PORT",
     "RTDP_UPDATE_SCREENSHOT"}
)
OTHER_PREFIXES = ("RTDP_TEST_",)
LOOPS = ("auto", "uvloop", "asyncio")  # rtdp.eventloop


def option_label(name: str) -> str:
    """How error messages name a setting: as its command-line option (`--max-payload`)."""
    return "--" + name.replace("_", "-")


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


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to know, validated once when built."""

    data_dir: Path = Path("rtdp-data")
    http: HostPort = HostPort("127.0.0.1", 8000)
    mqtt: HostPort = HostPort("127.0.0.1", 1883)
    # The embedded broker also speaks MQTT over WebSockets here (browser clients); None: not at all.
    mqtt_ws: HostPort | None = None
    # An external broker; None means run the embedded one on `mqtt`.
    broker: BrokerURL | None = None
    db_url: str | None = None
    demo: bool = False
    emulate: bool = False
    auto_create: bool = True
    registration: bool = True
    max_payload: int = 256 * 1024
    timezone: str = "UTC"
    share_group: str | None = None
    # The bridge's MQTT client id; None derives a stable one (the broker keeps its session by id).
    client_id: str | None = None
    # Bridge batching: flush at this many points or this many seconds, whichever comes first.
    batch_size: int = 2000
    batch_interval: float = 0.05
    # QoS 1 messages the bridge may hold unacknowledged (bounds paho's 65,535 message ids).
    max_inflight: int = 1000
    # HTTP ingestion: publishes awaiting their PUBACK before new requests get 503.
    http_max_pending: int = 1000
    # HTTP ingestion: seconds to wait for the broker's PUBACK before answering 503.
    http_publish_timeout: float = 5.0
    sse_queue: int = 1000
    sse_heartbeat: float = 15.0
    secret_key: str | None = field(default=None, repr=False)
    log_level: str = "info"
    public_url: str | None = None
    # Seconds between retention purges in the bridge (rtdp.retention); 0 disables them.
    retention_interval: float = 600.0
    # `rtdp bridge` / `rtdp broker` run apart: serve Prometheus /metrics here (None: no metrics server).
    metrics: HostPort | None = None
    # Seconds a verified login (password, token, session) is trusted before it is checked again, by the
    # viewer and by the embedded broker, also for an open MQTT connection: a revoked token or a disabled
    # user loses access within this time.
    credential_ttl: float = 30.0
    # Seconds a feed permission decision is reused (a removed share or a deleted feed counts after it).
    decision_ttl: float = 5.0
    # Feeds a non-admin user may own, however they are created (auto-create, API, pages); 0: no limit.
    feed_quota: int = 100
    # The asyncio event loop of serve, broker and viewer: auto (uvloop where installed), uvloop or asyncio.
    loop: str = "auto"

    def __post_init__(self) -> None:
        if self.max_payload < 16:
            raise _invalid("max_payload", f"must be at least 16 bytes, got {self.max_payload}")
        if not 1 <= self.batch_size <= 100_000:
            raise _invalid("batch_size", f"must be 1-100000, got {self.batch_size}")
        if not 0 < self.batch_interval <= 4:
            # amqtt drops a QoS 1 message unacknowledged after 5 s: commit well inside that.
            raise _invalid("batch_interval", f"must be in (0, 4] seconds, got {self.batch_interval}")
        if not 1 <= self.max_inflight <= 60_000:
            raise _invalid("max_inflight", f"must be 1-60000, got {self.max_inflight}")
        if not 1 <= self.http_max_pending <= 60_000:
            # paho's message ids wrap at 65,535: more in flight would silently lose points.
            raise _invalid("http_max_pending", f"must be 1-60000, got {self.http_max_pending}")
        if not 0 < self.http_publish_timeout <= 60:
            raise _invalid("http_publish_timeout", f"must be in (0, 60] seconds, got {self.http_publish_timeout}")
        if self.sse_queue < 1:
            raise _invalid("sse_queue", f"must be at least 1, got {self.sse_queue}")
        if self.sse_heartbeat <= 0:
            raise _invalid("sse_heartbeat", f"must be positive, got {self.sse_heartbeat}")
        if self.share_group is not None and ("/" in self.share_group or not self.share_group):
            raise _invalid("share_group", f"must be a non-empty name without '/', got {self.share_group!r}")
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise _invalid("log_level", f"unknown level {self.log_level!r}")
        if not 0 <= self.retention_interval <= 7 * 86400:
            raise _invalid("retention_interval", f"must be 0 (off) to 604800 seconds, got {self.retention_interval}")
        if not 0 <= self.credential_ttl <= 3600:
            raise _invalid("credential_ttl", f"must be 0 to 3600 seconds, got {self.credential_ttl}")
        if not 0 <= self.decision_ttl <= 3600:
            raise _invalid("decision_ttl", f"must be 0 to 3600 seconds, got {self.decision_ttl}")
        if self.feed_quota < 0:
            raise _invalid("feed_quota", f"must be 0 (no limit) or more, got {self.feed_quota}")
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


def _warn_unknown_variables(env: Mapping[str, str], names: list[str]) -> None:
    known = sorted(env_name(name) for name in names)
    for variable in env:
        if not variable.startswith(ENV_PREFIX) or variable in known or variable in OTHER_VARIABLES:
            continue
        if variable.startswith(OTHER_PREFIXES):
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

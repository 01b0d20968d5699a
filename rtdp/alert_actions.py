"""What an alert does when its rule changes state: the MQTT message on `rtdp/alerts/<feed>` (which the
viewers turn into browser notifications on the feed's SSE streams), a publish to a topic of the owner's
choosing, webhooks and e-mails.

All of it runs off the writer thread: the writer judges points inside its transaction (rtdp.alerting) and
hands the alerts to `ActionWorker.submit`, which only queues them (bounded: when 10,000 wait, an alert's
actions are dropped and counted, never the commit delayed). Eight worker threads ("lanes") run them, a
rule always on the same lane so its alerts keep their order, so a slow webhook delays neither commits nor
most other rules' actions.

Webhooks and server-side request forgery: a rule's maker chooses the URL and this server calls it, from
inside the network it runs in. Loopback, private, link-local and other non-public addresses are refused
unless `RTDP_WEBHOOK_ALLOW_PRIVATE=1`, checked on every address the host name resolves to when the rule
is made and again when it is called; the request then goes to the address that was checked (not to a
second look-up that could answer differently: DNS rebinding).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from rtdp.errors import InvalidInput
from rtdp.logs import RateLimitedLog
from rtdp.settings import Settings
from rtdp.topic import alerts_topic

log = logging.getLogger("rtdp.alerts")

QUEUE_SIZE = 10_000
POOL_THREADS = 8
ATTEMPTS = 3
BACKOFF = 0.5  # seconds before the second attempt; doubled before each next one
RESULTS_PERIOD = 1.0  # seconds between writes of the last webhook results (one transaction for all)
SIGNATURE_HEADER = "X-Rtdp-Signature"

Publish = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class Alert:
    """One transition (or a repeat while firing) of one rule, with everything its actions need."""

    rule_id: int
    rule_name: str
    severity: str
    kind: str
    feed: str
    axis: str
    state: str  # firing, ok, changed
    at: float
    point: dict[str, Any] | None
    actions: tuple[dict[str, Any], ...]
    secret: str
    owner_id: int
    repeat: bool = False

    def document(self) -> dict[str, Any]:
        return {
            "rule": {"id": self.rule_id, "name": self.rule_name, "severity": self.severity, "kind": self.kind},
            "state": self.state, "feed": self.feed, "axis": self.axis, "point": self.point, "time": self.at,
            "repeat": self.repeat, "notify": any(a["type"] == "browser" for a in self.actions),
        }


# --- webhook targets --------------------------------------------------------------------------------


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str


def parse_target(url: str, field: str = "url") -> Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{field} must be an http:// or https:// URL", field=field)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidInput(f"{field} has a bad port", field=field) from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, parts.hostname, port, path)


def resolve_target(target: Target, *, allow_private: bool, field: str = "url") -> list[str]:
    """The addresses `target` resolves to; InvalidInput if any of them is not public (unless allowed)."""
    infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        for address in addresses:
            if _private(address):
                raise InvalidInput(
                    f"{field}: {target.host} is a loopback or private address ({address}); webhooks may call"
                    " only public addresses unless RTDP_WEBHOOK_ALLOW_PRIVATE=1",
                    field=field,
                )
    return addresses


def check_webhook_url(url: str, *, allow_private: bool, resolve: bool = True, field: str = "url") -> None:
    """Refuse (InvalidInput naming `field`) a URL that is not http(s), or whose host is or resolves to a
    non-public address. A name that does not resolve now is accepted: it is checked again when called."""
    target = parse_target(url, field)
    if allow_private:
        return
    try:
        ipaddress.ip_address(target.host)
        literal = True
    except ValueError:
        literal = False
    if not literal and not resolve:
        return
    try:
        resolve_target(target, allow_private=False, field=field)
    except OSError:
        return


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to an address already checked, with the certificate checked for the URL's host name."""

    def __init__(self, address: str, host: str, port: int, timeout: float) -> None:
        super().__init__(address, port, timeout=timeout, context=ssl.create_default_context())
        self._server_name = host

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_name)  # type: ignore[attr-defined]


class WebhookClient:
    """POSTs webhooks, keeping one connection per target and thread open between calls (a new TCP
    connection, and a new thread in many receivers, per alert was most of the cost at hundreds a second)."""

    def __init__(self, *, timeout: float, allow_private: bool) -> None:
        self.timeout = timeout
        self.allow_private = allow_private
        self._local = threading.local()

    def _connections(self) -> dict[tuple[str, str, int, str], http.client.HTTPConnection]:
        found: dict[tuple[str, str, int, str], http.client.HTTPConnection] | None = getattr(self._local, "open", None)
        if found is None:
            found = self._local.open = {}
        return found

    def post(self, url: str, body: bytes, secret: str) -> int:
        """POST `body` once; the HTTP status. Raises OSError/http.client errors, InvalidInput for a refused target.
        The host name is resolved and checked every time; a kept connection is used only for that address."""
        target = parse_target(url)
        address = resolve_target(target, allow_private=self.allow_private)[0]
        key = (target.scheme, target.host, target.port, address)
        connections = self._connections()
        connection = connections.pop(key, None)
        if connection is None:
            if target.scheme == "https":
                connection = _PinnedHTTPS(address, target.host, target.port, self.timeout)
            else:
                connection = http.client.HTTPConnection(address, target.port, timeout=self.timeout)
        host = target.host if ":" not in target.host else f"[{target.host}]"
        default_port = 443 if target.scheme == "https" else 80
        headers = {
            "Host": host if target.port == default_port else f"{host}:{target.port}",
            "Content-Type": "application/json",
            "User-Agent": "rtdp-alerts",
            SIGNATURE_HEADER: sign(secret, body),
        }
        try:
            connection.request("POST", target.path, body=body, headers=headers)
            response = connection.getresponse()
            response.read(65536)
        except BaseException:
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            connections[key] = connection
        return response.status


def sign(secret: str, body: bytes) -> str:
    """The X-Rtdp-Signature value for `body` (what a receiver compares, with hmac.compare_digest)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- e-mail -------------------------------------------------------------------------------------------


def send_email(smtp_url: str, to: str, alert: Alert, timeout: float) -> None:
    parts = urlsplit(smtp_url)
    sender = parse_qs(parts.query).get("from", [f"rtdp@{socket.gethostname()}"])[0]
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = f"[rtdp] {alert.severity}: {alert.rule_name} is {alert.state} ({alert.feed}/{alert.axis})"
    message.set_content(json.dumps(alert.document(), indent=2) + "\n")
    host, port = parts.hostname or "localhost", parts.port
    client: smtplib.SMTP
    if parts.scheme == "smtps":
        client = smtplib.SMTP_SSL(host, port or 465, timeout=timeout)
    else:
        client = smtplib.SMTP(host, port or 25, timeout=timeout)
    with client:
        if parts.username:
            client.login(unquote(parts.username), unquote(parts.password or ""))
        client.send_message(message)


# --- the worker ---------------------------------------------------------------------------------------


@dataclass
class ActionStats:
    queued: int = 0
    dropped: int = 0
    webhooks_ok: int = 0
    webhooks_failed: int = 0
    emails: int = 0
    published: int = 0
    results: dict[int, str] = field(default_factory=dict)


class ActionWorker:
    """Runs alerts' actions on its own thread (and a pool for webhooks and e-mails).

    `publish(topic, payload)` sends an MQTT message from any thread without blocking (the bridge's client
    or the embedded broker). `may_publish(owner_id, topic)` says whether a rule's owner may still publish
    to its extra topic (asked when the action runs: rights may have changed since the rule was made).
    `save_results(results)` records the last webhook outcome per rule id (called every RESULTS_PERIOD on
    the worker thread with what changed, never on the writer's).
    """

    def __init__(
        self,
        settings: Settings,
        publish: Publish | None,
        *,
        may_publish: Callable[[int, str], bool],
        save_results: Callable[[dict[int, str]], None],
    ) -> None:
        self.settings = settings
        self.publish = publish
        self.may_publish = may_publish
        self.save_results = save_results
        self.stats = ActionStats()
        # Lanes: one thread each, a rule always on the same one, so one rule's alerts keep their order
        # while different rules' run side by side. `_waiting` bounds what all of them hold.
        self._lanes = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rtdp-alert-{index}") for index in range(POOL_THREADS)
        ]
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self._webhooks = WebhookClient(timeout=settings.webhook_timeout, allow_private=settings.webhook_allow_private)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._results: dict[int, str] = {}
        self._results_lock = threading.Lock()
        self._ratelog = RateLimitedLog(log)

    def start(self, publish: Publish | None = None) -> None:
        if publish is not None:
            self.publish = publish
        self._thread = threading.Thread(target=self._run, name="rtdp-alert-results", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Run what is queued (webhooks included: at most their retries), then record the last results."""
        if self._thread is None:
            return
        for lane in self._lanes:
            lane.shutdown(wait=True, cancel_futures=False)
        self._stopping.set()
        self._thread.join(timeout)
        self._flush_results()
        self._thread = None

    def submit(self, alerts: list[Alert]) -> None:
        """Queue `alerts` (called on the writer thread after the commit: never blocks)."""
        for alert in alerts:
            with self._waiting_lock:
                full = self._waiting >= QUEUE_SIZE
                if not full:
                    self._waiting += 1
            if full:
                self.stats.dropped += 1
                self._ratelog.warning("full", "alert actions dropped: %d queued already", QUEUE_SIZE)
                continue
            self.stats.queued += 1
            try:
                self._lanes[alert.rule_id % POOL_THREADS].submit(self._handle, alert)
            except RuntimeError:  # stopped: nobody will run it
                with self._waiting_lock:
                    self._waiting -= 1

    def _handle(self, alert: Alert) -> None:
        try:
            self._act(alert)
        except Exception:  # noqa: BLE001 -- one alert's failure must not stop the others'
            log.exception("alert %s: actions failed", alert.rule_id)
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def _run(self) -> None:
        while not self._stopping.wait(RESULTS_PERIOD):
            self._flush_results()

    def _act(self, alert: Alert) -> None:
        body = json.dumps(alert.document(), separators=(",", ":")).encode()
        types = {a["type"] for a in alert.actions}
        if types & {"browser", "mqtt"} and self.publish is not None:
            self.publish(alerts_topic(alert.feed), body)
            self.stats.published += 1
        for action in alert.actions:
            if action["type"] == "mqtt" and "topic" in action:
                if alert.state != "ok":  # it switches a device on: going back to ok is not the same command
                    self._owner_topic(alert, action, body)
            elif action["type"] == "webhook":
                self._webhook(alert, action["url"], body)
            elif action["type"] == "email":
                self._email(alert, action["to"])

    def _owner_topic(self, alert: Alert, action: dict[str, Any], body: bytes) -> None:
        topic = action["topic"]
        try:
            permitted = self.may_publish(alert.owner_id, topic)
        except Exception as exc:  # noqa: BLE001 -- a database error: skip this publish, say so
            self._ratelog.warning("owner-topic", "alert %s: %s not published: %s", alert.rule_id, topic, exc)
            return
        if not permitted:
            self._ratelog.warning("owner-topic", "alert %s: its owner may not publish to %s", alert.rule_id, topic)
            return
        payload = action["payload"].encode() if "payload" in action else body
        if self.publish is not None:
            self.publish(topic, payload)

    def _webhook(self, alert: Alert, url: str, body: bytes) -> None:
        delay = BACKOFF
        outcome = ""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                status = self._webhooks.post(url, body, alert.secret)
            except InvalidInput as exc:
                outcome = f"refused: {exc.message}"
                break
            except (OSError, http.client.HTTPException) as exc:
                outcome = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
            else:
                outcome = f"HTTP {status}"
                if status < 500 and status != 429:
                    break
            if attempt < ATTEMPTS:
                time.sleep(delay)
                delay *= 2
        ok = outcome.startswith("HTTP 2")
        if ok:
            self.stats.webhooks_ok += 1
        else:
            self.stats.webhooks_failed += 1
            self._ratelog.warning("webhook", "alert %s: webhook %s: %s", alert.rule_id, url[:100], outcome)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        with self._results_lock:
            self._results[alert.rule_id] = f"{outcome} at {stamp} UTC (attempt {attempt} of {ATTEMPTS})"[:500]

    def _email(self, alert: Alert, to: str) -> None:
        smtp_url = self.settings.smtp_url
        if smtp_url is None:
            self._ratelog.warning("email", "alert %s: no e-mail sent, RTDP_SMTP_URL is not set", alert.rule_id)
            return
        try:
            send_email(smtp_url, to, alert, self.settings.webhook_timeout)
            self.stats.emails += 1
        except (OSError, smtplib.SMTPException) as exc:
            self._ratelog.warning("email", "alert %s: e-mail to %s failed: %s", alert.rule_id, to, exc)

    def _flush_results(self) -> None:
        with self._results_lock:
            results, self._results = self._results, {}
        if not results:
            return
        self.stats.results.update(results)
        try:
            self.save_results(results)
        except Exception as exc:  # noqa: BLE001 -- the database is away: these results are not shown
            self._ratelog.warning("results", "webhook results not recorded: %s", exc)

"""What an alert does when its rule changes state: the MQTT message on `rtdp/alerts/<feed>` (which the
viewers turn into browser notifications on the feed's SSE streams), a publish to a topic of the owner's
choosing, webhooks and e-mails.

All of it runs off the writer thread: the writer judges points inside its transaction (rtdp.alerting) and
hands a batch's alerts to `ActionWorker.submit`, which only appends them to the lanes' queues, waking each
lane once (bounded: when 10,000 wait, an alert's actions are dropped and counted, never the commit
delayed). Eight threads ("lanes") run them, a rule always on the same lane so its alerts keep their order,
so a slow webhook delays neither commits nor most other rules' actions. Webhooks: rtdp.webhooks.
"""

from __future__ import annotations

import json
import logging
import smtplib
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from rtdp.errors import InvalidInput
from rtdp.logs import RateLimitedLog
from rtdp.settings import Settings
from rtdp.topic import alerts_topic
from rtdp.webhooks import WebhookClient

log = logging.getLogger("rtdp.alerts")

QUEUE_SIZE = 10_000
POOL_THREADS = 8
ATTEMPTS = 3
BACKOFF = 0.5  # seconds before the second attempt; doubled before each next one
RESULTS_PERIOD = 1.0  # seconds between writes of the last webhook results (one transaction for all)

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
    """Counters for /metrics (read from other threads: plain ints, each written by one thread at a time
    under the GIL; a scrape may see one a moment old)."""

    queued: int = 0
    dropped: int = 0
    webhooks_ok: int = 0
    webhooks_failed: int = 0
    emails: int = 0
    emails_failed: int = 0
    published: int = 0  # rtdp/alerts/<feed> (browser and mqtt actions)
    owner_topic: int = 0
    owner_topic_refused: int = 0
    results: dict[int, str] = field(default_factory=dict)


class _Lane:
    """One thread running the alerts put on it, in order. Started at the first alert."""

    def __init__(self, name: str, run: Callable[[Alert], None]) -> None:
        self.name = name
        self.run = run
        self.items: deque[Alert] = deque()
        self.ready = threading.Condition(threading.Lock())
        self.closed = False
        self.thread: threading.Thread | None = None

    def put(self, alerts: list[Alert]) -> bool:
        """Append `alerts` and wake the thread (once); False once closed: nobody would run them."""
        with self.ready:
            if self.closed:
                return False
            self.items.extend(alerts)
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self.thread.start()
            self.ready.notify()
        return True

    def _loop(self) -> None:
        items = self.items
        while True:
            with self.ready:
                while not items and not self.closed:
                    self.ready.wait()
                if not items:
                    return
                alert = items.popleft()
            self.run(alert)

    def close(self) -> None:
        """Run what is queued, then end the thread."""
        with self.ready:
            self.closed = True
            self.ready.notify()
            thread = self.thread
        if thread is not None:
            thread.join()


class ActionWorker:
    """Runs alerts' actions on its lanes (threads), and records the webhooks' last results on one more.

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
        self._lanes = [_Lane(f"rtdp-alert-{index}", self._handle) for index in range(POOL_THREADS)]
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._webhooks = WebhookClient(timeout=settings.webhook_timeout, allow_private=settings.webhook_allow_private)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._results: dict[int, str] = {}
        self._results_lock = threading.Lock()
        self._ratelog = RateLimitedLog(log)

    @property
    def waiting(self) -> int:
        """Alerts queued or running on the lanes now."""
        return self._waiting

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
            lane.close()
        self._stopping.set()
        self._thread.join(timeout)
        self._flush_results()
        self._thread = None

    def submit(self, alerts: list[Alert]) -> None:
        """Queue `alerts` (called on the writer thread after the commit: never blocks), each lane woken once."""
        if not alerts:
            return
        with self._waiting_lock:
            room = max(0, QUEUE_SIZE - self._waiting)
            taken = alerts if len(alerts) <= room else alerts[:room]
            self._waiting += len(taken)
        if len(taken) < len(alerts):
            self.stats.dropped += len(alerts) - len(taken)
            self._ratelog.warning("full", "alert actions dropped: %d queued already", QUEUE_SIZE)
        self.stats.queued += len(taken)
        by_lane: dict[int, list[Alert]] = {}
        for alert in taken:
            by_lane.setdefault(alert.rule_id % POOL_THREADS, []).append(alert)
        for index, group in by_lane.items():
            if not self._lanes[index].put(group):  # stopped: nobody will run them
                with self._waiting_lock:
                    self._waiting -= len(group)

    def _handle(self, alert: Alert) -> None:
        try:
            self._act(alert)
        except Exception:  # noqa: BLE001 -- one alert's failure must not stop the others'
            log.exception("alert %s: actions failed", alert.rule_id)
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def _count(self, name: str) -> None:
        with self._stats_lock:  # the lanes count at once; += on an attribute is not atomic
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    def _run(self) -> None:
        while not self._stopping.wait(RESULTS_PERIOD):
            self._flush_results()

    def _act(self, alert: Alert) -> None:
        body = json.dumps(alert.document(), separators=(",", ":")).encode()
        types = {a["type"] for a in alert.actions}
        if types & {"browser", "mqtt"} and self.publish is not None:
            self.publish(alerts_topic(alert.feed), body)
            self._count("published")
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
            self._count("owner_topic_refused")
            return
        if not permitted:
            self._ratelog.warning("owner-topic", "alert %s: its owner may not publish to %s", alert.rule_id, topic)
            self._count("owner_topic_refused")
            return
        payload = action["payload"].encode() if "payload" in action else body
        if self.publish is not None:
            self.publish(topic, payload)
            self._count("owner_topic")

    def _webhook(self, alert: Alert, url: str, body: bytes) -> None:
        delay = BACKOFF
        outcome = ""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                status = self._webhooks.post(url, body, alert.secret)
            except InvalidInput as exc:
                outcome = f"refused: {exc.message}"
                break
            except OSError as exc:
                outcome = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
            else:
                outcome = f"HTTP {status}"
                if status < 500 and status != 429:
                    break
            if attempt < ATTEMPTS:
                time.sleep(delay)
                delay *= 2
        ok = outcome.startswith("HTTP 2")
        self._count("webhooks_ok" if ok else "webhooks_failed")
        if not ok:
            self._ratelog.warning("webhook", "alert %s: webhook %s: %s", alert.rule_id, url[:100], outcome)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        with self._results_lock:
            self._results[alert.rule_id] = f"{outcome} at {stamp} UTC (attempt {attempt} of {ATTEMPTS})"[:500]

    def _email(self, alert: Alert, to: str) -> None:
        smtp_url = self.settings.smtp_url
        if smtp_url is None:
            self._ratelog.warning("email", "alert %s: no e-mail sent, RTDP_SMTP_URL is not set", alert.rule_id)
            self._count("emails_failed")
            return
        try:
            send_email(smtp_url, to, alert, self.settings.webhook_timeout)
            self._count("emails")
        except (OSError, smtplib.SMTPException) as exc:
            self._count("emails_failed")
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

"""Real servers that alert actions talk to in tests and benchmarks: an HTTP webhook receiver and an SMTP
server (aiosmtpd), each on a free port of 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.env import free_port, wait_for


@dataclass
class Hook:
    """One request the webhook receiver got: when, its headers and its JSON body."""

    at: float
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw)

    def signed_with(self, secret: str) -> bool:
        expected = "sha256=" + hmac.new(secret.encode(), self.raw, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get("x-rtdp-signature", ""), expected)


@dataclass
class WebhookReceiver:
    url: str
    hooks: list[Hook] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Answer this status to the next `fail` requests (retries are tested with it).
    status: int = 200
    fail: int = 0
    # Seconds to wait before answering (timeouts are tested with it).
    delay: float = 0.0

    def received(self) -> list[Hook]:
        with self.lock:
            return list(self.hooks)

    def wait(self, count: int, timeout: float = 15.0) -> list[Hook]:
        return wait_for(lambda: (lambda got: got if len(got) >= count else [])(self.received()), timeout,
                        what=f"{count} webhook calls")


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver("")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 -- http.server's name
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            if receiver.delay:
                time.sleep(receiver.delay)
            with receiver.lock:
                status = receiver.status if receiver.fail > 0 else 200
                receiver.fail = max(0, receiver.fail - 1)
                receiver.hooks.append(Hook(time.time(), self.path, {k.lower(): v for k, v in self.headers.items()},
                                           raw))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- http.server's name
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 512  # the default 5 drops connections under a burst: a 1 s SYN retry each

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mailbox:
    url: str
    messages: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[Message]:
        with self.lock:
            return list(self.messages)

    def wait(self, count: int, timeout: float = 15.0) -> list[Message]:
        return wait_for(lambda: (lambda got: got if len(got) >= count else [])(self.received()), timeout,
                        what=f"{count} e-mails")


@contextmanager
def smtp_server() -> Iterator[Mailbox]:
    """aiosmtpd on a free port; `url` is what RTDP_SMTP_URL takes."""
    from aiosmtpd.controller import Controller

    port = free_port()
    mailbox = Mailbox(f"smtp://127.0.0.1:{port}?from=rtdp@example.com")

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 -- aiosmtpd's
            with mailbox.lock:
                mailbox.messages.append(message_from_bytes(envelope.content))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()

"""Webhook targets and calls (rtdp.webhooks) against a real receiver on a free port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from rtdp.errors import InvalidInput
from rtdp.webhooks import BadResponse, WebhookClient, check_webhook_url, sign
from tests.support.receivers import webhook_receiver


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x", "http://localhost:8080/x", "http://[::1]/", "http://[::ffff:127.0.0.1]/",
    "http://10.0.0.1/", "http://192.168.1.1/", "http://169.254.169.254/latest/meta-data", "http://0.0.0.0/",
    "http://[fe80::1]/", "http://100.64.0.1/",
])
def test_private_targets_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_webhook_url(url, allow_private=False, field="actions[0].url")
    assert refused.value.detail["field"] == "actions[0].url"
    check_webhook_url(url, allow_private=True)  # unless allowed


def test_the_client_checks_every_call_and_signs() -> None:
    with webhook_receiver() as hook:
        with pytest.raises(InvalidInput):
            WebhookClient(timeout=2, allow_private=False).post(hook.url, b"{}", "k")
        client = WebhookClient(timeout=2, allow_private=True)
        assert client.post(hook.url, b'{"a":1}', "k") == 200
        assert client.post(hook.url, b'{"a":2}', "k") == 200  # on the kept connection
        got = hook.wait(2)
        assert got[0].signed_with("k") and got[0].headers["x-rtdp-signature"] == sign("k", b'{"a":1}')
        assert hook.received() == got


def test_a_slow_receiver_times_out() -> None:
    with webhook_receiver() as hook:
        hook.delay = 1.0
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            WebhookClient(timeout=0.2, allow_private=True).post(hook.url, b"{}", "k")
        assert time.monotonic() - started < 0.9


@contextmanager
def canned(*answers: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """A raw HTTP server on a free port: for each connection in turn, reads one request and writes the next
    of `answers` (b"" closes without answering), then closes. The requests read are listed."""
    listener = socket.create_server(("127.0.0.1", 0))
    requests: list[bytes] = []

    def serve() -> None:
        for answer in answers:
            connection, _ = listener.accept()
            with connection:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += connection.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(body) < length:
                    body += connection.recv(65536)
                requests.append(head + b"\r\n\r\n" + body)
                connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/in?x=1", requests
    finally:
        listener.close()
        thread.join(5)


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nTrailer: x\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    b"HTTP/1.0 201 Created\r\n\r\nthe body runs to the end",
])
def test_responses_of_every_framing(answer: bytes) -> None:
    with canned(answer) as (url, requests):
        assert WebhookClient(timeout=2, allow_private=True).post(url, b'{"a":1}', "k") == 201
    head, _, body = requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /in?x=1 HTTP/1.1\r\n") and body == b'{"a":1}'
    assert f"x-rtdp-signature: {sign('k', body)}".encode() in head.lower()


def test_a_kept_connection_closed_by_the_receiver_is_replaced_and_garbage_fails() -> None:
    kept = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    # The server closes each connection after one answer, although it said keep-alive: the next call finds
    # the kept one closed, with nothing answered, and sends the request again on a new connection.
    with canned(kept, kept, b"SSH-2.0-OpenSSH\r\n\r\n") as (url, requests):
        client = WebhookClient(timeout=2, allow_private=True)
        assert client.post(url, b"1", "k") == 200
        assert client.post(url, b"2", "k") == 200
        with pytest.raises(BadResponse):
            client.post(url, b"3", "k")
    assert [r.rpartition(b"\r\n\r\n")[2] for r in requests] == [b"1", b"2", b"3"]

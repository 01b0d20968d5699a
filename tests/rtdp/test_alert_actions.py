"""Webhook targets and calls (rtdp.alert_actions) against a real receiver on a free port."""

from __future__ import annotations

import time

import pytest

from rtdp.alert_actions import WebhookClient, check_webhook_url, sign
from rtdp.errors import InvalidInput
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

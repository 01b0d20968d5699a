"""serve_metrics: `--metrics HOST:PORT` for a component run apart."""

from __future__ import annotations

import socket

import pytest

from rtdp.errors import ConfigError
from rtdp.prometheus import serve_metrics
from rtdp.settings import HostPort, Settings


def test_port_in_use_is_one_line_naming_the_option() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as caught:
            serve_metrics(HostPort("127.0.0.1", port))
    message = str(caught.value)
    assert "--metrics" in message and str(port) in message and "\n" not in message


def test_the_setting_is_optional_and_parsed() -> None:
    assert Settings.build(env={}).metrics is None
    assert Settings.build(env={"RTDP_METRICS": "127.0.0.1:9464"}).metrics == HostPort("127.0.0.1", 9464)
    assert Settings.build(env={}, metrics="127.0.0.1:0").metrics == HostPort("127.0.0.1", 0)
    with pytest.raises(ConfigError, match="^RTDP_METRICS: "):
        Settings.build(env={"RTDP_METRICS": "localhost:http"})
    with pytest.raises(ConfigError, match="^--metrics: "):
        Settings.build(env={}, metrics="localhost:http")

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from rtdp.errors import ConfigError
from rtdp.settings import BrokerURL, HostPort, Settings
from tests.support.env import SUITE_VARIABLES


def test_defaults() -> None:
    settings = Settings.build(env={})
    assert settings.http == HostPort("127.0.0.1", 8000)
    assert settings.mqtt == HostPort("127.0.0.1", 1883)
    assert settings.embedded_broker and settings.broker is None
    assert settings.auto_create and not settings.demo
    assert settings.max_payload == 256 * 1024
    assert settings.database_url == f"sqlite:///{(Path('rtdp-data') / 'rtdp.sqlite3').resolve()}"


def test_environment_is_read_and_converted() -> None:
    env = {
        "RTDP_DATA_DIR": "/tmp/x",
        "RTDP_HTTP": "0.0.0.0:8080",
        "RTDP_MQTT": ":1884",
        "RTDP_DEMO": "yes",
        "RTDP_AUTO_CREATE": "off",
        "RTDP_MAX_PAYLOAD": "1024",
        "RTDP_BATCH_INTERVAL": "0.5",
        "RTDP_TIMEZONE": "Europe/Berlin",
        "RTDP_DB_URL": "postgresql://u@h/db",
        "RTDP_BROKER": "mqtt://user:p%40ss@broker.example:1885",
    }
    settings = Settings.build(env=env)
    assert settings.data_dir == Path("/tmp/x")
    assert settings.http == HostPort("0.0.0.0", 8080)
    assert settings.mqtt == HostPort("127.0.0.1", 1884)
    assert settings.demo is True and settings.auto_create is False
    assert settings.max_payload == 1024 and settings.batch_interval == 0.5
    assert settings.tz.key == "Europe/Berlin"  # type: ignore[attr-defined]
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.broker == BrokerURL("broker.example", 1885, "user", "p@ss")
    assert not settings.embedded_broker


def test_options_win_over_environment() -> None:
    env = {"RTDP_HTTP": "127.0.0.1:9000", "RTDP_DEMO": "true", "RTDP_MAX_PAYLOAD": "2048"}
    settings = Settings.build(env=env, http="127.0.0.1:9001", demo=False, max_payload=None)
    assert settings.http.port == 9001
    assert settings.demo is False  # an explicit False is an option given
    assert settings.max_payload == 2048  # None means "not given": the environment applies


def test_typed_options_pass_through() -> None:
    settings = Settings.build(env={}, data_dir=Path("d"), batch_size=10, http=HostPort("::1", 1))
    assert settings.data_dir == Path("d") and settings.batch_size == 10 and str(settings.http) == "[::1]:1"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RTDP_HTTP", "localhost:http"),
        ("RTDP_MQTT", "127.0.0.1:70000"),
        ("RTDP_BROKER", "ws://host:1"),
        ("RTDP_BROKER", "mqtt://host:notaport"),
        ("RTDP_DEMO", "perhaps"),
        ("RTDP_MAX_PAYLOAD", "lots"),
        ("RTDP_MAX_PAYLOAD", "8"),
        ("RTDP_BATCH_SIZE", "0"),
        ("RTDP_BATCH_INTERVAL", "5"),
        ("RTDP_BATCH_INTERVAL", "soon"),
        ("RTDP_MAX_INFLIGHT", "70000"),
        ("RTDP_SHARE_GROUP", "a/b"),
        ("RTDP_LOG_LEVEL", "loud"),
        ("RTDP_TIMEZONE", "Mars/Olympus"),
        ("RTDP_CREDENTIAL_TTL", "-1"),
        ("RTDP_DECISION_TTL", "7200"),
        ("RTDP_FEED_QUOTA", "-5"),
        ("RTDP_LOOP", "fast"),
        ("RTDP_MQTT_INFLIGHT", "0"),
        ("RTDP_SQLITE_SYNCHRONOUS", "off"),
    ],
)
def test_a_bad_variable_is_named_as_the_user_set_it(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.build(env={name: value})
    assert caught.value.message.startswith(f"{name}: "), caught.value.message


@pytest.mark.parametrize(
    ("option", "value", "label"),
    [
        ("http", "localhost:http", "--http"),
        ("demo", "perhaps", "--demo"),
        ("max_payload", "8", "--max-payload"),
        ("max_payload", 8, "--max-payload"),
        ("batch_interval", "soon", "--batch-interval"),
        ("share_group", "a/b", "--share-group"),
        ("timezone", "Mars/Olympus", "--timezone"),
        ("feed_quota", -1, "--feed-quota"),
        ("loop", "tokio", "--loop"),
        ("access_log", "some", "--access-log"),
        ("axis_quota", -1, "--axis-quota"),
        ("page_size", 0, "--page-size"),
        ("login_attempts", 0, "--login-attempts"),
        ("login_window", "0", "--login-window"),
        ("signups_per_hour", 0, "--signups-per-hour"),
        ("hash_threads", 0, "--hash-threads"),
        ("http_max_header", 100, "--http-max-header"),
        ("http_header_timeout", 0, "--http-header-timeout"),
        ("http_keepalive", -1, "--http-keepalive"),
        ("http_connections_per_ip", 5000, "--http-connections-per-ip"),  # above the 2048 in all
    ],
)
def test_a_bad_option_is_named_as_its_flag(option: str, value: object, label: str) -> None:
    # The same setting in the environment is not what the user gave: the option wins and is named.
    env = {"RTDP_" + option.upper(): "irrelevant"}
    with pytest.raises(ConfigError) as caught:
        Settings.build(env=env, **{option: value})
    assert caught.value.message.startswith(f"{label}: "), caught.value.message


def test_a_misspelt_variable_is_warned_about_with_the_closest_name(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rtdp.settings"):
        settings = Settings.build(env={"RTDP_MAX_PAYLOD": "1024", "RTDP_FEED_QUOTA": "3"})
    assert settings.max_payload == 256 * 1024 and settings.feed_quota == 3
    [record] = caplog.records
    assert "RTDP_MAX_PAYLOD" in record.getMessage() and "did you mean RTDP_MAX_PAYLOAD?" in record.getMessage()


def test_variables_of_the_examples_are_not_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    env = {"RTDP_TOKEN": "t", "RTDP_URL": "http://x", "RTDP_MQTT_HOST": "h", "PATH": "/"}
    with caplog.at_level(logging.WARNING, logger="rtdp.settings"):
        Settings.build(env=env)
    assert not caplog.records


def test_the_test_suites_knobs_are_no_concern_of_rtdp(caplog: pytest.LogCaptureFixture) -> None:
    # The suite reads and removes its own variables (tests/support/env.py): rtdp makes no exception for them.
    assert not [name for name in os.environ if name.startswith(SUITE_VARIABLES)]
    with caplog.at_level(logging.WARNING, logger="rtdp.settings"):
        Settings.build(env={"RTDP_TEST_PG_HOST": "h"})
    [record] = caplog.records
    assert "RTDP_TEST_PG_HOST is not an rtdp setting" in record.getMessage()


def test_broker_password_never_shown() -> None:
    broker = BrokerURL.parse("mqtt://user:secret@host:1883")
    assert "secret" not in str(broker) and "secret" not in repr(broker)
    with pytest.raises(ConfigError) as caught:
        BrokerURL.parse("mqtt://user:secret@host:bad")
    assert "secret" not in caught.value.message


def test_replace_validates_again() -> None:
    settings = Settings.build(env={})
    assert settings.replace(batch_size=5).batch_size == 5
    with pytest.raises(ConfigError):
        settings.replace(batch_size=0)


def test_time_zone_object() -> None:
    settings = Settings.build(env={"RTDP_TIMEZONE": "Asia/Kolkata"})
    assert settings.tz.utcoffset(datetime(2020, 1, 1)) == timedelta(hours=5, minutes=30)

"""Issue 11, the web side: one test per finding (numbered as in the issue), each an attack that used to
work. The broker's findings (#3, #4, #6, #13, #15 and MQTT's part of #2) are tested in tests/broker."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from rtdp.accounts import normalize_email
from rtdp.casts import parse_datetime
from rtdp.database import open_database
from rtdp.errors import InvalidInput
from rtdp.models import User
from rtdp.settings import Settings
from tests.support.env import wait_for
from tests.viewer.conftest import World, bearer, ready
from tests.viewer.test_pages import csrf
from viewer.app import create_app
from viewer.state import ViewerState

URL = "/service/feed_input.json"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Generous sign-up and login limits by default: the tests of those limits set their own.
    return settings.replace(signups_per_hour=1000, login_attempts=1000)


@contextmanager
def app_client(settings: Settings, address: str = "testclient", **changes: Any) -> Iterator[TestClient]:
    with TestClient(create_app(settings.replace(**changes)), client=(address, 50000)) as client:
        wait_for(lambda: ready(client), what="the viewer to be ready")
        yield client


def _state(client: TestClient) -> ViewerState:
    state: ViewerState = client.app.state.viewer  # type: ignore[attr-defined]
    return state


# 5. A datetime with a UTC offset landing outside years 1-9999.


@pytest.mark.parametrize("x", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_05_an_offset_time_outside_years_1_to_9999_is_refused(client: TestClient, world: World, x: str) -> None:
    answer = client.get(f"{URL}/feed_t/temp", params={"x": x, "y": "1"}, headers=bearer(world.ep_token))
    assert answer.status_code == 400 and answer.json()["field"] == "x"
    # MQTT decodes with the same cast, so the broker refuses it too.
    with pytest.raises(InvalidInput):
        parse_datetime(x, UTC)


# 10. Bidirectional-control characters in an email displayed it as someone else's.


@pytest.mark.parametrize("email", ["\u202emoc.gnihton@pe", "ep\u200b@nothing.com", "ep@nothing.com\u2066", "a\x07@b.c"])
def test_10_invisible_and_bidi_characters_are_refused_in_emails(client: TestClient, email: str) -> None:
    with pytest.raises(InvalidInput):
        normalize_email(email)
    answer = client.post(
        "/register", data={"email": email, "password": "longenough", "csrf_token": csrf(client, "/register")}
    )
    assert answer.status_code == 400 and "invalid email" in answer.text
    assert not User.select().exists()


# 14. File modes; registration told who has an account.


def test_14_the_data_dir_is_0700_and_the_database_files_0600(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    db = open_database(f"sqlite:///{data / 'rtdp.sqlite3'}")
    try:
        User.create(email="x@example.com", password_hash="-")  # writes: the -wal and -shm files exist now
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        files = sorted(data.iterdir())
        assert [f.name for f in files] == ["rtdp.sqlite3", "rtdp.sqlite3-shm", "rtdp.sqlite3-wal"]
        assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}
    finally:
        db.close()

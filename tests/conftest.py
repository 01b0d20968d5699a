from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest

from rtdp.database import open_database
from rtdp.models import ALL_MODELS
from tests.support import postgres
from tests.support.env import forget_suite_variables, require
from tests.support.mosquitto import MOSQUITTO, Mosquitto, running_mosquitto
from tests.support.receivers import Mailbox, WebhookReceiver, smtp_server, webhook_receiver

# Read by the imports above; rtdp (in this process or one the suite starts) must not see them.
forget_suite_variables()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """One throwaway PostgreSQL database for the whole run."""
    reason = postgres.available()
    require(reason is None, f"PostgreSQL tests skipped: {reason}")
    with postgres.throwaway_database() as url:
        yield url


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[pw.Database]:
    db = open_database(f"sqlite:///{tmp_path / 'rtdp.sqlite3'}")
    yield db
    db.close()


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[pw.Database]:
    db = open_database(pg_url)
    yield db
    with db.atomic():
        for model in reversed(ALL_MODELS):
            model.delete().execute()
    db.close()


@pytest.fixture(params=["sqlite", "postgres"])
def any_db(request: pytest.FixtureRequest) -> pw.Database:
    """The same test on SQLite and on PostgreSQL."""
    return request.getfixturevalue("sqlite_db" if request.param == "sqlite" else "pg_db")  # type: ignore[no-any-return]


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    require(MOSQUITTO is not None, "mosquitto is not installed (apt-get install mosquitto)")
    with running_mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


# A webhook receiver and an SMTP server on free ports (the alert tests of the bridge and of rtdp serve).
@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with smtp_server() as box:
        yield box

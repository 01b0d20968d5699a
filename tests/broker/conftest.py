from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import peewee as pw
import pytest

from rtdp.accounts import ServiceAccount, create_token, create_user
from rtdp.models import Feed, User
from rtdp.permissions import Access
from rtdp.settings import Settings
from rtdp.store import create_feed
from tests.support.embedded import EmbeddedBrokerHandle, running_embedded_broker

PASSWORD = "1234"


@dataclass
class World:
    ep: User
    ap: User
    ep_feed: Feed
    ap_feed: Feed


def make_world() -> World:
    ep = create_user("ep@nothing.com", PASSWORD)
    ap = create_user("ap@nothing.com", PASSWORD)
    return World(ep, ap, create_feed("manual_feed_a", ep), create_feed("manual_feed_aj", ap))


@pytest.fixture
def world(sqlite_db: pw.Database) -> World:
    return make_world()


@pytest.fixture
def service(tmp_path: Path) -> ServiceAccount:
    return ServiceAccount.load_or_create(tmp_path / "data")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.build(env={}, data_dir=tmp_path / "data")


@pytest.fixture
def embedded(world: World, settings: Settings, service: ServiceAccount) -> Iterator[EmbeddedBrokerHandle]:
    with running_embedded_broker(settings, service) as handle:
        yield handle


def token_for(user: User, feed: Feed | None = None, access: Access | None = None) -> str:
    return create_token(user, feed=feed, access=access).token

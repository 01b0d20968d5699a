"""bridge.routes: a cache over rtdp.catalog on the writer's hot path - one dict lookup per message."""

from __future__ import annotations

import pytest

from bridge.errors import Rejected
from bridge.routes import Routes
from rtdp import catalog
from rtdp.models import Feed, User
from tests.bridge.conftest import make_feed


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The feed names the catalog had to read from the database."""
    seen: list[str] = []
    real = catalog.find_feed_row

    def counting(name: str) -> Feed | None:
        seen.append(name)
        return real(name)

    monkeypatch.setattr(catalog, "find_feed_row", counting)
    return seen


def test_a_known_topic_is_answered_from_the_cache(owner: User, lookups: list[str]) -> None:
    feed = make_feed(owner, "f")
    routes = Routes(catalog.Policy())
    first = routes.resolve("feeds/f/a")
    assert first.pending and first.feed_id == feed.id
    created = routes.with_axis("feeds/f/a", first)
    assert created.axis_id is not None and created.created
    assert [routes.resolve("feeds/f/a") for _ in range(3)] == [created] * 3
    assert routes.resolve("feeds/f/a", creator=owner.id) == created  # the owner needs no second look
    routes.resolve("feeds/f/b")  # another axis of a feed already read
    assert lookups == ["f"]
    routes.clear()
    routes.resolve("feeds/f/a")
    assert lookups == ["f", "f"]


def test_an_unknown_feed_costs_one_lookup_per_miss_ttl(owner: User, lookups: list[str]) -> None:
    routes = Routes(catalog.Policy(), miss_ttl=60.0)
    for _ in range(3):
        with pytest.raises(Rejected) as rejected:
            routes.resolve("feeds/nobody_knows/a")
        assert rejected.value.code == "unknown_feed" and rejected.value.detail == {}
    assert lookups == ["nobody_knows"]


def test_a_feed_made_for_its_creator_is_seen_at_once(owner: User, lookups: list[str]) -> None:
    """The miss remembered while the feed did not exist must not hide the feed once created."""
    routes = Routes(catalog.Policy(), miss_ttl=60.0)
    pending = routes.resolve("feeds/new/a", creator=owner.id)
    assert pending.feed_id is None and pending.casts == catalog.NEW_FEED.casts
    made = routes.with_axis("feeds/new/a", pending, creator=owner.id)
    assert made.owner_id == owner.id and Feed.get(Feed.name == "new").id == made.feed_id
    other_axis = routes.resolve("feeds/new/b")  # no creator now: the feed exists
    assert other_axis.feed_id == made.feed_id and other_axis.pending


def test_bad_topics_and_unknown_creators_are_rejected(owner: User) -> None:
    routes = Routes(catalog.Policy())
    with pytest.raises(Rejected) as bad:
        routes.resolve("feeds/f")
    assert bad.value.code == "bad_topic"
    with pytest.raises(Rejected) as unknown:
        routes.resolve("feeds/new/a", creator=owner.id + 1000)
    assert (unknown.value.code, unknown.value.message) == ("forbidden", "unknown user: no feed created")

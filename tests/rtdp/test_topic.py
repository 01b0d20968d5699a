from __future__ import annotations

import pytest

from rtdp.errors import InvalidInput
from rtdp.topic import FeedTopic, check_name, errors_topic, feed_of_filter, stored_topic


@pytest.mark.parametrize("name", ["a", "A-b_c.d", "x" * 64, "manual_feed_a", "0", "sin.wave-1"])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "x" * 65, "a/b", "a+b", "a#", "+", "#", "with space", "é", ".", "..", "a\nb", "a$b", "a:b", "\x00"],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_name(name, "feed")
    assert caught.value.detail["field"] == "feed"


def test_invalid_name_of_wrong_type() -> None:
    with pytest.raises(InvalidInput):
        check_name(None, "axis")  # type: ignore[arg-type]


def test_parse_feed_topic() -> None:
    topic = FeedTopic.parse("feeds/manual_feed_a/axis_a00")
    assert topic == FeedTopic("manual_feed_a", "axis_a00")
    assert str(topic) == "feeds/manual_feed_a/axis_a00"
    assert topic.errors_topic == "rtdp/errors/manual_feed_a/axis_a00"


@pytest.mark.parametrize(
    "topic",
    [
        "feeds/a", "feeds/a/b/c", "feeds", "other/a/b", "/feeds/a/b", "feeds/a/b/", "feeds//b", "feeds/a/+",
        "feeds/#/b", "Feeds/a/b", "feeds/" + "x" * 65 + "/b", "feeds/a/" + "x" * 300,
    ],
)
def test_bad_topics(topic: str) -> None:
    with pytest.raises(InvalidInput):
        FeedTopic.parse(topic)


def test_topic_builders() -> None:
    assert stored_topic("f") == "rtdp/stored/f"
    assert errors_topic("f", "a") == "rtdp/errors/f/a"


@pytest.mark.parametrize(
    ("topic", "feed"),
    [
        ("feeds/f1/a", "f1"),
        ("feeds/f1/#", "f1"),
        ("feeds/f1/+", "f1"),
        ("feeds/f1", "f1"),
        ("rtdp/stored/f2", "f2"),
        ("rtdp/errors/f3/a", "f3"),
        ("rtdp/errors/f3/#", "f3"),
        ("feeds/#", None),
        ("feeds/+/a", None),
        ("rtdp/stored/+", None),
        ("rtdp/stored/#", None),
        ("rtdp/#", None),
        ("#", None),
        ("other/f/a", None),
        ("rtdp/other/f", None),
        ("feeds/bad name/a", None),
    ],
)
def test_feed_of_filter(topic: str, feed: str | None) -> None:
    assert feed_of_filter(topic) == feed

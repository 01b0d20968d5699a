from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtdp.casts import XCast, YCast
from rtdp.codec import Casts
from rtdp.notices import (
    AxisOf,
    ErrorNotice,
    StoredEvent,
    decode_error,
    decode_stored,
    decode_stored_notice,
    encode_error,
    encode_stored,
    stream_data,
)
from rtdp.store import StoredPoint
from rtdp.topic import NAME_RE

names = st.from_regex(NAME_RE, fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False)
ids = st.integers(min_value=1, max_value=2**62)


def test_the_stored_notice_is_the_bytes_subscribers_read() -> None:
    axes = {7: AxisOf("f", "a", YCast.FLOAT), 8: AxisOf("f", "b", YCast.FLOAT), 9: AxisOf("g", "c", YCast.INT)}
    points = [StoredPoint(1, 7, 1.5, 2.25), StoredPoint(2, 8, 3.0, -1.0), StoredPoint(3, 9, 4.0, 12.0)]
    assert encode_stored(points, axes) == {
        "f": b'[{"id":1,"axis":"a","x":1.5,"y":2.25},{"id":2,"axis":"b","x":3.0,"y":-1.0}]',
        "g": b'[{"id":3,"axis":"c","x":4.0,"y":12}]',
    }
    # One feed, one y type (the writer's fast path); a feed without points gets no notice.
    bools = {5: AxisOf("door", "state", YCast.BOOL), 6: AxisOf("quiet", "a", YCast.FLOAT)}
    assert encode_stored([StoredPoint(4, 5, 10.0, 1.0)], bools) == {
        "door": b'[{"id":4,"axis":"state","x":10.0,"y":1}]'
    }


def test_a_stored_notice_says_which_head_it_follows() -> None:
    """The first point of each feed's notice carries `after`, the feed's newest id before the commit."""
    axes = {7: AxisOf("f", "a", YCast.FLOAT), 8: AxisOf("f", "b", YCast.FLOAT), 9: AxisOf("g", "c", YCast.INT)}
    points = [StoredPoint(11, 7, 1.5, 2.25), StoredPoint(12, 8, 3.0, -1.0), StoredPoint(13, 9, 4.0, 12.0)]
    notices = encode_stored(points, axes, {7: 5, 8: 5, 9: None})
    assert notices == {
        "f": b'[{"id":11,"axis":"a","x":1.5,"y":2.25,"after":5},{"id":12,"axis":"b","x":3.0,"y":-1.0}]',
        "g": b'[{"id":13,"axis":"c","x":4.0,"y":12}]',
    }
    assert decode_stored_notice(notices["f"]) == ([StoredEvent(11, "a", 1.5, 2.25), StoredEvent(12, "b", 3.0, -1.0)], 5)
    assert decode_stored_notice(notices["g"]) == ([StoredEvent(13, "c", 4.0, 12.0)], None)
    assert decode_stored_notice(b'[{"id":1,"axis":"a","x":1,"y":1,"after":true}]')[1] is None


@given(
    st.lists(
        st.tuples(ids, st.integers(0, 3), finite, finite),
        min_size=1,
        max_size=20,
    ),
    st.lists(st.tuples(names, st.sampled_from(list(YCast))), min_size=4, max_size=4),
)
def test_a_stored_notice_decodes_to_the_points_encoded(
    rows: list[tuple[int, int, float, float]], axes_of: list[tuple[str, YCast]]
) -> None:
    # Four axes over two feeds, in every mix of y types.
    axes = {index: AxisOf(f"feed{index % 2}", name, y_cast) for index, (name, y_cast) in enumerate(axes_of)}
    points = [StoredPoint(point_id, axis_id, x, y) for point_id, axis_id, x, y in rows]
    decoded = {feed: decode_stored(payload) for feed, payload in encode_stored(points, axes).items()}
    expected: dict[str, list[StoredEvent]] = {}
    for point in points:
        where = axes[point.axis_id]
        y = float(int(point.y)) if where.y_cast is not YCast.FLOAT else point.y
        expected.setdefault(where.feed, []).append(StoredEvent(point.id, where.axis, point.x, y))
    assert decoded == expected


def test_decoding_a_stored_notice_skips_malformed_points() -> None:
    payload = b'[{"id":1,"axis":"a","x":1,"y":2},{"id":"x"},7,{"axis":"a"}]'
    assert decode_stored(payload) == [StoredEvent(1, "a", 1.0, 2.0)]
    assert decode_stored(b'{"id":1}') == []
    with pytest.raises(ValueError):
        decode_stored(b"not json")


def test_a_stream_event_shows_the_point_in_the_feeds_casts() -> None:
    event = StoredEvent(3, "a", 12.0, 1.0)
    assert stream_data(event, Casts(XCast.INT, YCast.BOOL)) == '{"id": 3, "axis": "a", "x": 12, "y": 1}'
    assert stream_data(event, Casts(XCast.DATETIME, YCast.FLOAT)) == '{"id": 3, "axis": "a", "x": 12.0, "y": 1.0}'


def test_the_error_notice_is_the_bytes_subscribers_read() -> None:
    notice = ErrorNotice.of("y is required", "invalid", {"field": "y"}, "feeds/f/a", b'{"x":1}')
    assert encode_error(notice) == (
        b'{"error":"y is required","code":"invalid","field":"y","topic":"feeds/f/a","payload":"{\\"x\\":1}"}'
    )


def test_an_error_notice_shows_the_start_of_what_came() -> None:
    notice = ErrorNotice.of("too long", "invalid", {"topic": "shadowed"}, "t" * 300, "é".encode() * 500)
    assert notice.payload == "é" * 200
    assert notice.topic == "t" * 256
    assert notice.detail == {}
    broken = ErrorNotice.of("bad", "invalid", {}, "feeds/f/a", b"\xff\xfe")
    assert broken.payload == "\ufffd\ufffd"


json_values = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)


@given(
    st.text(max_size=50),
    names,
    st.text(max_size=300),
    st.binary(max_size=1000),
    st.dictionaries(st.text(max_size=10), json_values, max_size=4),
)
def test_an_error_notice_round_trips(
    error: str, code: str, topic: str, payload: bytes, detail: dict[str, object]
) -> None:
    notice = ErrorNotice.of(error, code, detail, topic, payload)
    assert decode_error(encode_error(notice)) == notice
    assert json.loads(encode_error(notice))["code"] == code


@pytest.mark.parametrize("payload", [b"[]", b'{"error":"e","code":"c","topic":"t"}', b'{"error":1,"code":"c",'
                                     b'"topic":"t","payload":""}', b"nope"])
def test_decoding_refuses_what_is_no_error_notice(payload: bytes) -> None:
    with pytest.raises(ValueError):
        decode_error(payload)

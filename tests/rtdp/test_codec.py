from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtdp import codec
from rtdp.casts import MAX_EPOCH, MIN_EPOCH, XCast, YCast
from rtdp.codec import MAX_BATCH, Casts, Sample, decode, encode, repeated_x, sample_from_fields
from rtdp.errors import InvalidInput, PayloadTooLarge

NOW = 1_700_000_000.5
DT_FLOAT = Casts(XCast.DATETIME, YCast.FLOAT)
FLOAT_FLOAT = Casts(XCast.FLOAT, YCast.FLOAT)
INT_INT = Casts(XCast.INT, YCast.INT)


def dec(payload: bytes | str, casts: Casts = DT_FLOAT, **kw: object) -> list[Sample]:
    return decode(payload, casts, now=NOW, tz=UTC, **kw)  # type: ignore[arg-type]


def epoch(*args: int, tz: timezone | ZoneInfo = UTC) -> float:
    return datetime(*args, tzinfo=tz).timestamp()  # type: ignore[misc]


# -- the payload forms --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "y"),
    [(b"3.14", 3.14), (b" -2 ", -2.0), (b"1e3", 1000.0), ('"4.5"', 4.5), ("7", 7.0)],
)
def test_bare_number_gets_delivery_time(payload: bytes | str, y: float) -> None:
    assert dec(payload) == [Sample(NOW, y)]


@pytest.mark.parametrize(
    ("payload", "y"),
    [
        ("true", 1.0), ("false", 0.0), ("open", 1.0), ("closed", 0.0), ("ON", 1.0), ("off", 0.0),
        ("1", 1.0), ("0", 0.0), ('{"y": true}', 1.0), ('{"y": 0}', 0.0), ('{"y": "Open"}', 1.0),
    ],
)
def test_bool_forms(payload: str, y: float) -> None:
    assert dec(payload, Casts(XCast.DATETIME, YCast.BOOL)) == [Sample(NOW, y)]


@pytest.mark.parametrize("payload", ["maybe", "2", '{"y": 0.5}', '{"y": "yes please"}', "-1"])
def test_bool_rejects_other_values(payload: str) -> None:
    with pytest.raises(InvalidInput, match="boolean"):
        dec(payload, Casts(XCast.DATETIME, YCast.BOOL))


def test_bare_word_on_float_feed_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="y must be a number"):
        dec("open")


def test_json_object_without_x_uses_delivery_time() -> None:
    assert dec('{"y": 3.14}') == [Sample(NOW, 3.14)]


def test_json_object_with_x() -> None:
    assert dec('{"x": "2014-11-22T10:50:42Z", "y": 1}') == [Sample(epoch(2014, 11, 22, 10, 50, 42), 1.0)]


def test_json_object_unknown_field_rejected() -> None:
    with pytest.raises(InvalidInput, match="unknown field"):
        dec('{"y": 1, "z": 2}')


def test_json_object_without_y_rejected() -> None:
    with pytest.raises(InvalidInput, match="y is required"):
        dec('{"x": 1}')


@pytest.mark.parametrize("payload", ['"just text"', "null", "[1, 2]", '[{"y": 1}, 5]'])
def test_json_that_is_not_a_point_is_rejected(payload: str) -> None:
    with pytest.raises(InvalidInput):
        dec(payload)


def test_json_array_batch() -> None:
    payload = json.dumps([{"x": 1, "y": 2}, {"x": 2.5, "y": -1}, {"x": "3", "y": "4"}])
    assert dec(payload, FLOAT_FLOAT) == [Sample(1.0, 2.0), Sample(2.5, -1.0), Sample(3.0, 4.0)]


def test_batch_with_one_bad_element_is_rejected_whole_and_names_the_index() -> None:
    payload = json.dumps([{"x": 1, "y": 1}, {"x": 2, "y": 2}, {"x": 3, "y": "high"}, {"x": 4, "y": 4}])
    with pytest.raises(InvalidInput) as caught:
        dec(payload, FLOAT_FLOAT)
    assert "element 2" in caught.value.message
    assert caught.value.detail["index"] == 2
    assert caught.value.detail["field"] == "y"


def test_empty_batch_rejected() -> None:
    with pytest.raises(InvalidInput, match="empty batch"):
        dec("[]")


def test_batch_limit() -> None:
    payload = json.dumps([{"x": i, "y": 0} for i in range(MAX_BATCH + 1)])
    with pytest.raises(InvalidInput, match="exceeds the limit"):
        dec(payload, FLOAT_FLOAT, max_size=10**7)


def test_text_lines() -> None:
    payload = "1,10\n2, 20\r\n\n 3 ,30\n"
    assert dec(payload, FLOAT_FLOAT) == [Sample(1.0, 10.0), Sample(2.0, 20.0), Sample(3.0, 30.0)]


def test_text_line_with_iso_time() -> None:
    assert dec("2014-11-22 10:50:42.189000,5") == [Sample(epoch(2014, 11, 22, 10, 50, 42) + 0.189, 5.0)]


def test_single_text_line() -> None:
    assert dec("4,2", FLOAT_FLOAT) == [Sample(4.0, 2.0)]


def test_text_line_bad_value_names_the_line() -> None:
    with pytest.raises(InvalidInput) as caught:
        dec("1,1\n2,x\n", FLOAT_FLOAT)
    assert "line 2" in caught.value.message
    assert caught.value.detail["line"] == 2


def test_text_line_with_three_fields_rejected() -> None:
    with pytest.raises(InvalidInput, match="expected 'x,y'"):
        dec("1,2,3", FLOAT_FLOAT)


def test_text_lines_on_int_feed_missing_x_rejected() -> None:
    with pytest.raises(InvalidInput, match="x is required"):
        dec("5", INT_INT)


@pytest.mark.parametrize("payload", [b"", b"   ", "\n\n", b"\n \n"])
def test_empty_payload(payload: bytes | str) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        dec(payload)


def test_oversize_payload() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        dec(b"1" * 101, max_size=100)
    assert caught.value.status == 413
    assert dec(b" " * 97 + b"1.5", max_size=100) == [Sample(NOW, 1.5)]


@pytest.mark.parametrize("payload", ["{", "[{]", '{"y": 1,}', "{'y': 1}", "[" * 100_000])
def test_invalid_json(payload: str) -> None:
    with pytest.raises(InvalidInput):
        dec(payload, max_size=10**6)


def test_non_utf8() -> None:
    with pytest.raises(InvalidInput, match="UTF-8"):
        dec(b"\xff\xfe3")


@pytest.mark.parametrize("payload", ["NaN", "nan", "inf", "-Infinity", '{"y": NaN}', '[{"y": Infinity}]',
                                     '{"y": "nan"}', '{"y": 1e400}', '{"x": NaN, "y": 1}'])
def test_non_finite_rejected(payload: str) -> None:
    with pytest.raises(InvalidInput):
        dec(payload)


def test_int_rejects_fraction() -> None:
    with pytest.raises(InvalidInput, match="integer"):
        dec('{"x": 1, "y": 3.5}', INT_INT)
    with pytest.raises(InvalidInput, match="integer"):
        dec('{"x": 1.5, "y": 3}', INT_INT)
    assert dec('{"x": 1, "y": 3.0}', INT_INT) == [Sample(1.0, 3.0)]


def test_missing_x_on_float_feed_rejected() -> None:
    with pytest.raises(InvalidInput, match="x is required"):
        dec('{"y": 1}', FLOAT_FLOAT)


# -- x for datetime feeds -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        ("2014-11-22 10:50:42.189000", epoch(2014, 11, 22, 10, 50, 42) + 0.189),
        ("2014-11-22T10:50:42Z", epoch(2014, 11, 22, 10, 50, 42)),
        ("2014-11-22T10:50:42", epoch(2014, 11, 22, 10, 50, 42)),
        ("2014-11-22T10:50:42.5+02:00", epoch(2014, 11, 22, 8, 50, 42) + 0.5),
        ("2014-11-22 10:50:42-05:30", epoch(2014, 11, 22, 16, 20, 42)),
        ("2014-11-22", epoch(2014, 11, 22, 0, 0, 0)),
        ("1416653442", 1416653442.0),
        ("1416653442.25", 1416653442.25),
        (1416653442, 1416653442.0),
        (1416653442.5, 1416653442.5),
    ],
)
def test_datetime_x_forms(x: object, expected: float) -> None:
    got = dec(json.dumps({"x": x, "y": 1}))[0].x
    assert math.isclose(got, expected, abs_tol=1e-6)


def test_naive_time_is_in_the_configured_zone() -> None:
    tz = ZoneInfo("Europe/Berlin")
    got = decode('{"x": "2014-07-01 12:00:00", "y": 1}', DT_FLOAT, now=NOW, tz=tz)[0].x
    assert got == datetime(2014, 7, 1, 10, 0, 0, tzinfo=UTC).timestamp()  # CEST is UTC+2 in July
    # An explicit offset wins over the configured zone.
    got = decode('{"x": "2014-07-01 12:00:00Z", "y": 1}', DT_FLOAT, now=NOW, tz=tz)[0].x
    assert got == datetime(2014, 7, 1, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("x", ["yesterday", "2014-13-01T00:00:00", "", "12:00", "x" * 50, True, [1]])
def test_bad_datetime_x(x: object) -> None:
    payload = json.dumps({"x": x, "y": 1})
    if x == "":
        assert dec(payload) == [Sample(NOW, 1.0)]  # empty x means "now", as a missing one
        return
    with pytest.raises(InvalidInput):
        dec(payload)


@pytest.mark.parametrize("x", [MIN_EPOCH - 1, MAX_EPOCH + 1])
def test_epoch_out_of_range(x: float) -> None:
    with pytest.raises(InvalidInput, match="out of range"):
        dec(json.dumps({"x": x, "y": 1}))


# -- sample_from_fields and encode ------------------------------------------------------------------


def test_sample_from_fields() -> None:
    assert sample_from_fields("2", "3", FLOAT_FLOAT, now=NOW, tz=UTC) == Sample(2.0, 3.0)
    assert sample_from_fields(None, "3", DT_FLOAT, now=NOW, tz=UTC) == Sample(NOW, 3.0)
    with pytest.raises(InvalidInput, match="y is required"):
        sample_from_fields("2", "", FLOAT_FLOAT, now=NOW, tz=UTC)


def test_encode_is_canonical_and_always_has_x() -> None:
    samples = [Sample(NOW, 1.0), Sample(NOW + 1, -2.5)]
    payload = encode(samples)
    assert json.loads(payload) == [{"x": NOW, "y": 1.0}, {"x": NOW + 1, "y": -2.5}]
    # Decoding at another time gives the same samples: a redelivery stores the same points.
    assert decode(payload, DT_FLOAT, now=NOW + 3600, tz=UTC) == samples


# -- properties -----------------------------------------------------------------------------------

ALL_CASTS = st.builds(Casts, st.sampled_from(list(XCast)), st.sampled_from(list(YCast)))
ZONES = st.sampled_from([UTC, ZoneInfo("Europe/Berlin"), timezone(timedelta(hours=-7))])


@settings(max_examples=300, deadline=None)
@given(payload=st.one_of(st.binary(max_size=200), st.text(max_size=200)), casts=ALL_CASTS, tz=ZONES)
def test_decode_raises_only_invalid_input(payload: bytes | str, casts: Casts, tz: timezone) -> None:
    try:
        samples = decode(payload, casts, now=NOW, tz=tz, max_size=150)
    except InvalidInput:
        return
    assert samples
    assert all(math.isfinite(s.x) and math.isfinite(s.y) for s in samples)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["x", "y", "z"]), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(document=JSONISH, casts=ALL_CASTS)
def test_decode_of_arbitrary_json_raises_only_invalid_input(document: object, casts: Casts) -> None:
    try:
        decode(json.dumps(document), casts, now=NOW, tz=UTC)
    except InvalidInput:
        pass


def _y_values(cast: YCast) -> st.SearchStrategy[float]:
    if cast is YCast.BOOL:
        return st.sampled_from([0.0, 1.0])
    if cast is YCast.INT:
        return st.integers(-(2**53), 2**53).map(float)
    return st.floats(allow_nan=False, allow_infinity=False)


def _x_values(cast: XCast) -> st.SearchStrategy[float]:
    if cast is XCast.DATETIME:
        return st.floats(MIN_EPOCH, MAX_EPOCH)
    if cast is XCast.INT:
        return st.integers(-(2**53), 2**53).map(float)
    return st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def casts_and_samples(draw: st.DrawFn) -> tuple[Casts, list[Sample]]:
    # Distinct x: a batch repeating an x is refused (codec.repeated_x).
    casts = draw(ALL_CASTS)
    points = st.builds(Sample, _x_values(casts.x), _y_values(casts.y))
    samples = draw(st.lists(points, min_size=1, max_size=20, unique_by=lambda s: s.x))
    return casts, samples


@settings(max_examples=300, deadline=None)
@given(case=casts_and_samples())
def test_valid_points_round_trip_through_encode(case: tuple[Casts, list[Sample]]) -> None:
    casts, samples = case
    assert decode(encode(samples), casts, now=NOW, tz=UTC, max_size=10**6) == samples


# -- the fast path for JSON objects agrees with the general path -------------------------------------

NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),  # JSON has none (1e400 is below)
    st.integers(),
    st.integers(2**1023 - 2, 2**1024 + 2),
    st.integers(-(2**53) - 2, -(2**53) + 2),
    st.integers(2**53 - 2, 2**53 + 2),
    st.sampled_from([MIN_EPOCH, MAX_EPOCH, MIN_EPOCH - 1, MAX_EPOCH + 1, 0.5, -0.0, 1.0, 0, 1, 2]),
)
POINT_VALUES = st.one_of(NUMBERS, st.booleans(), st.none(), st.text(max_size=8), st.sampled_from(["1", "open", ""]))
POINTS = st.dictionaries(st.sampled_from(["x", "y", "z"]), POINT_VALUES, max_size=3)


def _general(document: object, casts: Casts) -> Sample | str:
    """The general path alone (what every element went through before the fast path existed)."""
    from rtdp.codec import _from_object

    try:
        return _from_object(document, casts, NOW, UTC)
    except InvalidInput as exc:
        return exc.message


@settings(max_examples=500, deadline=None)
@given(points=st.lists(POINTS, min_size=1, max_size=6), casts=ALL_CASTS)
def test_fast_path_agrees_with_the_general_path(points: list[dict[str, object]], casts: Casts) -> None:
    expected = [_general(p, casts) for p in points]
    errors = [(i, e) for i, e in enumerate(expected) if isinstance(e, str)]
    payload = json.dumps(points)
    if errors:
        index, message = errors[0]
        with pytest.raises(InvalidInput) as caught:
            dec(payload, casts)
        assert caught.value.message == f"element {index}: {message}"
        assert caught.value.detail["index"] == index
    elif (repeat := repeated_x([e for e in expected if not isinstance(e, str)])) is not None:
        with pytest.raises(InvalidInput, match=f"element {repeat[1]}: same x as element {repeat[0]}"):
            dec(payload, casts)  # one x twice: refused whatever path decoded it
    else:
        assert dec(payload, casts) == expected
    # A single object: the same samples, or the same error without an element index.
    single = expected[0]
    if isinstance(single, str):
        with pytest.raises(InvalidInput) as caught:
            dec(json.dumps(points[0]), casts)
        assert caught.value.message == single
    else:
        assert dec(json.dumps(points[0]), casts) == [single]


@pytest.mark.parametrize("casts", [DT_FLOAT, FLOAT_FLOAT, INT_INT])
def test_fast_path_overflowing_numbers_get_the_general_error(casts: Casts) -> None:
    for payload, general in [
        ('[{"x": 1, "y": 1e400}]', {"x": 1, "y": math.inf}),
        ('[{"x": -1e400, "y": 1}]', {"x": -math.inf, "y": 1}),
    ]:
        with pytest.raises(InvalidInput) as caught:
            dec(payload, casts)
        assert caught.value.message == f"element 0: {_general(general, casts)}"


_EDGES: list[object] = [
    0, 1, 2, -1, 0.0, 1.0, 0.5, -0.0, 3.5, 2**53, 2**53 + 1, -(2**53), -(2**53) - 1, float(2**53), float(2**53) * 2,
    MIN_EPOCH, MAX_EPOCH, MIN_EPOCH - 1, MAX_EPOCH + 1, int(MIN_EPOCH), int(MAX_EPOCH), int(MAX_EPOCH) + 1,
    int(MIN_EPOCH) - 1, 1e308, -1e308, 2**1023, 2**1024, True, False, None, "", "1", "true", [1], {"y": 1},
]


@pytest.mark.parametrize("casts", [Casts(x, y) for x in XCast for y in YCast], ids=str)
def test_fast_path_agrees_with_the_general_path_on_edge_values(casts: Casts) -> None:
    missing = object()
    for x in [missing, *_EDGES]:
        for y in [missing, *_EDGES]:
            point = {k: v for k, v in (("x", x), ("y", y)) if v is not missing}
            expected = _general(point, casts)
            try:
                got: Sample | str = dec(json.dumps([point]), casts)[0]
            except InvalidInput as exc:
                got = exc.message.removeprefix("element 0: ")
            assert got == expected, point


def test_fast_path_keeps_going_after_an_element_it_leaves_to_the_general_path() -> None:
    payload = json.dumps([{"x": 1, "y": 1}, {"x": "2", "y": "2"}, {"x": 3, "y": 3.0}, {"y": 4}])
    assert dec(payload, Casts(XCast.DATETIME, YCast.INT)) == [
        Sample(1.0, 1.0), Sample(2.0, 2.0), Sample(3.0, 3.0), Sample(NOW, 4.0)
    ]


@pytest.mark.parametrize(
    "text",
    [
        '{"x":1,"y":2}', "[1,2]", '"text"', "{", '{"y":1} {"y":2}', '{"y":1}x', '{"y":NaN}', '[{"y":-Infinity}]',
        "[" * 5000 + "]" * 5000, '{"y":1e999}', '{"y":"\\ud800"}', "{}", "[]", "[1,]", '{"y":01}', "nul",
    ],
)
def test_json_parsing_matches_the_decoder_exactly(text: str) -> None:
    """The scanner shortcut gives the decoder's result, or raises its very error."""

    def outcome(parse: Callable[[str], object]) -> object:
        try:
            return ("ok", parse(text))
        except (ValueError, RecursionError) as exc:
            return (type(exc), str(exc))

    assert outcome(codec._parse_json) == outcome(codec._DECODER.decode)


# Issue 11 #12: a JSON array without x on a datetime feed gave every point the same x, and the store kept
# one of them; the HTTP batch API refuses such a batch, and decode (MQTT) gives the same answer.


def test_a_batch_without_x_on_a_datetime_feed_is_refused_not_collapsed() -> None:
    with pytest.raises(InvalidInput) as caught:
        dec(json.dumps([{"y": value} for value in range(100)]))
    assert caught.value.message == "element 1: same x as element 0; give each point its own x"
    assert caught.value.detail == {"index": 1, "field": "x"}


def test_a_batch_repeating_an_x_names_the_second_element() -> None:
    payload = json.dumps([{"x": 1, "y": 1}, {"x": 2, "y": 2}, {"x": 1.0, "y": 3}])
    with pytest.raises(InvalidInput, match="element 2: same x as element 0") as caught:
        dec(payload, FLOAT_FLOAT)
    assert caught.value.detail["index"] == 2


def test_text_lines_repeating_an_x_name_the_lines() -> None:
    with pytest.raises(InvalidInput, match="line 3: same x as line 1") as caught:
        dec("1,10\n\n1,20\n", FLOAT_FLOAT)
    assert caught.value.detail == {"line": 3, "field": "x"}


def test_one_point_without_x_and_distinct_xs_are_fine() -> None:
    assert dec('[{"y": 1}]') == [Sample(NOW, 1.0)]
    assert repeated_x([Sample(1.0, 0.0), Sample(2.0, 0.0)]) is None
    assert repeated_x([Sample(1.0, 0.0), Sample(2.0, 0.0), Sample(2.0, 1.0)]) == (1, 2)

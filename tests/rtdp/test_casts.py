from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rtdp.casts import MAX_EXACT_INT, XCast, YCast, cast_x, cast_y, format_x, parse_datetime, y_json
from rtdp.errors import InvalidInput


@pytest.mark.parametrize("value", [3.5, "3.5", "1e400", float("nan"), float("inf"), None, True, "", "  ", [], "0x10"])
def test_int_y_rejects(value: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        cast_y(value, YCast.INT)
    assert caught.value.detail["field"] == "y"


@pytest.mark.parametrize(("value", "expected"), [(3, 3.0), ("3", 3.0), (" -4 ", -4.0), (3.0, 3.0), ("1e3", 1000.0)])
def test_int_y_accepts(value: object, expected: float) -> None:
    assert cast_y(value, YCast.INT) == expected


def test_int_y_beyond_exact_doubles_rejected() -> None:
    assert cast_y(MAX_EXACT_INT, YCast.INT) == float(MAX_EXACT_INT)
    with pytest.raises(InvalidInput, match="too large"):
        cast_y(MAX_EXACT_INT * 4, YCast.INT)


@pytest.mark.parametrize("value", [float("nan"), float("-inf"), "NaN", "Infinity", 10**400, True, None, {}])
def test_float_y_rejects_non_finite_and_non_numbers(value: object) -> None:
    with pytest.raises(InvalidInput):
        cast_y(value, YCast.FLOAT)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, 1.0), (False, 0.0), (1, 1.0), (0.0, 0.0), ("Yes", 1.0), ("no", 0.0), (" CLOSED ", 0.0), ("close", 0.0)],
)
def test_bool_y(value: object, expected: float) -> None:
    assert cast_y(value, YCast.BOOL) == expected


def test_x_casts() -> None:
    assert cast_x("2", XCast.INT, UTC) == 2.0
    assert cast_x(2.5, XCast.FLOAT, UTC) == 2.5
    with pytest.raises(InvalidInput, match="integer"):
        cast_x("2.5", XCast.INT, UTC)
    with pytest.raises(InvalidInput):
        cast_x("2014-01-01", XCast.FLOAT, UTC)
    with pytest.raises(InvalidInput, match="finite"):
        cast_x("inf", XCast.DATETIME, UTC)


def test_parse_datetime_fraction_and_offset() -> None:
    assert parse_datetime("2014-11-22T10:50:42.189+00:00", UTC) == datetime(
        2014, 11, 22, 10, 50, 42, 189000, tzinfo=UTC
    ).timestamp()


def test_format_x_and_y_json() -> None:
    x = datetime(2014, 11, 22, 10, 50, 42, tzinfo=UTC).timestamp()
    assert format_x(x, XCast.DATETIME) == "2014-11-22T10:50:42Z"
    assert format_x(3.0, XCast.INT) == "3"
    assert format_x(3.25, XCast.FLOAT) == "3.25"
    assert y_json(3.0, YCast.INT) == 3 and isinstance(y_json(3.0, YCast.INT), int)
    assert isinstance(y_json(1.0, YCast.BOOL), int)
    assert isinstance(y_json(3.0, YCast.FLOAT), float)

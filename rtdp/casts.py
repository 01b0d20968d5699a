"""Casts: how a feed turns the text or JSON it receives into the numbers it stores.

x is stored as a float: for `datetime` feeds, UTC epoch seconds with microseconds.
y is stored as a float: `int` feeds hold integral values, `bool` feeds 0.0 or 1.0.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, tzinfo
from enum import StrEnum

from rtdp.errors import InvalidInput

# Doubles hold integers exactly up to 2**53; beyond that an `int` feed would silently round.
MAX_EXACT_INT = 2**53
# Epoch bounds: year 1 to 9999, so every stored x can be rendered back as a date.
MIN_EPOCH = -62135596800.0
MAX_EPOCH = 253402300799.0

TRUE_WORDS = frozenset({"true", "1", "on", "open", "yes"})
FALSE_WORDS = frozenset({"false", "0", "off", "closed", "close", "no"})


class XCast(StrEnum):
    DATETIME = "datetime"
    FLOAT = "float"
    INT = "int"


class YCast(StrEnum):
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"


# A module constant: CPython does not fold 2**1023 (too large), so inline it cost a big-int power per value.
_FLOAT_INT_LIMIT = 2**1023


def _number(value: object, what: str) -> float:
    """A finite float from a JSON number or numeric text; bools are not numbers here."""
    if isinstance(value, bool) or value is None:
        raise InvalidInput(f"{what} must be a number, got {value!r}", field=what)
    if isinstance(value, int):
        number = float(value) if abs(value) <= _FLOAT_INT_LIMIT else math.inf
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 64:
            raise InvalidInput(f"{what} must be a number, got {_shown(value)}", field=what)
        try:
            number = float(text)
        except ValueError:
            raise InvalidInput(f"{what} must be a number, got {_shown(value)}", field=what) from None
    else:
        raise InvalidInput(f"{what} must be a number, got {type(value).__name__}", field=what)
    if not math.isfinite(number):
        raise InvalidInput(f"{what} must be finite, got {_shown(value)}", field=what)
    return number


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def cast_y(value: object, cast: YCast) -> float:
    if cast is YCast.BOOL:
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        if isinstance(value, int | float) and value in (0, 1):
            return float(value)
        if isinstance(value, str):
            word = value.strip().lower()
            if word in TRUE_WORDS:
                return 1.0
            if word in FALSE_WORDS:
                return 0.0
        raise InvalidInput(
            f"y must be a boolean (true/false, 1/0, on/off, open/closed), got {_shown(value)}", field="y"
        )
    number = _number(value, "y")
    if cast is YCast.INT:
        _check_int(number, value, "y")
    return number


def _check_int(number: float, value: object, name: str) -> None:
    # An int feed stores doubles: only whole numbers that a double holds exactly.
    if not number.is_integer():
        raise InvalidInput(f"{name} must be an integer for this feed, got {_shown(value)}", field=name)
    if abs(number) > MAX_EXACT_INT:
        raise InvalidInput(f"{name} is too large for an int feed: {_shown(value)}", field=name)


def parse_datetime(value: str, tz: tzinfo) -> float:
    """ISO 8601 (space or T, optional fraction and offset, Z) to UTC epoch seconds."""
    text = value.strip()
    if not text or len(text) > 40:
        raise InvalidInput(f"x must be an ISO 8601 time or epoch seconds, got {_shown(value)}", field="x")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"x must be an ISO 8601 time or epoch seconds, got {_shown(value)}", field="x"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    try:
        epoch = moment.timestamp()
    except (OverflowError, ValueError):
        raise InvalidInput(f"x is out of range: {_shown(value)}", field="x") from None
    # An offset can carry a time just inside year 1 or 9999 outside them in UTC (0001-01-01T00:00+01:00),
    # where no page or export could render it back.
    if not MIN_EPOCH <= epoch <= MAX_EPOCH:
        raise InvalidInput(f"x is out of range for a time: {_shown(value)}", field="x")
    return epoch


def cast_x(value: object, cast: XCast, tz: tzinfo) -> float:
    if cast is XCast.DATETIME:
        if isinstance(value, str):
            text = value.strip()
            try:
                number = float(text)
            except ValueError:
                return parse_datetime(text, tz)
            if not math.isfinite(number):
                raise InvalidInput(f"x must be finite, got {_shown(value)}", field="x")
        else:
            number = _number(value, "x")
        if not MIN_EPOCH <= number <= MAX_EPOCH:
            raise InvalidInput(f"x is out of range for a time: {_shown(value)}", field="x")
        return number
    number = _number(value, "x")
    if cast is XCast.INT:
        _check_int(number, value, "x")
    return number


def format_x(x: float, cast: XCast) -> str:
    """x as text for CSV: ISO 8601 UTC for datetime feeds, plain numbers otherwise."""
    if cast is XCast.DATETIME:
        return format_time(x, "auto")
    return format_number(x, integral=cast is XCast.INT)


def format_time(x: float, timespec: str) -> str:
    """Epoch seconds as ISO 8601 UTC (`2014-11-22T10:50:42.189000Z`); a time outside years 1-9999, which
    only older versions could store, as its epoch seconds, so a page or an export never breaks on it."""
    try:
        return datetime.fromtimestamp(x, UTC).isoformat(timespec=timespec).replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError):
        return repr(x)


def format_number(value: float, integral: bool) -> str:
    return str(int(value)) if integral else repr(value)


def y_json(value: float, cast: YCast) -> float | int:
    return int(value) if cast is not YCast.FLOAT else value

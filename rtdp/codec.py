"""Payload codec: the four payload forms a device may send, decoded and cast into samples."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import NamedTuple

from rtdp.casts import MAX_EPOCH, MAX_EXACT_INT, MIN_EPOCH, XCast, YCast, cast_x, cast_y
from rtdp.errors import InvalidInput, PayloadTooLarge

DEFAULT_MAX_PAYLOAD = 256 * 1024
MAX_BATCH = 10_000


class Sample(NamedTuple):
    """One validated point, before it has an id: x and y as stored. A NamedTuple: one is built per
    point, and a frozen dataclass's __init__ cost a tenth of the bridge's time for arrays of points."""

    x: float
    y: float


@dataclass(frozen=True, slots=True)
class Casts:
    x: XCast = XCast.DATETIME
    y: YCast = YCast.FLOAT


def decode(
    payload: bytes | str,
    casts: Casts,
    *,
    now: float,
    tz: tzinfo,
    max_size: int = DEFAULT_MAX_PAYLOAD,
) -> list[Sample]:
    """Decode a payload into samples: all or nothing. Raises only InvalidInput (or a subclass).

    `now` is the x used when a datetime feed's point has none (the time the broker delivered it).
    A batch with one bad element is rejected whole; the error names the element's index.
    """
    if len(payload) > max_size:
        raise PayloadTooLarge(f"payload of {len(payload)} bytes exceeds the limit of {max_size}")
    if isinstance(payload, bytes):
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("payload is not UTF-8 text") from None
    else:
        text = payload
    text = text.strip()
    if not text:
        raise InvalidInput("empty payload")
    head = text[0]
    if head in "{[":
        try:
            document = _parse_json(text)
        except (ValueError, RecursionError) as exc:
            raise InvalidInput(f"invalid JSON: {str(exc)[:120]}") from None
        if isinstance(document, list):
            return _batch(document, casts, now, tz)
        return _fast_path(casts)((document,), now, tz, _single)
    if "," in text or "\n" in text:
        return _lines(text.splitlines(), casts, now, tz)
    return [Sample(_default_x(casts, now), cast_y(_unquote(text), casts.y))]


def sample_from_fields(
    x: object | None, y: object | None, casts: Casts, *, now: float, tz: tzinfo
) -> Sample:
    """A sample from separate x and y values (query string, form, API body)."""
    if y is None or y == "":
        raise InvalidInput("y is required", field="y")
    x_value = _default_x(casts, now) if x is None or x == "" else cast_x(x, casts.x, tz)
    return Sample(x_value, cast_y(y, casts.y))


def repeated_x(samples: Sequence[Sample]) -> tuple[int, int] | None:
    """The first two positions in `samples` (one axis's points of one batch) with the same x, or None.

    A batch may give each x of an axis once: the store keeps one point per (axis, x), so a second one
    would replace the first and the batch would be counted as more points than are stored. Points
    without x on a datetime feed all get the same time, so such a batch must give each point its x.
    Every entrance asks this: MQTT (the writer) through `decode`, the HTTP batch API per axis."""
    if len(samples) < 2:
        return None
    xs = [sample.x for sample in samples]
    if len(set(xs)) == len(xs):
        return None
    seen: dict[float, int] = {}
    for position, x in enumerate(xs):
        first = seen.setdefault(x, position)
        if first != position:
            return first, position
    return None  # pragma: no cover  (the set said there is a repeat)


def encode(samples: Sequence[Sample]) -> bytes:
    """The canonical payload for samples: a JSON array, x always present (so redelivery is idempotent)."""
    if len(samples) == 1:
        # One point (every HTTP ingestion request): written directly, as the encoder writes it (a finite
        # float's repr is its JSON, and samples are finite), in a fifth of the encoder's time.
        x, y = samples[0]
        return b'[{"x":%r,"y":%r}]' % (x, y)
    return _ENCODE([{"x": s.x, "y": s.y} for s in samples]).encode()


# json.dumps with any keyword builds a new JSONEncoder per call: one, built once, for every payload.
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


# One decoder for every payload: json.loads with any keyword builds a new JSONDecoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_SCAN: Callable[[str, int], tuple[object, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def _parse_json(text: str) -> object:
    """`_DECODER.decode(text)` for a stripped `text`, without its Python wrapper (two regex matches and
    a call) around the C scanner: that wrapper took longer than the scanning of a one-point payload."""
    try:
        document, end = _SCAN(text, 0)
        if end == len(text):
            return document
    except (ValueError, RecursionError, StopIteration):
        pass
    # Invalid (or trailing data): the decoder's own checks give the error message.
    return _DECODER.decode(text)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def _default_x(casts: Casts, now: float) -> float:
    if casts.x is XCast.DATETIME:
        return now
    raise InvalidInput(f"x is required for feeds with x cast {casts.x.value!r}", field="x")


def _from_object(document: object, casts: Casts, now: float, tz: tzinfo) -> Sample:
    if not isinstance(document, Mapping):
        raise InvalidInput("a JSON point must be an object with 'y' and optionally 'x'")
    unknown = set(document) - {"x", "y"}
    if unknown:
        raise InvalidInput(f"unknown field(s) in point: {', '.join(sorted(map(str, unknown)))[:80]}")
    return sample_from_fields(document.get("x"), document.get("y"), casts, now=now, tz=tz)


def _batch(items: list[object], casts: Casts, now: float, tz: tzinfo) -> list[Sample]:
    if not items:
        raise InvalidInput("empty batch")
    if len(items) > MAX_BATCH:
        raise InvalidInput(f"batch of {len(items)} points exceeds the limit of {MAX_BATCH}")
    samples = _fast_path(casts)(items, now, tz, _element)
    repeat = repeated_x(samples)
    if repeat is not None:
        first, index = repeat
        raise InvalidInput(
            f"element {index}: same x as element {first}; give each point its own x", index=index, field="x"
        )
    return samples


def _element(index: int, item: object, casts: Casts, now: float, tz: tzinfo) -> Sample:
    try:
        return _from_object(item, casts, now, tz)
    except InvalidInput as exc:
        raise InvalidInput(f"element {index}: {exc.message}", index=index, **exc.detail) from None


def _single(index: int, item: object, casts: Casts, now: float, tz: tzinfo) -> Sample:
    return _from_object(item, casts, now, tz)


_Slow = Callable[[int, object, Casts, float, tzinfo], Sample]
_FastPath = Callable[[Sequence[object], float, tzinfo, _Slow], list[Sample]]


def _fast_path(casts: Casts) -> _FastPath:
    """The decoding loop for JSON point objects, specialised for `casts` (cached: nine combinations)."""
    global _LAST_FAST
    last = _LAST_FAST
    if last is not None and last[0] is casts:
        return last[1]
    fast = _FAST_PATHS.get(casts)
    if fast is None:
        fast = _FAST_PATHS[casts] = _make_fast_path(casts)
    _LAST_FAST = (casts, fast)
    return fast


def _make_fast_path(casts: Casts) -> _FastPath:
    """A loop over JSON point objects that handles those whose x and y are plain numbers in range
    inline: the same result as `_from_object`, without its calls and checks per element (batches of 100
    points spent most of their decoding time there). Any other element (strings, bools, a missing or
    unknown field, a value out of range, NaN) goes to `slow`, the general path, so every error message
    and every unusual but valid form stays exactly as it was.

    Bounds are inclusive, as in rtdp.casts; NaN fails every comparison; ints beyond 2**53 are left to
    the general path (float() of them may round or overflow).
    """
    x_default = casts.x is XCast.DATETIME
    y_words = casts.y is YCast.BOOL  # true/false are values only for bool feeds
    xf_lo, xf_hi, x_integral, xi_lo, xi_hi = _X_RANGES[casts.x]
    yf_lo, yf_hi, y_integral, yi_lo, yi_hi = _Y_RANGES[casts.y]
    # tuple.__new__ straight away: a NamedTuple's own __new__ is a Python function around it.
    new = tuple.__new__
    sample = Sample

    def fast(items: Sequence[object], now: float, tz: tzinfo, slow: _Slow) -> list[Sample]:
        samples: list[Sample] = []
        append = samples.append
        for item in items:
            # Each accepted form ends in `continue`; everything else falls through to the general path.
            if type(item) is dict and "y" in item:
                y = item["y"]
                kind = type(y)
                if kind is float:
                    good = yf_lo <= y <= yf_hi and (not y_integral or y.is_integer())
                elif kind is int:
                    good = yi_lo <= y <= yi_hi
                    if good:
                        y = float(y)
                elif kind is bool:
                    good = y_words
                    y = 1.0 if y else 0.0
                else:
                    good = False
                if good:
                    size = len(item)
                    if size == 1:
                        if x_default:
                            append(new(sample, (now, y)))
                            continue
                    elif size == 2 and "x" in item:
                        x = item["x"]
                        kind = type(x)
                        if kind is float:
                            if xf_lo <= x <= xf_hi and (not x_integral or x.is_integer()):
                                append(new(sample, (x, y)))
                                continue
                        elif kind is int and xi_lo <= x <= xi_hi:
                            append(new(sample, (float(x), y)))
                            continue
            append(slow(len(samples), item, casts, now, tz))
        return samples

    return fast


_FAST_PATHS: dict[Casts, _FastPath] = {}
# The last one looked up, by identity: hashing Casts (a dataclass of two enums) is Python code, and a
# writer decodes message after message for the same route's Casts object. One tuple, replaced whole.
_LAST_FAST: tuple[Casts, _FastPath] | None = None
# What the fast path accepts, per cast: (float low, float high, float must be integral, int low, int high).
_Range = tuple[float, float, bool, float, float]
_FLOATS: _Range = (-sys.float_info.max, sys.float_info.max, False, -MAX_EXACT_INT, MAX_EXACT_INT)
_INTS: _Range = (-float(MAX_EXACT_INT), float(MAX_EXACT_INT), True, -MAX_EXACT_INT, MAX_EXACT_INT)
_X_RANGES: dict[XCast, _Range] = {
    XCast.DATETIME: (MIN_EPOCH, MAX_EPOCH, False, MIN_EPOCH, MAX_EPOCH),
    XCast.INT: _INTS,
    XCast.FLOAT: _FLOATS,
}
_Y_RANGES: dict[YCast, _Range] = {YCast.BOOL: (0.0, 1.0, True, 0, 1), YCast.INT: _INTS, YCast.FLOAT: _FLOATS}


def _lines(lines: list[str], casts: Casts, now: float, tz: tzinfo) -> list[Sample]:
    samples: list[Sample] = []
    numbers: list[int] = []  # the line each sample came from
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        numbers.append(number)
        if len(samples) >= MAX_BATCH:
            raise InvalidInput(f"more than {MAX_BATCH} lines in one payload")
        parts = line.split(",")
        if len(parts) != 2:
            raise InvalidInput(f"line {number}: expected 'x,y', got {line[:40]!r}", line=number)
        try:
            samples.append(sample_from_fields(parts[0].strip(), parts[1].strip(), casts, now=now, tz=tz))
        except InvalidInput as exc:
            raise InvalidInput(f"line {number}: {exc.message}", line=number, **exc.detail) from None
    if not samples:
        raise InvalidInput("empty payload")
    repeat = repeated_x(samples)
    if repeat is not None:
        first, later = numbers[repeat[0]], numbers[repeat[1]]
        raise InvalidInput(
            f"line {later}: same x as line {first}; give each point its own x", line=later, field="x"
        )
    return samples

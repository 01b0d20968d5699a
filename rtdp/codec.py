"""Payload codec: the four payload forms a device may send, decoded and cast into samples."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import tzinfo

from rtdp.casts import XCast, YCast, cast_x, cast_y
from rtdp.errors import InvalidInput, PayloadTooLarge

DEFAULT_MAX_PAYLOAD = 256 * 1024
MAX_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class Sample:
    """One validated point, before it has an id: x and y as stored."""

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
            document = _DECODER.decode(text)
        except (ValueError, RecursionError) as exc:
            raise InvalidInput(f"invalid JSON: {str(exc)[:120]}") from None
        if isinstance(document, list):
            return _batch(document, casts, now, tz)
        return [_from_object(document, casts, now, tz)]
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


def encode(samples: Iterable[Sample]) -> bytes:
    """The canonical payload for samples: a JSON array, x always present (so redelivery is idempotent)."""
    return json.dumps([{"x": s.x, "y": s.y} for s in samples], separators=(",", ":")).encode()


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


# One decoder for every payload: json.loads with any keyword builds a new JSONDecoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


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
    samples: list[Sample] = []
    for index, item in enumerate(items):
        try:
            samples.append(_from_object(item, casts, now, tz))
        except InvalidInput as exc:
            raise InvalidInput(f"element {index}: {exc.message}", index=index, **exc.detail) from None
    return samples


def _lines(lines: list[str], casts: Casts, now: float, tz: tzinfo) -> list[Sample]:
    samples: list[Sample] = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
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
    return samples

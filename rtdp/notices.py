"""The notices the bridge publishes after each commit, and their wire format: written and read only here.

- stored, on `rtdp/stored/<feed>`: `[{"id":N,"axis":"A","x":X,"y":Y,"after":H},{"id":...},...]`, the
  points just committed in id order (compact JSON; y an integer for int and bool feeds). The first one
  also says `after`: the id of the feed's newest point before this commit (absent when unknown), so a
  reader of notices from several bridges, which may arrive out of commit order, sees that one is
  missing. The viewer fans the points out as SSE events, whose data is the same object without
  `after` (`stream_data`); any subscriber may read them.
- error, on `rtdp/errors/<feed>/<axis>`: `{"error":...,"code":...,<detail>...,"topic":...,"payload":...}`,
  a message that was not stored: why, the topic it came on and the start of its payload.

Subscribers outside rtdp (and the tests) read these bytes: change them only with DESIGN.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rtdp.casts import XCast, YCast, y_json
from rtdp.codec import Casts

# What an error notice shows of the payload that was refused, in characters.
PAYLOAD_SHOWN = 200
TOPIC_SHOWN = 256
# Keys of an error notice that are not detail (a detail of the same name would be overwritten).
_ERROR_KEYS = frozenset({"error", "code", "topic", "payload"})


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One stored point as the bridge announced it on rtdp/stored/<feed>."""

    id: int
    axis: str
    x: float
    y: float


class CommittedPoint(Protocol):
    """A point as the store committed it (rtdp.store.StoredPoint): its axis by id."""

    @property
    def id(self) -> int: ...
    @property
    def axis_id(self) -> int: ...
    @property
    def x(self) -> float: ...
    @property
    def y(self) -> float: ...


@dataclass(frozen=True, slots=True)
class AxisOf:
    """Where a committed point's axis id belongs, and whether its y is shown as an integer."""

    feed: str
    axis: str
    y_cast: YCast


def encode_stored(
    points: Sequence[CommittedPoint], axes: Mapping[int, AxisOf], follows: Mapping[int, int | None] | None = None
) -> dict[str, bytes]:
    """Each feed's stored notice for `points` (every axis id in `axes`), in the order `axes` names the
    feeds; feeds without points get none. `follows`: per axis id, its feed's newest point id before
    these (rtdp.store.Written.follows), said as the first point's `after`.

    This runs once per point on the bridge's hot path, so it is built as text, in one comprehension
    when all points went to one feed's axes of one y type (the common case): a dict and json.dumps per
    point cost more than decoding it. Names are [A-Za-z0-9_.-] and x/y are finite floats (the codec
    rejects NaN and infinities), so the quoted name and repr() of a float or int are valid JSON.
    """
    # Per axis: its feed's part list, the JSON between a point's id and its x, and whether y is integral.
    feeds: dict[str, list[str]] = {}
    shapes: dict[int, tuple[list[str], str, bool]] = {}
    for axis_id, where in axes.items():
        parts = feeds.setdefault(where.feed, [])
        shapes[axis_id] = (parts, f',"axis":"{where.axis}","x":', where.y_cast is not YCast.FLOAT)
    if len({(id(parts), integral) for parts, _, integral in shapes.values()}) == 1:
        parts, _, integral = next(iter(shapes.values()))
        middles = {axis_id: middle for axis_id, (_, middle, _) in shapes.items()}
        if integral:
            parts += [f'{{"id":{p.id}{middles[p.axis_id]}{p.x!r},"y":{int(p.y)}}}' for p in points]
        else:
            parts += [f'{{"id":{p.id}{middles[p.axis_id]}{p.x!r},"y":{p.y!r}}}' for p in points]
    else:
        for point in points:
            parts, middle, integral = shapes[point.axis_id]
            y = int(point.y) if integral else point.y
            parts.append(f'{{"id":{point.id}{middle}{point.x!r},"y":{y!r}}}')
    if follows:
        after_of = {where.feed: follows.get(axis_id) for axis_id, where in axes.items()}
        for feed, parts in feeds.items():
            after = after_of.get(feed)
            if parts and after is not None:
                parts[0] = f'{parts[0][:-1]},"after":{int(after)}}}'
    return {feed: ("[" + ",".join(parts) + "]").encode() for feed, parts in feeds.items() if parts}


def decode_stored(payload: bytes | bytearray) -> list[StoredEvent]:
    """A stored notice's points; malformed elements are skipped (ValueError if it is no JSON at all)."""
    return decode_stored_notice(payload)[0]


def decode_stored_notice(payload: bytes | bytearray) -> tuple[list[StoredEvent], int | None]:
    """A stored notice's points and the feed's newest point id before them (`after`; None when the
    notice does not say); malformed elements are skipped (ValueError if it is no JSON at all)."""
    document = json.loads(payload)
    after = None
    if isinstance(document, list) and document and isinstance(document[0], dict):
        value = document[0].get("after")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            after = value
    events = []
    for item in document if isinstance(document, list) else ():
        try:
            events.append(StoredEvent(int(item["id"]), str(item["axis"]), float(item["x"]), float(item["y"])))
        except (KeyError, TypeError, ValueError):
            continue
    return events, after


def stream_data(event: StoredEvent, casts: Casts, feed: str | None = None) -> str:
    """The data of the SSE `point` event for `event`: the notice's object, x and y in the feed's casts; on a
    stream of several feeds (`feed` given) it names its feed too."""
    x: float | int = int(event.x) if casts.x is XCast.INT else event.x
    data = {"id": event.id, "axis": event.axis, "x": x, "y": y_json(event.y, casts.y)}
    return json.dumps(data if feed is None else {"feed": feed, **data})


@dataclass(frozen=True, slots=True)
class ErrorNotice:
    """A message the bridge did not store: why (`error`, a stable `code` and its detail) and what came."""

    error: str
    code: str
    topic: str
    payload: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, error: str, code: str, detail: Mapping[str, Any], topic: str, payload: bytes) -> ErrorNotice:
        """The notice for a refused message, its topic and payload cut to what a notice shows."""
        # At most 4 bytes a character: decoding more than that would only be cut again.
        shown = payload[: PAYLOAD_SHOWN * 4].decode("utf-8", errors="replace")[:PAYLOAD_SHOWN]
        kept = {key: value for key, value in detail.items() if key not in _ERROR_KEYS}
        return cls(error, code, topic[:TOPIC_SHOWN], shown, kept)


def encode_error(notice: ErrorNotice) -> bytes:
    body = {"error": notice.error, "code": notice.code, **notice.detail}
    body |= {"topic": notice.topic, "payload": notice.payload}
    return json.dumps(body, separators=(",", ":"), default=str).encode()


def decode_error(payload: bytes | bytearray) -> ErrorNotice:
    """An error notice; ValueError if `payload` is not one."""
    document = json.loads(payload)
    if not isinstance(document, dict):
        raise ValueError("an error notice is a JSON object")
    try:
        error, code, topic, shown = (document.pop(key) for key in ("error", "code", "topic", "payload"))
    except KeyError as exc:
        raise ValueError(f"an error notice needs {exc.args[0]!r}") from None
    if not all(isinstance(value, str) for value in (error, code, topic, shown)):
        raise ValueError("error, code, topic and payload of an error notice are text")
    return ErrorNotice(error, code, topic, shown, document)

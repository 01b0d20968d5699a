"""Per-block summaries of an axis's points: what lets `max_points` answer over millions of points
without reading them.

Once an axis holds `PLAN_AT` points it gets a finest level k (from its density: a block of width
16**k holds about `PER_BLOCK` points on average), and `point_summary` keeps, for each of the
`LEVELS` levels k .. k+LEVELS-1, one row per non-empty block of x (block b of level k covers
[b * 16**k, (b+1) * 16**k)): how many points it holds, its lowest and its highest point (id, x, y).
Ties on y go to the smallest x, so the rows equal what a scan of the points would find.

Kept exact inside the transaction that changes the points:
- `fold` adds newly inserted points (an upsert of per-block aggregates, one statement per batch);
- `refresh` recomputes the blocks where points were deleted or replaced (from the points for the
  finest level, from the finer level's rows above it);
- the rows go with their axis (foreign key, ON DELETE CASCADE).

An axis whose x values do not fit the block numbers (|x| / 16**k beyond 2**62) is marked `OFF`
and answered from the points alone. Writers of one axis are serialised by the caller (SQLite's one
write lock; the axis row lock on PostgreSQL), so planning and folding never race.

Synchronous (Peewee): call it from a thread, never from an event loop.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeGuard

import peewee as pw

from rtdp.models import Axis, Point, Summary
from rtdp.store.dialect import execute

# Blocks of level k are 16**k wide: a power of two, so x / width and block * width are exact.
BITS = 4
LEVELS = 8
PLAN_AT = 4096
PER_BLOCK = 16
MIN_LEVEL, MAX_LEVEL = -20, 40
OFF = 127  # Axis.summary_level of an axis that has no summary and never gets one
MAX_BLOCK = 2**62
# Rows per statement: SQLite allows 32,766 bound parameters, and a row has 10.
CHUNK = 3000
# Aggregates held in memory while streaming a rebuild, before they are written.
FLUSH_BLOCKS = 20_000

# An aggregate: [points, min_y, min_x, min_id, max_y, max_x, max_id].
Extremes = list[Any]


class OutOfRange(Exception):
    """An x whose block number does not fit the table at this level."""


def width(level: int) -> float:
    return math.ldexp(1.0, BITS * level)


def kept(level: int | None) -> TypeGuard[int]:
    """Whether an axis with this `Axis.summary_level` has summary rows."""
    return level is not None and level != OFF


def _check_blocks(lowest: int, highest: int) -> None:
    if not (-MAX_BLOCK < lowest and highest < MAX_BLOCK):
        raise OutOfRange()


def block_of(x: float, level: int) -> int:
    try:
        block = int(x // width(level))
    except (OverflowError, ValueError):  # an infinite block number
        raise OutOfRange(x) from None
    _check_blocks(block, block)
    return block


def merge_into(aggregates: dict[int, Extremes], key: int, other: Extremes) -> None:
    """Fold `other` into aggregates[key] (a copy of it when the key is new)."""
    seen = aggregates.get(key)
    if seen is None:
        aggregates[key] = list(other)
    else:
        merge(seen, other)


def merge(into: Extremes, other: Extremes) -> None:
    into[0] += other[0]
    if other[1] < into[1] or (other[1] == into[1] and other[2] < into[2]):
        into[1], into[2], into[3] = other[1], other[2], other[3]
    if other[4] > into[4] or (other[4] == into[4] and other[5] < into[5]):
        into[4], into[5], into[6] = other[4], other[5], other[6]


def aggregate(points: Iterable[Sequence[Any]], level: int) -> dict[int, Extremes]:
    """Per block of `level`: the aggregate of `points`, shaped like rtdp.store.StoredPoint
    (id, axis_id, x, y)."""
    w = width(level)
    blocks: dict[float, Extremes] = {}
    # Points mostly come in x order: a run of them in one block is folded into local variables
    # (cheaper than list items) and written back when the block changes.
    run: Extremes | None = None
    run_block = math.nan
    n, low_y, low_x, low_i, high_y, high_x, high_i = 0, 0.0, 0.0, 0, 0.0, 0.0, 0
    for i, _, x, y in points:
        b = x // w
        if b != run_block:
            if run is not None:
                run[:] = n, low_y, low_x, low_i, high_y, high_x, high_i
            run_block = b
            run = blocks.get(b)
            if run is None:
                run = blocks[b] = [0, y, x, i, y, x, i]
            n, low_y, low_x, low_i, high_y, high_x, high_i = run
        n += 1
        if y <= low_y and (y < low_y or x < low_x):
            low_y, low_x, low_i = y, x, i
        if y >= high_y and (y > high_y or x < high_x):
            high_y, high_x, high_i = y, x, i
    if run is not None:
        run[:] = n, low_y, low_x, low_i, high_y, high_x, high_i
    try:
        result = {int(b): e for b, e in blocks.items()}
    except (OverflowError, ValueError):  # an infinite block number
        raise OutOfRange() from None
    if result:
        _check_blocks(min(result), max(result))
    return result


def coarsen(blocks: dict[int, Extremes]) -> dict[int, Extremes]:
    """The next level's aggregates from this level's (16 blocks make one)."""
    parents: dict[int, Extremes] = {}
    for b, e in blocks.items():
        merge_into(parents, b >> BITS, e)  # >>: floor division by 16, negative blocks included
    return parents


# -- SQL ----------------------------------------------------------------------------------------------

_T = Summary._meta.table_name
# In the order of an Extremes list.
_COLUMNS = "axis_id, level, block, points, min_y, min_x, min_id, max_y, max_x, max_id"


def _better(side: str, op: str) -> str:
    """True when the incoming row's extreme on `side` beats the stored one (ties: smaller x)."""
    return (
        f"(excluded.{side}_y {op} {_T}.{side}_y OR"
        f" (excluded.{side}_y = {_T}.{side}_y AND excluded.{side}_x < {_T}.{side}_x))"
    )


@functools.lru_cache(maxsize=256)
def _insert_sql(param: str, rows: int, add: bool) -> str:
    """Insert `rows` rows; `add`: fold each into the row already there (an upsert)."""
    values = ",".join([f"({','.join([param] * 10)})"] * rows)
    if not add:
        return f"INSERT INTO {_T} ({_COLUMNS}) VALUES {values}"
    low, high = _better("min", "<"), _better("max", ">")
    sets = [f"points = {_T}.points + excluded.points"]
    sets += [f"min_{c} = CASE WHEN {low} THEN excluded.min_{c} ELSE {_T}.min_{c} END" for c in ("id", "x", "y")]
    sets += [f"max_{c} = CASE WHEN {high} THEN excluded.max_{c} ELSE {_T}.max_{c} END" for c in ("id", "x", "y")]
    return (
        f"INSERT INTO {_T} ({_COLUMNS}) VALUES {values}"
        f" ON CONFLICT (axis_id, level, block) DO UPDATE SET {', '.join(sets)}"
    )


def _write(db: pw.Database, axis_id: int, rows: list[tuple[int, int, Extremes]], *, add: bool) -> None:
    """Upsert (`add`: fold into existing rows) or insert (rows known to be absent) (level, block,
    aggregate) rows."""
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        params: list[object] = []
        for level, b, e in chunk:
            params += (axis_id, level, b, *e)
        execute(db, _insert_sql(db.param, len(chunk), add), params)


def _level_rows(level: int, blocks: dict[int, Extremes]) -> list[tuple[int, int, Extremes]]:
    return [(level, b, e) for b, e in sorted(blocks.items())]


# -- maintenance --------------------------------------------------------------------------------------


def fold(db: pw.Database, axis_id: int, level: int, points: Sequence[Sequence[Any]]) -> None:
    """Add newly inserted points (id, axis_id, x, y) to every level's rows. Raises OutOfRange."""
    if not points:
        return
    blocks = aggregate(points, level)
    rows: list[tuple[int, int, Extremes]] = []
    for k in range(level, level + LEVELS):
        rows += _level_rows(k, blocks)
        blocks = coarsen(blocks)
    _write(db, axis_id, rows, add=True)  # usually one statement for all levels


def refresh(db: pw.Database, axis_id: int, level: int, xs: Iterable[float]) -> None:
    """Recompute every level's blocks that hold one of `xs` (points deleted or replaced there)."""
    w = width(level)
    try:
        blocks = sorted({int(b) for b in {x // w for x in xs}})
    except (OverflowError, ValueError):  # an infinite block number
        raise OutOfRange() from None
    if not blocks:
        return
    _check_blocks(blocks[0], blocks[-1])
    for first, last in _runs(blocks):
        lo, hi = first * w, (last + 1) * w
        sql, params = (
            Point.select(Point.id, Point.axis, Point.x, Point.y)
            .where((Point.axis == axis_id) & (Point.x >= lo) & (Point.x < hi))
            .sql()
        )
        _replace(axis_id, level, first, last, aggregate(execute(db, sql, params), level))
    for k in range(level + 1, level + LEVELS):
        blocks = sorted({b >> BITS for b in blocks})
        for first, last in _runs(blocks):
            children = extremes(axis_id, k - 1, first << BITS, ((last + 1) << BITS) - 1)
            _replace(axis_id, k, first, last, coarsen(children))


def _runs(blocks: list[int]) -> Iterator[tuple[int, int]]:
    """Sorted block numbers as (first, last) runs of consecutive ones."""
    first = last = blocks[0]
    for b in blocks[1:]:
        if b != last + 1:
            yield first, last
            first = b
        last = b
    yield first, last


def _replace(axis_id: int, level: int, first: int, last: int, blocks: dict[int, Extremes]) -> None:
    Summary.delete().where(
        (Summary.axis == axis_id) & (Summary.level == level) & (Summary.block.between(first, last))
    ).execute()
    _write(Summary._meta.database, axis_id, _level_rows(level, blocks), add=False)


def extremes(axis_id: int, level: int, first: int, last: int) -> dict[int, Extremes]:
    """The rows of blocks first..last of `level`."""
    # A plain cursor: Peewee's per-value conversions cost more than SQLite's reading of these rows.
    db = Summary._meta.database
    p = db.param
    sql = (
        f"SELECT block, {_COLUMNS.split(', ', 3)[3]} FROM {_T}"
        f" WHERE axis_id = {p} AND level = {p} AND block BETWEEN {p} AND {p}"
    )
    cursor = execute(db, sql, (axis_id, level, first, last))
    return {b: [n, float(ly), float(lx), li, float(hy), float(hx), hi] for b, n, ly, lx, li, hy, hx, hi in cursor}


def choose_level(count: int, low: float, high: float) -> int:
    """The finest level for an axis of `count` points between `low` and `high`, or OFF."""
    span = high - low
    if count < 2 or not span > 0 or not math.isfinite(span):
        return OFF
    # Logs added, not PER_BLOCK * span: that product can overflow for x near the float limits.
    level = math.ceil(math.log(span / count, 16) + math.log(PER_BLOCK, 16))
    level = max(MIN_LEVEL, min(MAX_LEVEL, level))
    try:
        block_of(low, level)
        block_of(high, level)
    except OutOfRange:
        return OFF
    return level


def plan(db: pw.Database, axis_id: int, count: int) -> int:
    """Give the axis its levels and build its rows from its points; returns the level (or OFF)."""
    ends: Any = Point.select(Point.x).where(Point.axis == axis_id)
    first = ends.order_by(Point.x).limit(1).scalar()
    last = ends.order_by(Point.x.desc()).limit(1).scalar()
    level = OFF if first is None else choose_level(count, float(first), float(last))
    if level != OFF:
        rebuild(db, axis_id, level)
    Axis.update(summary_level=level).where(Axis.id == axis_id).execute()
    return level


def rebuild(db: pw.Database, axis_id: int, level: int) -> None:
    """All of the axis's rows, from its points: streamed in x order, so memory stays bounded."""
    Summary.delete().where(Summary.axis == axis_id).execute()
    query: Any = (
        Point.select(Point.id, Point.x, Point.y).where(Point.axis == axis_id).order_by(Point.x).tuples()
    )
    w = width(level)
    pending: list[tuple[int, int, float, float]] = []
    current: int | None = None
    held = 0
    for i, x, y in query.iterator():
        b = int(float(x) // w)
        if b != current:
            held += 1
            # Flush whole blocks only: a block is complete once x has moved past it.
            if held > FLUSH_BLOCKS:
                _write(db, axis_id, _level_rows(level, aggregate(pending, level)), add=False)
                pending, held = [], 1
            current = b
        pending.append((i, axis_id, float(x), float(y)))
    if pending:
        _write(db, axis_id, _level_rows(level, aggregate(pending, level)), add=False)
    for k in range(level + 1, level + LEVELS):
        _write(db, axis_id, _level_rows(k, coarsen(extremes(axis_id, k - 1, -MAX_BLOCK, MAX_BLOCK))), add=False)


def turn_off(axis_id: int) -> None:
    """x values beyond the block numbers: drop the rows; queries read the points."""
    Summary.delete().where(Summary.axis == axis_id).execute()
    Axis.update(summary_level=OFF).where(Axis.id == axis_id).execute()


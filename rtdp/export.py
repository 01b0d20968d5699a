"""Export formats, shared by `rtdp export` and the API's export: one definition of what a file holds.

CSV: a header `x,y` (`axis,x,y` when several axes are exported), then one line per point; x as
ISO 8601 UTC for datetime feeds, numbers otherwise; y integral for int and bool feeds. JSON: an
array of `{"axis", "x", "y"}` objects with x formatted the same way, and `"unit"` when the axis has one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable

from rtdp.casts import XCast, format_x, y_json
from rtdp.codec import Casts

LINE_END = "\n"


def csv_header(several: bool) -> str:
    return ("axis,x,y" if several else "x,y") + LINE_END


def csv_lines(axis: str, rows: Iterable[tuple[float, float]], casts: Casts, several: bool) -> str:
    """CSV text for (x, y) rows of one axis (quoted by the csv module, so any name is safe)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=LINE_END)
    for x, y in rows:
        values = [format_x(x, casts.x), str(y_json(y, casts.y))]
        writer.writerow([axis, *values] if several else values)
    return out.getvalue()


def json_points(axis: str, rows: Iterable[tuple[float, float]], casts: Casts, unit: str | None = None) -> list[str]:
    """One JSON object per point, to be joined into the exported array."""
    extra = {"unit": unit} if unit else {}
    return [
        json.dumps({"axis": axis, "x": _x(x, casts.x), "y": y_json(y, casts.y), **extra}, separators=(",", ":"))
        for x, y in rows
    ]


def _x(x: float, cast: XCast) -> str | float | int:
    if cast is XCast.DATETIME:
        return format_x(x, cast)
    return int(x) if cast is XCast.INT else x

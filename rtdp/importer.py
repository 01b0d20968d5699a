"""CSV import: a feed's history from a file, as `rtdp export` writes it (header `x,y` or `axis,x,y`).

An offline administrative write: the bridge is the only live writer of points, but loading history
is a bulk job nobody publishes. It goes through the same `rtdp.store.write_points` (one transaction
per batch, upsert on (axis, x), Axis counters kept) and the feed's casts, so what it stores is what
the bridge would have stored. Not through the writer, so alert rules do not judge it: history would
fire alerts for what is long over (README, Alerts).

Resumable: after each committed batch a small state file in `<data dir>/imports/` records the file's
identity (path, size, mtime, SHA-256 of its first KiB) and the last committed line; a rerun of the
same import skips to the line after it. The upsert makes re-importing a few lines harmless anyway.
The state file is removed when the import completes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any

from rtdp.casts import XCast, cast_x, cast_y, parse_datetime
from rtdp.codec import Sample
from rtdp.errors import InvalidInput
from rtdp.models import Axis, Feed
from rtdp.settings import Settings
from rtdp.store import ensure_axis, feed_casts, get_feed, write_points

BATCH = 10_000
# Rejected lines listed one by one in the report (all are counted).
REJECTIONS_SHOWN = 20
HEAD_BYTES = 1024
HEADERS = {("x", "y"): False, ("axis", "x", "y"): True}


@dataclass(frozen=True, slots=True)
class Rejected:
    line: int
    reason: str


@dataclass
class ImportReport:
    feed: str
    path: str
    imported: int = 0
    rejected: int = 0
    # The first REJECTIONS_SHOWN rejected lines with their reasons.
    rejections: list[Rejected] = field(default_factory=list)
    # Lines of other axes, when an `axis,x,y` file was imported with `axis=`.
    skipped: int = 0
    # The last line committed by an earlier, interrupted run this one continued after (0: none).
    resumed_after: int = 0
    # Last line handled; the whole file when `complete`.
    last_line: int = 0
    complete: bool = False
    created_axes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_status(self) -> int:
        """0 when anything was imported (or there was nothing to import), 1 when every line was rejected."""
        return 1 if self.imported == 0 and self.rejected > 0 else 0


@dataclass(frozen=True, slots=True)
class FileIdentity:
    path: str
    size: int
    mtime_ns: int
    head_sha256: str

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        resolved = path.resolve()
        stat = resolved.stat()
        with resolved.open("rb") as handle:
            head = hashlib.sha256(handle.read(HEAD_BYTES)).hexdigest()
        return cls(str(resolved), stat.st_size, stat.st_mtime_ns, head)


def state_path(settings: Settings, identity: FileIdentity, feed: str, axis: str | None) -> Path:
    """Where the resume state of importing this file into this feed (and axis) lives."""
    key = hashlib.sha256(json.dumps([identity.path, feed, axis]).encode()).hexdigest()[:24]
    return settings.data_dir / "imports" / f"{key}.json"


def import_csv(
    feed: Feed | str,
    path: Path | str,
    *,
    axis: str | None = None,
    settings: Settings,
    progress: bool = True,
    batch: int = BATCH,
    max_lines: int | None = None,
) -> ImportReport:
    """Import `path` into `feed`: header `x,y` (into `axis`, or the feed's only axis) or `axis,x,y`.

    Lines that fail the feed's casts are rejected and reported with their line numbers; the rest are
    stored. Missing axes named by the file or by `axis` are created. `max_lines` stops after that
    many lines (a partial import, resumed by the next call like an interrupted one). Raises
    InvalidInput for a missing file, a bad header or a missing `axis`.
    """
    started = time.monotonic()
    row = feed if isinstance(feed, Feed) else get_feed(feed)
    source = Path(path)
    if not source.is_file():
        raise InvalidInput(f"no such file: {source}")
    if batch < 1:
        raise ValueError(f"batch must be positive, got {batch}")
    identity = FileIdentity.of(source)
    state_file = state_path(settings, identity, row.name, axis)
    report = ImportReport(feed=row.name, path=str(source))
    state = _load_state(state_file, identity)
    if state is not None:
        report.resumed_after = int(state["line"])
        report.imported = int(state.get("imported", 0))
        report.rejected = int(state.get("rejected", 0))
        report.skipped = int(state.get("skipped", 0))
        report.rejections = [Rejected(int(line), str(reason)) for line, reason in state.get("rejections", [])]
    # errors="replace": a byte that is not UTF-8 spoils its line only (rejected by the casts, with its number).
    with _progress_bar(progress, identity.size, source.name) as bar, source.open(
        "r", encoding="utf-8-sig", errors="replace", newline=""
    ) as handle:
        _Import(row, axis, settings, report, handle, bar).run(batch, max_lines, state_file, identity)
    report.seconds = time.monotonic() - started
    return report


class _Import:
    """One pass over the file: parse, cast, batch, write, record progress."""

    def __init__(
        self, feed: Feed, axis: str | None, settings: Settings, report: ImportReport, handle: io.TextIOWrapper, bar: Any
    ) -> None:
        self.feed = feed
        self.axis = axis
        self.tz = settings.tz
        self.report = report
        self.handle = handle
        self.bar = bar
        self.axes: dict[str, int | None] = {}  # name -> id, None when the name is invalid
        self._position = 0

    def run(self, batch: int, max_lines: int | None, state_file: Path, identity: FileIdentity) -> None:
        report = self.report
        reader = csv.reader(self.handle)
        header = next(reader, None)
        if header is None:
            raise InvalidInput(f"{report.path}: empty file (expected a header line x,y or axis,x,y)")
        with_axis = HEADERS.get(tuple(h.strip().lower() for h in header))
        if with_axis is None:
            shown = ",".join(header)[:60]
            raise InvalidInput(f"{report.path}: line 1: expected a header x,y or axis,x,y, got {shown!r}")
        fixed_axis = None if with_axis else self._fixed_axis()
        casts = feed_casts(self.feed)
        x_of, y_cast = _x_reader(casts.x, self.tz), casts.y
        width = 3 if with_axis else 2
        pending: list[tuple[int, Sample]] = []
        done = report.resumed_after
        handled = 0
        last = done  # the last line handled (imported, rejected or skipped)
        complete = False
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                complete = True
                break
            except csv.Error as exc:  # a NUL byte, an overlong field: that line only
                if reader.line_num > done:
                    handled += 1
                    last = reader.line_num
                    self._reject(last, f"unreadable CSV: {exc}")
                continue
            line = reader.line_num
            if line <= done:
                continue
            if max_lines is not None and handled >= max_lines:
                break  # this line is not handled: the next run starts here
            handled += 1
            last = line
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            if len(fields) != width:
                self._reject(line, f"expected {width} fields ({'axis,x,y' if with_axis else 'x,y'}), got {len(fields)}")
                continue
            if with_axis:
                name = fields[0].strip()
                if self.axis is not None and name != self.axis:
                    report.skipped += 1
                    continue
                axis_id = self.axes.get(name, 0)
                if axis_id == 0:
                    axis_id = self._resolve(name, line)
                if axis_id is None:
                    self._reject(line, f"invalid axis name {name[:64]!r}")
                    continue
                x_text, y_text = fields[1], fields[2]
            else:
                axis_id = fixed_axis
                x_text, y_text = fields
            try:
                sample = Sample(x_of(x_text), cast_y(y_text, y_cast))
            except InvalidInput as exc:
                self._reject(line, "x is required in an import" if not x_text.strip() else exc.message)
                continue
            assert axis_id is not None
            pending.append((axis_id, sample))
            if len(pending) >= batch:
                self._commit(pending, line, state_file, identity)
                pending = []
        report.complete = complete
        self._commit(pending, last, state_file, identity)
        report.last_line = last
        if report.complete:
            state_file.unlink(missing_ok=True)

    def _fixed_axis(self) -> int:
        if self.axis is not None:
            return self._axis_or_fail(self.axis)
        axes = list(Axis.select(Axis.id, Axis.name).where(Axis.feed == self.feed.id).limit(2))
        if len(axes) != 1:
            have = "no axes" if not axes else "several axes"
            raise InvalidInput(
                f"{self.report.path} has x,y lines and feed {self.feed.name!r} has {have}: name the axis (--axis)",
                field="axis",
            )
        return int(axes[0].id)

    def _axis_or_fail(self, name: str) -> int:
        axis_id = self._resolve(name, 0)
        if axis_id is None:
            raise InvalidInput(f"invalid axis name {name[:64]!r}", field="axis")
        return axis_id

    def _resolve(self, name: str, line: int) -> int | None:
        known = Axis.get_or_none((Axis.feed == self.feed.id) & (Axis.name == name))
        if known is not None:
            axis_id: int | None = int(known.id)
        else:
            try:
                axis_id = int(ensure_axis(self.feed, name).id)
            except InvalidInput:
                axis_id = None
            else:
                self.report.created_axes.append(name)
        self.axes[name] = axis_id
        return axis_id

    def _reject(self, line: int, reason: str) -> None:
        report = self.report
        report.rejected += 1
        if len(report.rejections) < REJECTIONS_SHOWN:
            report.rejections.append(Rejected(line, reason))

    def _commit(self, pending: list[tuple[int, Sample]], line: int, state_file: Path, identity: FileIdentity) -> None:
        report = self.report
        if pending:
            # History: not judged against alert rules (rtdp.alerting judges what the writer stores live),
            # and not a sign of life for `silent` rules either.
            write_points(pending, live=False)
            report.imported += len(pending)
        if not report.complete:
            _save_state(state_file, identity, line, report)
        position: int = self.handle.buffer.tell()  # type: ignore[attr-defined]  # a BufferedReader here
        self.bar.update(max(0, position - self._position))
        self.bar.set_postfix_str(f"points={report.imported:,} rejected={report.rejected:,}", refresh=False)
        self._position = position


def _x_reader(cast: XCast, tz: tzinfo) -> Callable[[str], float]:
    """cast_x for one feed, with a fast path for the ISO 8601 times `rtdp export` writes."""
    if cast is not XCast.DATETIME:
        return lambda text: cast_x(text, cast, tz)

    def datetime_x(text: str) -> float:
        # "YYYY-" is never a number: go straight to the date parser. cast_x tries float() first, and
        # its exception costs about 1 us of the ~4 spent per line.
        if len(text) >= 10 and text[4] == "-" and text[:4].isdigit():
            return parse_datetime(text, tz)
        return cast_x(text, cast, tz)

    return datetime_x


def _load_state(state_file: Path, identity: FileIdentity) -> dict[str, Any] | None:
    """The saved progress, if it belongs to this very file (same path, size, mtime and head)."""
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("identity") != asdict(identity):
        return None
    return state


def _save_state(state_file: Path, identity: FileIdentity, line: int, report: ImportReport) -> None:
    state = {
        "identity": asdict(identity),
        "feed": report.feed,
        "line": line,
        "imported": report.imported,
        "rejected": report.rejected,
        "skipped": report.skipped,
        "rejections": [[r.line, r.reason] for r in report.rejections],
    }
    state_file.parent.mkdir(parents=True, exist_ok=True)
    # Written then renamed: an interruption while saving leaves the previous state, never half a file.
    temporary = state_file.with_suffix(".tmp")
    temporary.write_text(json.dumps(state))
    os.replace(temporary, state_file)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass


@contextmanager
def _progress_bar(enabled: bool, total: int, name: str) -> Iterator[Any]:
    if not enabled:
        # Not even a disabled tqdm: it still starts its monitor thread.
        yield _NoBar()
        return
    from tqdm import tqdm

    # disable=None: tqdm also stays quiet when stderr is not a terminal (cron, CI, pipes).
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=None, leave=True)
    try:
        yield bar
    finally:
        bar.close()


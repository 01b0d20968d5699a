from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import peewee as pw
import pytest
from click.testing import CliRunner

from rtdp import alerts
from rtdp.casts import XCast, cast_x
from rtdp.cli import main
from rtdp.errors import InvalidInput
from rtdp.importer import FileIdentity, import_csv, state_path
from rtdp.models import AlertEvent, AlertRule, Axis, Feed, Point, User
from rtdp.permissions import OPERATOR
from rtdp.settings import Settings
from rtdp.store import create_axis, create_feed


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.build(env={}, data_dir=tmp_path / "data")


@pytest.fixture
def owner(any_db: pw.Database) -> User:
    return User.create(email="ep@nothing.com", password_hash="unused")


@pytest.fixture
def feed(owner: User) -> Feed:
    return create_feed("history", owner, y_cast="int")


def write(tmp_path: Path, text: str, name: str = "points.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def points(feed: Feed) -> list[tuple[str, float, float]]:
    query: Any = Point.select(Axis.name, Point.x, Point.y).join(Axis).where(Axis.feed == feed.id)
    query = query.order_by(Axis.name, Point.x)
    return [(name, float(x), float(y)) for name, x, y in query.tuples()]


def counts(feed: Feed) -> dict[str, int]:
    return {a.name: a.point_count for a in Axis.select().where(Axis.feed == feed.id)}


def test_x_y_file_into_the_feeds_only_axis(tmp_path: Path, feed: Feed, settings: Settings) -> None:
    create_axis(feed, "a")
    path = write(tmp_path, "x,y\n2014-11-22 10:50:42.189000,3\n2014-11-22T10:50:43Z,4\n1416653444,5\n")
    report = import_csv(feed, path, settings=settings, progress=False)
    assert (report.imported, report.rejected, report.exit_status, report.complete) == (3, 0, 0, True)
    assert points(feed) == [("a", 1416653442.189, 3.0), ("a", 1416653443.0, 4.0), ("a", 1416653444.0, 5.0)]
    assert counts(feed) == {"a": 3}
    assert not (settings.data_dir / "imports").exists() or not list((settings.data_dir / "imports").iterdir())


def test_axis_x_y_file_creates_missing_axes(tmp_path: Path, feed: Feed, settings: Settings) -> None:
    create_axis(feed, "a")
    path = write(tmp_path, "Axis, X ,y\na,1,1\nb,1,2\nb,2,3\na,2,4\n")
    report = import_csv(feed.name, path, settings=settings, progress=False)
    assert report.imported == 4 and report.created_axes == ["b"]
    assert points(feed) == [("a", 1.0, 1.0), ("a", 2.0, 4.0), ("b", 1.0, 2.0), ("b", 2.0, 3.0)]
    assert counts(feed) == {"a": 2, "b": 2}


def test_axis_option_filters_an_axis_x_y_file(tmp_path: Path, feed: Feed, settings: Settings) -> None:
    path = write(tmp_path, "axis,x,y\na,1,1\nb,1,2\n")
    report = import_csv(feed, path, axis="b", settings=settings, progress=False)
    assert (report.imported, report.skipped) == (1, 1)
    assert points(feed) == [("b", 1.0, 2.0)]


def test_axis_rules_for_x_y_files(tmp_path: Path, feed: Feed, settings: Settings) -> None:
    path = write(tmp_path, "x,y\n1,1\n")
    with pytest.raises(InvalidInput, match="has no axes: name the axis"):
        import_csv(feed, path, settings=settings, progress=False)
    create_axis(feed, "a")
    create_axis(feed, "b")
    with pytest.raises(InvalidInput, match="several axes"):
        import_csv(feed, path, settings=settings, progress=False)
    with pytest.raises(InvalidInput, match="invalid axis name"):
        import_csv(feed, path, axis="no/slash", settings=settings, progress=False)
    report = import_csv(feed, path, axis="c", settings=settings, progress=False)
    assert report.created_axes == ["c"] and points(feed) == [("c", 1.0, 1.0)]


def test_bad_header_and_empty_file(tmp_path: Path, feed: Feed, settings: Settings) -> None:
    with pytest.raises(InvalidInput, match="line 1: expected a header"):
        import_csv(feed, write(tmp_path, "time,value\n1,2\n"), axis="a", settings=settings, progress=False)
    with pytest.raises(InvalidInput, match="empty file"):
        import_csv(feed, write(tmp_path, ""), axis="a", settings=settings, progress=False)
    with pytest.raises(InvalidInput, match="no such file"):
        import_csv(feed, tmp_path / "missing.csv", axis="a", settings=settings, progress=False)
    assert Point.select().count() == 0


def test_bad_lines_are_reported_with_their_numbers(tmp_path: Path, feed: Feed, settings: Settings) -> None:
    text = "axis,x,y\na,1,1\na,2,2.5\n\na,3\nbad/axis,4,4\na,,5\na,not a time,6\na,7,7\n"
    report = import_csv(feed, write(tmp_path, text), settings=settings, progress=False)
    assert report.imported == 2 and report.rejected == 5 and report.exit_status == 0
    assert [r.line for r in report.rejections] == [3, 5, 6, 7, 8]
    reasons = [r.reason for r in report.rejections]
    assert "integer" in reasons[0] and "expected 3 fields" in reasons[1] and "invalid axis name" in reasons[2]
    assert "x is required" in reasons[3] and "ISO 8601" in reasons[4]
    assert points(feed) == [("a", 1.0, 1.0), ("a", 7.0, 7.0)]


def test_times_read_as_the_feeds_casts_do(tmp_path: Path, owner: User) -> None:
    """The importer's shortcut for ISO 8601 x gives exactly what rtdp.casts.cast_x gives."""
    feed = create_feed("times", owner)
    settings = Settings.build(env={}, data_dir=tmp_path / "data", timezone="Europe/Paris")
    xs = ["2014-11-22 10:50:42.189000", "2014-11-22T10:50:43Z", "2014-11-22T10:50:44+05:30", "1416653445",
          " 2014-11-22 10:50:46", "1e3", "2014-11-22"]
    path = write(tmp_path, "x,y\n" + "".join(f"{x},{i}\n" for i, x in enumerate(xs)))
    report = import_csv(feed, path, axis="a", settings=settings, progress=False)
    assert report.imported == len(xs)
    expected = sorted((cast_x(x, XCast.DATETIME, settings.tz), float(i)) for i, x in enumerate(xs))
    assert [(x, y) for _, x, y in points(feed)] == expected


def test_unreadable_bytes_spoil_only_their_line(tmp_path: Path, feed: Feed, settings: Settings) -> None:
    path = tmp_path / "bytes.csv"
    path.write_bytes(b"x,y\n1,1\n2,\xff\n3,3\x00\n4,4\n")
    report = import_csv(feed, path, axis="a", settings=settings, progress=False)
    assert report.imported == 2 and [r.line for r in report.rejections] == [3, 4]
    assert points(feed) == [("a", 1.0, 1.0), ("a", 4.0, 4.0)]


def test_everything_rejected_exits_1(tmp_path: Path, feed: Feed, settings: Settings) -> None:
    report = import_csv(feed, write(tmp_path, "x,y\n1,x\n2,y\n"), axis="a", settings=settings, progress=False)
    assert (report.imported, report.rejected, report.exit_status) == (0, 2, 1)


def test_many_rejections_are_counted_not_all_listed(tmp_path: Path, feed: Feed, settings: Settings) -> None:
    text = "x,y\n" + "1,bad\n" * 50 + "2,2\n"
    report = import_csv(feed, write(tmp_path, text), axis="a", settings=settings, progress=False)
    assert report.rejected == 50 and len(report.rejections) == 20 and report.rejections[-1].line == 21


def test_resume_after_an_interruption(tmp_path: Path, feed: Feed, settings: Settings) -> None:
    lines = [f"{i},{i % 5}" for i in range(1, 101)]
    lines[41] = "42,oops"  # line 43 of the file
    path = write(tmp_path, "x,y\n" + "\n".join(lines) + "\n")
    first = import_csv(feed, path, axis="a", settings=settings, progress=False, batch=10, max_lines=45)
    assert not first.complete and first.last_line == 46 and first.imported == 44 and first.rejected == 1
    state = state_path(settings, FileIdentity.of(path), feed.name, "a")
    assert json.loads(state.read_text())["line"] == 46
    second = import_csv(feed, path, axis="a", settings=settings, progress=False, batch=10)
    assert second.complete and second.resumed_after == 46
    # The report covers the whole file: the first run's counts and rejections carry over.
    assert (second.imported, second.rejected, [r.line for r in second.rejections]) == (99, 1, [43])
    stored = points(feed)
    assert len(stored) == 99 == len({x for _, x, _ in stored}) and counts(feed) == {"a": 99}
    assert not state.exists()
    # A complete import run again starts over: the upsert keeps it harmless.
    again = import_csv(feed, path, axis="a", settings=settings, progress=False)
    assert again.resumed_after == 0 and again.imported == 99 and counts(feed) == {"a": 99}


def test_a_crash_mid_batch_reimports_that_batch_only(tmp_path: Path, feed: Feed, settings: Settings) -> None:
    """State records committed lines only; a batch that did not commit is redone without duplicates."""
    path = write(tmp_path, "x,y\n" + "".join(f"{i},{i}\n" for i in range(1, 31)))
    import_csv(feed, path, axis="a", settings=settings, progress=False, batch=10, max_lines=25)
    state = state_path(settings, FileIdentity.of(path), feed.name, "a")
    saved = json.loads(state.read_text())
    saved["line"] = 11  # as if the batch ending at line 21 had been written but its state not saved
    state.write_text(json.dumps(saved))
    report = import_csv(feed, path, axis="a", settings=settings, progress=False, batch=10)
    assert report.complete and counts(feed) == {"a": 30} and len(points(feed)) == 30


def test_a_changed_file_is_not_resumed(tmp_path: Path, feed: Feed, settings: Settings) -> None:
    path = write(tmp_path, "x,y\n" + "".join(f"{i},{i}\n" for i in range(1, 31)))
    import_csv(feed, path, axis="a", settings=settings, progress=False, batch=10, max_lines=15)
    path.write_text("x,y\n" + "".join(f"{i},{i + 1}\n" for i in range(1, 41)))
    report = import_csv(feed, path, axis="a", settings=settings, progress=False, batch=10)
    assert report.resumed_after == 0 and report.imported == 40
    assert points(feed)[0] == ("a", 1.0, 2.0)


def test_cli_import(tmp_path: Path, sqlite_db: pw.Database) -> None:
    owner = User.create(email="ep@nothing.com", password_hash="unused")
    feed = create_feed("cli_feed", owner, x_cast="float")
    url = f"sqlite:///{tmp_path / 'rtdp.sqlite3'}"
    path = write(tmp_path, "x,y\n1,1\n2,oops\n3,3\n")
    runner = CliRunner()
    result = runner.invoke(main, ["import", "cli_feed", str(path), "--axis", "a", "--db", url, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "created axis cli_feed/a" in result.output
    assert "imported 2 points into cli_feed" in result.output
    assert "rejected 1 lines:" in result.output and "line 3: y must be a number" in result.output
    assert points(feed) == [("a", 1.0, 1.0), ("a", 3.0, 3.0)]
    bad = write(tmp_path, "x,y\nq,1\n", "bad.csv")
    result = runner.invoke(main, ["import", "cli_feed", str(bad), "--db", url, "--no-progress"])
    assert result.exit_code == 1 and "line 2: x must be a number" in result.output
    result = runner.invoke(main, ["import", "missing", str(bad), "--db", url])
    assert result.exit_code == 1 and "no feed named 'missing'" in result.output
    result = runner.invoke(main, ["import", "cli_feed", str(write(tmp_path, "a;b\n", "h.csv")), "--db", url])
    assert result.exit_code == 2 and "expected a header" in result.output


def test_imported_history_is_not_judged_by_alert_rules(tmp_path: Path, feed: Feed, settings: Settings) -> None:
    """History fires nothing and ends no silence (README, Alerts): the import does not go through the writer,
    and it leaves the axis's last_seen (when a device last sent) as it was."""
    axis = create_axis(feed, "a")
    Axis.update(last_seen=100.0).where(Axis.id == axis.id).execute()
    base = {"feed": feed.name, "axis": "a", "actions": [{"type": "mqtt"}]}
    hot = alerts.add_rule(OPERATOR, {**base, "name": "hot", "kind": "above", "threshold": 30})
    quiet = alerts.add_rule(OPERATOR, {**base, "name": "quiet", "kind": "silent", "silent_s": 60})
    path = write(tmp_path, "x,y\n1416653442,50\n1416653443,10\n1416653444,60\n")
    assert import_csv(feed, path, settings=settings, progress=False).imported == 3
    assert AlertEvent.select().count() == 0
    assert [AlertRule.get_by_id(r.id).state for r in (hot, quiet)] == ["ok", "ok"]
    stored = Axis.get_by_id(axis.id)
    assert (stored.point_count, stored.last_y, stored.last_seen) == (3, 60, 100.0)

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import peewee as pw
import pytest

from rtdp.casts import XCast, YCast
from rtdp.codec import Casts, Sample
from rtdp.errors import Conflict, InvalidInput, NotFound
from rtdp.models import Axis, Feed, FeedHead, Point, User
from rtdp.store import (
    INSERT_CHUNK,
    StoredPoint,
    create_axis,
    create_feed,
    ensure_axis,
    feed_casts,
    feed_head,
    get_axis,
    get_feed,
    iter_export,
    plan_buckets,
    points_after,
    query_points,
    write_points,
)
from tests.support.env import wait_for


@pytest.fixture
def owner(any_db: pw.Database) -> User:
    return User.create(email="ep@nothing.com", password_hash="unused")


@pytest.fixture
def feed(owner: User) -> Feed:
    return create_feed("manual_feed_a", owner, y_cast="int")


@pytest.fixture
def axis(feed: Feed) -> Axis:
    return create_axis(feed, "axis_a00")


def fresh(axis: Axis) -> Axis:
    return Axis.get_by_id(axis.id)


def rows(axis: Axis) -> list[tuple[int, float, float]]:
    query = Point.select(Point.id, Point.x, Point.y).where(Point.axis == axis.id).order_by(Point.x)
    return [(i, float(x), float(y)) for i, x, y in query.tuples()]


# -- feeds and axes ---------------------------------------------------------------------------------


def test_create_and_get_feed(feed: Feed, owner: User) -> None:
    assert get_feed("manual_feed_a").id == feed.id
    assert feed_casts(feed) == Casts(XCast.DATETIME, YCast.INT)
    with pytest.raises(Conflict):
        create_feed("manual_feed_a", owner)
    with pytest.raises(NotFound):
        get_feed("missing")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "bad/name"},
        {"x_cast": "date"},
        {"y_cast": "str"},
        {"retention_days": 0},
        {"retention_points": 0},
        {"description": "x" * 2001},
    ],
)
def test_create_feed_rejects(owner: User, kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"name": "f", **kwargs}
    name = args.pop("name")
    with pytest.raises(InvalidInput):
        create_feed(name, owner, **args)  # type: ignore[arg-type]
    assert Feed.select().count() == 0


def test_create_axis(feed: Feed, axis: Axis) -> None:
    assert get_axis(feed, "axis_a00").id == axis.id
    with pytest.raises(Conflict):
        create_axis(feed, "axis_a00")
    with pytest.raises(InvalidInput):
        create_axis(feed, "a/b")
    with pytest.raises(NotFound):
        get_axis(feed, "missing")


def _race(workers: int, action: Callable[[], int], db: pw.Database) -> tuple[list[int], list[BaseException]]:
    barrier = threading.Barrier(workers)
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            results.append(action())
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
        finally:
            db.close()  # each thread has its own connection

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results, errors


def test_ensure_axis_race(feed: Feed, any_db: pw.Database) -> None:
    """Writers racing to create the same axis all get the one row, and none fails."""
    for round_ in range(3):
        name = f"racy{round_}"
        ids, errors = _race(8, lambda name=name: ensure_axis(feed, name).id, any_db)  # type: ignore[misc]
        assert not errors, errors
        assert len(ids) == 8 and len(set(ids)) == 1
        assert Axis.select().where((Axis.feed == feed.id) & (Axis.name == name)).count() == 1
    assert ensure_axis(feed, "racy0").id == get_axis(feed, "racy0").id
    with pytest.raises(InvalidInput):
        ensure_axis(feed, "bad name")


# -- writing ----------------------------------------------------------------------------------------


def test_write_points_returns_stored_points_in_id_order(axis: Axis) -> None:
    stored = write_points([(axis.id, Sample(2.0, 20.0)), (axis.id, Sample(1.0, 10.0))], received_at=5.0)
    assert [(p.axis_id, p.x, p.y) for p in stored] == [(axis.id, 2.0, 20.0), (axis.id, 1.0, 10.0)]
    assert stored[0].id < stored[1].id
    assert all(isinstance(p, StoredPoint) and isinstance(p.x, float) and isinstance(p.y, float) for p in stored)
    assert [(x, y) for _, x, y in rows(axis)] == [(1.0, 10.0), (2.0, 20.0)]
    assert {r for (r,) in Point.select(Point.received_at).tuples()} == {5.0}
    assert write_points([]) == []


def test_every_float_is_stored_and_returned_exactly(axis: Axis, feed: Feed) -> None:
    # PostgreSQL gets a batch as text arrays: each value must read back as the same double.
    values = [0.1 + 0.2, 1 / 3, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -1e300, 2.0**53 + 2,
              123456789.123456789, -0.5, 1e-7, 7]
    other = create_axis(feed, "other")
    batch = [(a, Sample(x, -x)) for x in values for a in (axis.id, other.id)]
    stored = write_points(batch)
    assert sorted((p.axis_id, p.x, p.y) for p in stored) == sorted((a, float(s.x), float(s.y)) for a, s in batch)
    assert [(x, y) for _, x, y in rows(axis)] == sorted((float(x), -float(x)) for x in values)
    # Replaced: the same values through the delete and the second insert.
    again = write_points([(a, Sample(s.x, s.y * 2)) for a, s in batch])
    assert sorted((p.axis_id, p.x, p.y) for p in again) == sorted((a, float(s.x), s.y * 2.0) for a, s in batch)
    assert min(p.id for p in again) > max(p.id for p in stored)
    assert [(x, y) for _, x, y in rows(other)] == sorted((float(x), -2.0 * x) for x in values)
    assert fresh(axis).point_count == fresh(other).point_count == len(values)


def test_same_x_replaces_with_a_higher_id(axis: Axis) -> None:
    first = write_points([(axis.id, Sample(1.0, 10.0)), (axis.id, Sample(2.0, 20.0))])
    second = write_points([(axis.id, Sample(2.0, 21.0)), (axis.id, Sample(3.0, 30.0))])
    assert [(x, y) for _, x, y in rows(axis)] == [(1.0, 10.0), (2.0, 21.0), (3.0, 30.0)]
    replaced = next(p for p in second if p.x == 2.0)
    assert replaced.id > max(p.id for p in first)
    assert {i for i, _, _ in rows(axis)} == {first[0].id, *(p.id for p in second)}
    assert fresh(axis).point_count == 3


def test_redelivery_is_harmless(axis: Axis) -> None:
    batch = [(axis.id, Sample(float(i), float(i))) for i in range(10)]
    write_points(batch)
    again = write_points(batch)
    assert len(again) == 10
    assert fresh(axis).point_count == 10 == len(rows(axis))


def test_last_sample_for_an_x_in_one_batch_wins(axis: Axis) -> None:
    stored = write_points([(axis.id, Sample(1.0, 1.0)), (axis.id, Sample(1.0, 2.0)), (axis.id, Sample(1.0, 3.0))])
    assert [(p.x, p.y) for p in stored] == [(1.0, 3.0)]
    assert rows(axis)[0][1:] == (1.0, 3.0)
    assert fresh(axis).point_count == 1


def test_axis_summary_follows_the_newest_x(axis: Axis, feed: Feed) -> None:
    other = create_axis(feed, "other")
    write_points([(axis.id, Sample(5.0, 50.0)), (axis.id, Sample(3.0, 30.0)), (other.id, Sample(1.0, 1.0))],
                 received_at=100.0)
    current = fresh(axis)
    assert (current.last_x, current.last_y, current.last_seen, current.point_count) == (5.0, 50.0, 100.0, 2)
    # An older x arriving later does not move last_x/last_y, but counts and updates last_seen.
    write_points([(axis.id, Sample(4.0, 40.0))], received_at=101.0)
    current = fresh(axis)
    assert (current.last_x, current.last_y, current.last_seen, current.point_count) == (5.0, 50.0, 101.0, 3)
    # Replacing the newest point updates last_y.
    write_points([(axis.id, Sample(5.0, 55.0))], received_at=102.0)
    current = fresh(axis)
    assert (current.last_x, current.last_y, current.point_count) == (5.0, 55.0, 3)
    assert (fresh(other).last_x, fresh(other).point_count) == (1.0, 1)


def test_large_batch_with_mixed_new_and_replaced_points(axis: Axis, feed: Feed) -> None:
    other = create_axis(feed, "other")
    size = INSERT_CHUNK + 1234  # more than one statement's worth
    write_points([(axis.id, Sample(float(i), 0.0)) for i in range(0, size, 2)])
    batch = [(axis.id, Sample(float(i), 1.0)) for i in range(size)] + [(other.id, Sample(1.0, 1.0))]
    random.Random(1).shuffle(batch)
    stored = write_points(batch)
    assert len(stored) == size + 1
    assert [p.id for p in stored] == sorted(p.id for p in stored)
    assert fresh(axis).point_count == size == Point.select().where(Point.axis == axis.id).count()
    assert {y for _, _, y in rows(axis)} == {1.0}
    assert (fresh(axis).last_x, fresh(axis).last_y) == (float(size - 1), 1.0)


def test_ids_never_reused_after_deleting_the_newest(axis: Axis) -> None:
    stored = write_points([(axis.id, Sample(1.0, 1.0)), (axis.id, Sample(2.0, 2.0))])
    Point.delete().where(Point.id == stored[-1].id).execute()
    again = write_points([(axis.id, Sample(3.0, 3.0))])
    assert again[0].id > stored[-1].id


def test_failed_batch_changes_nothing(axis: Axis) -> None:
    write_points([(axis.id, Sample(1.0, 1.0))])
    with pytest.raises(pw.IntegrityError):
        write_points([(axis.id, Sample(2.0, 2.0)), (999_999, Sample(1.0, 1.0))])  # no such axis
    assert [(x, y) for _, x, y in rows(axis)] == [(1.0, 1.0)]
    assert fresh(axis).point_count == 1


# -- reading ----------------------------------------------------------------------------------------


@pytest.fixture
def ten(axis: Axis) -> Axis:
    write_points([(axis.id, Sample(float(i), float(i * 10))) for i in range(10)])
    return axis


def test_query_points_window(ten: Axis) -> None:
    assert [x for _, x, _ in query_points(ten)] == [float(i) for i in range(10)]
    assert [x for _, x, _ in query_points(ten, since=3, until=5)] == [3.0, 4.0, 5.0]
    assert [x for _, x, _ in query_points(ten, limit=3)] == [0.0, 1.0, 2.0]
    assert [x for _, x, _ in query_points(ten, limit=3, newest=True)] == [7.0, 8.0, 9.0]
    assert [x for _, x, _ in query_points(ten, since=2, limit=2, newest=True)] == [8.0, 9.0]
    assert query_points(ten, since=100) == []
    assert all(y == x * 10 for _, x, y in query_points(ten))


def test_downsample_small_range_returns_everything(ten: Axis) -> None:
    assert query_points(ten, max_points=10) == query_points(ten)
    assert query_points(ten, max_points=1000, since=2) == query_points(ten, since=2)
    with pytest.raises(InvalidInput):
        query_points(ten, max_points=1)


def test_downsample_keeps_each_buckets_min_and_max(axis: Axis) -> None:
    rnd = random.Random(7)
    n = 3000
    points = [(float(i), rnd.uniform(-1, 1)) for i in range(n)]
    points[1234] = (1234.0, 99.0)  # a single spike
    points[2345] = (2345.0, -99.0)
    write_points([(axis.id, Sample(x, y)) for x, y in points])
    for max_points in (2, 10, 101, 1000):
        result = query_points(axis, max_points=max_points)
        assert len(result) <= max_points
        xs = [x for _, x, _ in result]
        assert xs == sorted(xs) and len(set(xs)) == len(xs), "oldest first, no duplicates"
        ys = {y for _, _, y in result}
        assert 99.0 in ys and -99.0 in ys, "spikes survive"
        by_x = {x: y for x, y in points}
        ids = {x: i for i, x, _ in rows(axis)}
        assert all(by_x[x] == y and ids[x] == i for i, x, y in result), "real points with their ids"
        # Every bucket (equal widths, aligned to multiples of the width) gives its lowest and highest y.
        plan = plan_buckets(0.0, float(n - 1), max_points // 2)
        used = plan.bucket_of(n - 1) - plan.bucket_of(0) + 1
        assert max_points // 4 <= used <= max_points // 2
        for b in range(plan.bucket_of(0), plan.bucket_of(n - 1) + 1):
            inside = [y for x, y in points if plan.bucket_of(x) == b]
            got = [y for _, x, y in result if plan.bucket_of(x) == b]
            assert sorted(got) == sorted({min(inside), max(inside)}), (max_points, b)


def test_downsample_with_window_and_empty_buckets(axis: Axis) -> None:
    # Two clusters far apart: the buckets in between are empty.
    xs = [float(i) for i in range(100)] + [float(10_000 + i) for i in range(100)]
    write_points([(axis.id, Sample(x, x % 7)) for x in xs])
    result = query_points(axis, max_points=20, since=50, until=10_049)
    assert len(result) <= 20
    assert all(50 <= x <= 10_049 for _, x, _ in result)
    assert result[0][1] >= 50 and result[-1][1] <= 10_049
    assert {x for _, x, _ in result} & {float(i) for i in range(50, 100)}
    assert {x for _, x, _ in result} & {float(10_000 + i) for i in range(50)}


def test_downsample_constant_values(axis: Axis) -> None:
    write_points([(axis.id, Sample(float(i), 5.0)) for i in range(100)])
    result = query_points(axis, max_points=10)
    assert 1 <= len(result) <= 10 and {y for _, _, y in result} == {5.0}


def test_points_after(feed: Feed, owner: User) -> None:
    a = create_axis(feed, "a")
    b = create_axis(feed, "b")
    elsewhere = create_axis(create_feed("other_feed", owner), "a")
    stored = write_points([(a.id, Sample(1.0, 1.0)), (b.id, Sample(1.0, 2.0)), (elsewhere.id, Sample(1.0, 3.0))])
    stored += write_points([(a.id, Sample(1.0, 4.0))])  # replaces: new id, old one gone
    got = points_after(feed, 0)
    assert [(name, x, y) for _, name, x, y in got] == [("b", 1.0, 2.0), ("a", 1.0, 4.0)]
    assert [i for i, *_ in got] == sorted(i for i, *_ in got)
    assert points_after(feed, got[0][0]) == got[1:]
    assert points_after(feed, got[-1][0]) == []
    assert points_after(feed, 0, limit=1) == got[:1]


def test_iter_export(feed: Feed) -> None:
    a = create_axis(feed, "a")
    b = create_axis(feed, "b")
    write_points([(b.id, Sample(2.0, 20.0)), (a.id, Sample(3.0, 3.0)), (a.id, Sample(1.0, 1.0)),
                  (b.id, Sample(1.0, 10.0))])
    assert list(iter_export(feed, [a, b], None, None)) == [
        ("a", 1.0, 1.0), ("a", 3.0, 3.0), ("b", 1.0, 10.0), ("b", 2.0, 20.0)
    ]
    assert list(iter_export(feed, [b], 1.5, None)) == [("b", 2.0, 20.0)]
    assert list(iter_export(feed, [a, b], None, 1.0)) == [("a", 1.0, 1.0), ("b", 1.0, 10.0)]


def test_concurrent_writers_of_the_same_points(axis: Axis, any_db: pw.Database) -> None:
    """Bridges of a share group may store the same (axis, x) at once: each point ends up once,
    and point_count stays the number of rows."""
    write_points([(axis.id, Sample(float(x), 0.0)) for x in range(0, 200, 2)])

    def writer() -> int:
        for round_ in range(5):
            write_points([(axis.id, Sample(float(x), float(round_))) for x in range(200)])
        return 0

    _, errors = _race(4, writer, any_db)
    assert not errors, errors
    assert len(rows(axis)) == 200
    assert fresh(axis).point_count == 200


def test_max_points_is_capped(axis: Axis, monkeypatch: pytest.MonkeyPatch) -> None:
    import rtdp.store.read

    monkeypatch.setattr(rtdp.store.read, "MAX_LIMIT", 50)
    write_points([(axis.id, Sample(float(i), float(i))) for i in range(120)])
    result = query_points(axis, max_points=10**9)
    assert len(result) <= 50 and {y for _, _, y in result} >= {0.0, 119.0}


def test_postgres_writers_of_a_feed_commit_in_id_order(pg_db: pw.Database) -> None:
    """Two writers (bridges of a share group) storing points of one feed, on different axes: the
    second waits for the first to commit, so a feed's ids are committed in order and an SSE client
    resuming from the newest id it saw cannot miss a point committed later with a smaller id."""
    owner = User.create(email="pg@nothing.com", password_hash="unused")
    feed = create_feed("ordered", owner)
    a, b = create_axis(feed, "a"), create_axis(feed, "b")
    inserted, release, b_done = threading.Event(), threading.Event(), threading.Event()
    ids: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with pg_db.atomic():
                ids["a"] = [p.id for p in write_points([(a.id, Sample(1.0, 1.0))])]
                inserted.set()
                release.wait(30)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            pg_db.close()

    def second() -> None:
        try:
            ids["b"] = [p.id for p in write_points([(b.id, Sample(1.0, 2.0))])]
            b_done.set()
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            pg_db.close()

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert inserted.wait(30)
    threads.append(threading.Thread(target=second))
    threads[1].start()
    try:
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        wait_for(lambda: pg_db.execute_sql(waiting).fetchone()[0] > 0, what="the second writer waiting")
        assert not b_done.is_set()
    finally:
        release.set()
        for thread in threads:
            thread.join(30)
    assert not errors, errors
    assert max(ids["a"]) < min(ids["b"])
    assert [name for _, name, _, _ in points_after(feed, 0)] == ["a", "b"]


def test_each_write_says_the_head_its_feed_had_before(feed: Feed, axis: Axis, owner: User) -> None:
    """FeedHead moves with every write of a feed, whatever the axis; other feeds keep theirs."""
    other = create_axis(feed, "axis_a01")
    elsewhere = create_axis(create_feed("elsewhere", owner), "a")
    first = write_points([(axis.id, Sample(1.0, 1.0))])
    assert first.follows == {axis.id: None}
    second = write_points([(other.id, Sample(1.0, 2.0)), (elsewhere.id, Sample(1.0, 3.0))])
    assert second.follows == {other.id: first[0].id, elsewhere.id: None}
    replaced = write_points([(axis.id, Sample(1.0, 4.0))])  # a replaced point gets a new id: the head moves
    assert replaced.follows == {axis.id: next(p.id for p in second if p.axis_id == other.id)}
    assert feed_head(feed) == replaced[0].id
    assert write_points([]).follows == {}


def test_a_head_moved_elsewhere_is_read_not_assumed(feed: Feed, axis: Axis, any_db: pw.Database) -> None:
    """write_points remembers the heads it moved and moves them on that condition; where another writer
    moved the head meanwhile, or the transaction that moved it rolled back, the row's head is the one
    followed. The feeds given by the caller spare the axis -> feed read and change nothing else."""
    first = write_points([(axis.id, Sample(1.0, 1.0))], feeds={axis.id: feed.id})
    FeedHead.update(last_id=first[0].id + 1000).where(FeedHead.feed == feed.id).execute()  # another writer
    second = write_points([(axis.id, Sample(2.0, 1.0))], feeds={axis.id: feed.id})
    assert second.follows == {axis.id: first[0].id + 1000}
    with pytest.raises(RuntimeError), any_db.atomic():
        write_points([(axis.id, Sample(3.0, 1.0))])  # moves the head, then rolls back
        raise RuntimeError
    assert feed_head(feed) == second[0].id
    third = write_points([(axis.id, Sample(4.0, 1.0))])
    assert third.follows == {axis.id: second[0].id}
    assert feed_head(feed) == third[0].id

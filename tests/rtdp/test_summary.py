"""The per-block summaries (rtdp.store.summary): always equal to what the points say, whatever happens to
the points, and downsampling from them answers exactly as downsampling from the points."""

from __future__ import annotations

import math
import random
import threading

import peewee as pw
import pytest

from rtdp import retention
from rtdp.codec import Sample
from rtdp.models import Axis, Feed, Point, Summary, User
from rtdp.store import create_axis, create_feed, plan_buckets, query_points, summary, write_points

PLAN_AT = 200  # small, so that the tests reach the summary quickly


@pytest.fixture(autouse=True)
def plan_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summary, "PLAN_AT", PLAN_AT)


@pytest.fixture
def feed(any_db: pw.Database) -> Feed:
    return create_feed("f", User.create(email="s@example.com", password_hash="x"))


@pytest.fixture
def axis(feed: Feed) -> Axis:
    return create_axis(feed, "a")


def points(axis: Axis) -> list[tuple[int, float, float]]:
    query = Point.select(Point.id, Point.x, Point.y).where(Point.axis == axis.id).order_by(Point.x)
    return [(i, float(x), float(y)) for i, x, y in query.tuples()]


def level_of(axis: Axis) -> int | None:
    return Axis.get_by_id(axis.id).summary_level


def assert_summary_exact(axis: Axis) -> None:
    """Every level's rows equal the aggregate of the points, computed from scratch."""
    level = level_of(axis)
    assert level is not None and level != summary.OFF
    expected = summary.aggregate([(i, axis.id, x, y) for i, x, y in points(axis)], level)
    for k in range(level, level + summary.LEVELS):
        got = {
            b: [n, ly, lx, li, hy, hx, hi]
            for b, n, ly, lx, li, hy, hx, hi in Summary.select(
                Summary.block, Summary.points, Summary.min_y, Summary.min_x, Summary.min_id,
                Summary.max_y, Summary.max_x, Summary.max_id,
            ).where((Summary.axis == axis.id) & (Summary.level == k)).tuples()
        }
        assert got == expected, f"level {k}"
        expected = summary.coarsen(expected)


def reference(
    axis: Axis, max_points: int, since: float | None = None, until: float | None = None
) -> list[tuple[int, float, float]]:
    """Downsampling done in Python over all points, with the same buckets."""
    inside = [p for p in points(axis) if (since is None or p[1] >= since) and (until is None or p[1] <= until)]
    if len(inside) <= max_points:
        return inside
    level = level_of(axis)
    top = None if level is None or level == summary.OFF else level + summary.LEVELS - 1
    plan = plan_buckets(inside[0][1], inside[-1][1], max_points // 2, top)
    if top is not None and plan.level < level:  # type: ignore[operator]
        plan = plan_buckets(inside[0][1], inside[-1][1], max_points // 2)
    buckets: dict[int, list[tuple[int, float, float]]] = {}
    for p in inside:
        buckets.setdefault(plan.bucket_of(p[1]), []).append(p)
    result = []
    for b in sorted(buckets):
        group = buckets[b]
        low = min(group, key=lambda p: (p[2], p[1]))
        high = min(group, key=lambda p: (-p[2], p[1]))
        result += sorted({low, high}, key=lambda p: p[1])
    return result


def test_planned_once_enough_points(axis: Axis) -> None:
    write_points([(axis.id, Sample(float(i), float(i % 7))) for i in range(PLAN_AT - 1)])
    assert level_of(axis) is None
    assert Summary.select().count() == 0
    write_points([(axis.id, Sample(float(PLAN_AT), 3.0))])
    # 200 points over 200 seconds: blocks of 16 s hold about 16 points.
    assert level_of(axis) == 1
    assert_summary_exact(axis)


def test_exact_through_appends_replacements_and_purges(axis: Axis, feed: Feed) -> None:
    rnd = random.Random(11)
    xs = list(range(-3000, 3000))
    rnd.shuffle(xs)  # out of order, negative x included
    for start in range(0, len(xs), 500):
        write_points([(axis.id, Sample(float(x) * 0.37, rnd.uniform(-5, 5))) for x in xs[start : start + 500]])
    assert_summary_exact(axis)
    # Replacements (same x, new y and new id) that remove extremes and add new ones.
    for _ in range(5):
        chosen = rnd.sample(xs, 300)
        write_points([(axis.id, Sample(float(x) * 0.37, rnd.choice([-50.0, 50.0, 0.0]))) for x in chosen])
        assert_summary_exact(axis)
    # Single points, as a bridge under light load writes them.
    for x in range(3000, 3020):
        write_points([(axis.id, Sample(float(x) * 0.37, 100.0 if x == 3010 else 1.0))])
    assert_summary_exact(axis)
    # Retention removes the oldest points in batches.
    Feed.update(retention_points=2500).where(Feed.id == feed.id).execute()
    report = retention.purge(now=1e9, batch=700, pause=0)
    assert report.removed == len(xs) + 20 - 2500
    assert_summary_exact(axis)
    for max_points in (2, 10, 100, 333, 1000):
        assert query_points(axis, max_points=max_points) == reference(axis, max_points)
        assert query_points(axis, max_points=max_points, since=-300.5, until=900.25) == reference(
            axis, max_points, -300.5, 900.25
        )


@pytest.mark.parametrize("max_points", [2, 20, 200, 2000])
def test_downsampling_from_the_summary_equals_the_points(axis: Axis, max_points: int) -> None:
    rnd = random.Random(max_points)
    n = 20_000
    write_points([(axis.id, Sample(1.7e9 + i * 0.5, rnd.gauss(0, 1))) for i in range(n)])
    write_points([(axis.id, Sample(1.7e9 + 1234.5, 99.0)), (axis.id, Sample(1.7e9 + 4321.0, -99.0))])
    assert level_of(axis) not in (None, summary.OFF)
    windows = [(None, None), (1.7e9 + 100.3, None), (None, 1.7e9 + 7000.7), (1.7e9 + 17.1, 1.7e9 + 9000.9),
               (1.7e9 + 5000, 1.7e9 + 5003)]
    for since, until in windows:
        got = query_points(axis, max_points=max_points, since=since, until=until)
        assert got == reference(axis, max_points, since, until), (since, until)
        assert len(got) <= max_points
    whole = {y for _, _, y in query_points(axis, max_points=max_points)}
    assert {99.0, -99.0} <= whole, "spikes survive"


def test_buckets_are_at_least_half_of_those_asked() -> None:
    rnd = random.Random(3)
    for _ in range(2000):
        low = rnd.uniform(-1e9, 1e9)
        high = low + 10 ** rnd.uniform(-3, 9)
        buckets = rnd.randint(1, 50_000)
        plan = plan_buckets(low, high, buckets)
        used = plan.bucket_of(high) - plan.bucket_of(low) + 1
        assert used <= buckets
        assert used >= min(buckets, 2) // 2, (low, high, buckets, plan)
        if plan.block_width >= math.ulp(low):  # else the blocks are finer than floats can tell apart
            lo, hi = plan.bounds(plan.bucket_of(low))
            assert lo <= low < hi


def test_x_beyond_the_block_numbers_turns_the_summary_off(axis: Axis) -> None:
    write_points([(axis.id, Sample(float(i), float(i % 5))) for i in range(PLAN_AT + 50)])
    assert level_of(axis) == 1
    write_points([(axis.id, Sample(1e300, 7.0))])  # a float x far beyond 2**62 blocks of 16
    assert level_of(axis) == summary.OFF
    assert Summary.select().where(Summary.axis == axis.id).count() == 0
    assert query_points(axis, max_points=10) == reference(axis, 10)
    other = create_axis(Feed.get(), "huge")
    write_points([(other.id, Sample(1e300 * (i + 1), 1.0)) for i in range(PLAN_AT)])
    assert level_of(other) == summary.OFF
    assert query_points(other, max_points=10) == reference(other, 10)
    edge = create_axis(Feed.get(), "edge")  # a span near the float limit: planning must not overflow
    write_points([(edge.id, Sample(i * (1.5e308 / PLAN_AT), 1.0)) for i in range(PLAN_AT)])
    assert level_of(edge) == summary.OFF
    assert query_points(edge, max_points=10) == reference(edge, 10)


def test_rows_go_with_their_axis(axis: Axis) -> None:
    write_points([(axis.id, Sample(float(i), 1.0)) for i in range(PLAN_AT)])
    assert Summary.select().count() > 0
    axis.delete_instance()
    assert Summary.select().count() == 0


def test_exact_with_concurrent_writers_and_a_purge(axis: Axis, feed: Feed, any_db: pw.Database) -> None:
    """Bridges of a share group (PostgreSQL) or a bridge and `rtdp import` (SQLite) writing the same
    axis at once, some replacing each other's points, while retention purges: still exact."""
    write_points([(axis.id, Sample(float(x), 0.0)) for x in range(0, 2 * PLAN_AT, 2)])
    Feed.update(retention_points=3 * PLAN_AT).where(Feed.id == feed.id).execute()
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for round_ in range(8):
                xs = rnd.sample(range(-2000, 4 * PLAN_AT), 150)
                write_points([(axis.id, Sample(float(x), rnd.uniform(-9, 9) * round_)) for x in xs])
                if seed == 0 and round_ % 3 == 0:
                    retention.purge(now=1e9, batch=50, pause=0)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            any_db.close()  # each thread has its own connection

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert_summary_exact(axis)
    assert Axis.get_by_id(axis.id).point_count == len(points(axis))

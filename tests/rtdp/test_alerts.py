"""Alert rules (rtdp.alerts) through `rtdp alert`, and judging (rtdp.alerting) against a real database."""

from __future__ import annotations

import json
from pathlib import Path

import peewee as pw
from click.testing import CliRunner, Result

from rtdp import alerts
from rtdp.alerting import Judge, Rule, State, Sweeper, step
from rtdp.casts import YCast
from rtdp.cli import main
from rtdp.models import AlertEvent, AlertLease, AlertRule, Axis, User
from rtdp.permissions import OPERATOR
from rtdp.store import create_axis, create_feed
from rtdp.store.write import StoredPoint


def run(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--data-dir", str(data_dir)], catch_exceptions=False)


def test_rtdp_alert_add_list_remove(tmp_path: Path) -> None:
    assert run(tmp_path, "user", "add", "ep@nothing.com", "--password", "a-long-password").exit_code == 0
    assert run(tmp_path, "feed", "add", "door", "--owner", "ep@nothing.com", "--y-cast", "bool").exit_code == 0
    assert run(tmp_path, "axis", "add", "door", "front").exit_code == 0
    added = run(tmp_path, "alert", "add", "door", "front", "--name", "opened", "--changes", "--to", "open",
                "--severity", "critical", "--publish", "--webhook", "https://93.184.215.14/x")
    assert added.exit_code == 0 and added.output.startswith("alert 1: opened (changes) on door/front"), added.output
    listed = run(tmp_path, "alert", "list").output.splitlines()
    assert listed == ["1\tok\tdoor/front\tchanges to true\tcritical\topened"]
    refused = run(tmp_path, "alert", "add", "door", "front", "--name", "x", "--above", "3")
    assert refused.exit_code != 0 and "kind" in refused.output
    both = run(tmp_path, "alert", "add", "door", "front", "--name", "x", "--changes", "--silent", "3")
    assert both.exit_code != 0 and "exactly one" in both.output
    assert run(tmp_path, "alert", "remove", "1").output.strip() == "removed alert 1"
    assert run(tmp_path, "alert", "list").output == ""
    assert run(tmp_path, "alert", "remove", "1").exit_code != 0


def _rule(kind: str, **fields: object) -> Rule:
    base: dict[str, object] = {
        "id": 1, "name": "r", "feed": "f", "axis": "a", "axis_id": 1, "kind": kind, "threshold": None,
        "hysteresis": 0.0, "for_s": 0.0, "value": None, "silent_s": None, "severity": "warning",
        "repeat_min": None, "actions": (), "secret": "s", "owner_id": 1, "y_cast": YCast.FLOAT,
    }
    base.update(fields)
    return Rule(**base)  # type: ignore[arg-type]


def _walk(rule: Rule, values: list[tuple[float, float]]) -> list[str | None]:
    st = State("ok", None, None, None, None)
    return [step(rule, st, y, now) for now, y in values]


def test_above_with_hysteresis_and_for() -> None:
    rule = _rule("above", threshold=30.0, hysteresis=2.0)
    assert _walk(rule, [(0, 29), (1, 31), (2, 35), (3, 29), (4, 28), (5, 31)]) == [
        None, "firing", None, None, "ok", "firing"]
    held = _rule("above", threshold=30.0, for_s=10.0)
    assert _walk(held, [(0, 31), (5, 31), (6, 29), (7, 31), (16, 32), (17, 40)]) == [
        None, None, None, None, None, "firing"]


def test_below_changes_and_silent() -> None:
    assert _walk(_rule("below", threshold=-15.0, hysteresis=1.0), [(0, -14), (1, -16), (2, -14.5), (3, -13)]) == [
        None, "firing", None, "ok"]
    assert _walk(_rule("changes"), [(0, 1), (1, 1), (2, 0), (3, 1)]) == [None, None, "changed", "changed"]
    assert _walk(_rule("changes", value=1.0), [(0, 0), (1, 1), (2, 1), (3, 0), (4, 1)]) == [
        None, "firing", None, "ok", "firing"]
    st = State("firing", 0.0, None, None, None)
    assert step(_rule("silent", silent_s=5.0), st, 1.0, 10.0) == "ok" and st.state == "ok"


def test_judge_stores_transitions_with_their_points_and_sweeps_silence(sqlite_db: pw.Database) -> None:
    owner = User.create(email="o@example.com", password_hash="-")
    feed = create_feed("f", owner)
    axis = create_axis(feed, "a")
    hot = alerts.add_rule(OPERATOR, {"name": "hot", "feed": "f", "axis": "a", "kind": "above", "threshold": 30})
    quiet = alerts.add_rule(OPERATOR, {"name": "quiet", "feed": "f", "axis": "a", "kind": "silent", "silent_s": 0.1})
    judge = Judge(sqlite_db)
    with sqlite_db.atomic():
        fired = judge.judge([StoredPoint(7, axis.id, 1.0, 20.0), StoredPoint(8, axis.id, 2.0, 31.0)])
    assert [(a.rule_name, a.state, a.point) for a in fired] == [("hot", "firing", {"id": 8, "x": 2.0, "y": 31.0})]
    assert json.loads(json.dumps(fired[0].document()))["rule"]["name"] == "hot"
    event = AlertEvent.get()
    assert (event.rule_id, event.state, event.point_id, event.y) == (hot.id, "firing", 8, 31.0)
    assert AlertRule.get_by_id(hot.id).state == "firing"
    # A second judge (another process, or this one after a restart) carries on from the stored state.
    with sqlite_db.atomic():
        assert Judge(sqlite_db).judge([StoredPoint(9, axis.id, 3.0, 33.0)]) == []
    # Silence: only the lease holder judges it.
    Axis.update(last_seen=0.0).execute()
    AlertRule.update(since=0.0).where(AlertRule.id == quiet.id).execute()
    first, second = Sweeper(sqlite_db, "one"), Sweeper(sqlite_db, "two")
    swept = first.sweep()
    assert [(a.rule_name, a.state) for a in swept] == [("quiet", "firing")]
    assert second.sweep() == [] and not second.holding and AlertLease.get().holder == "one"
    assert first.sweep() == []  # firing already: nothing again
    with sqlite_db.atomic():
        back = Judge(sqlite_db).judge([StoredPoint(10, axis.id, 4.0, 10.0)])
    assert sorted((a.rule_name, a.state) for a in back) == [("hot", "ok"), ("quiet", "ok")]


def test_two_judges_see_each_others_transitions(sqlite_db: pw.Database) -> None:
    """Two processes judging one rule (two bridges): each one's cached state is dropped once the other
    changed a state, so neither misses nor repeats a transition."""
    owner = User.create(email="o@example.com", password_hash="-")
    axis = create_axis(create_feed("f", owner), "a")
    rule = alerts.add_rule(OPERATOR, {"name": "hot", "feed": "f", "axis": "a", "kind": "above", "threshold": 30})
    one, two = Judge(sqlite_db), Judge(sqlite_db)

    def judge(judge: Judge, point_id: int, y: float) -> list[str]:
        with sqlite_db.atomic():
            return [a.state for a in judge.judge([StoredPoint(point_id, axis.id, float(point_id), y)])]

    assert judge(one, 1, 20) == []  # one caches "ok": 20 is quiet for it from now on
    assert judge(one, 2, 25) == []
    assert judge(two, 3, 35) == ["firing"]
    assert judge(one, 4, 36) == []  # not a second firing
    assert judge(one, 5, 10) == ["ok"]  # not missed either
    assert judge(two, 6, 12) == []
    assert judge(two, 7, 40) == ["firing"]
    assert [e.state for e in AlertEvent.select().where(AlertEvent.rule == rule.id)] == ["firing", "ok", "firing"]


def test_the_sweeper_fires_held_conditions_and_repeats(sqlite_db: pw.Database) -> None:
    owner = User.create(email="o@example.com", password_hash="-")
    axis = create_axis(create_feed("f", owner), "a")
    held = alerts.add_rule(OPERATOR, {"name": "held", "feed": "f", "axis": "a", "kind": "above", "threshold": 30,
                                      "for_s": 0.2, "repeat_min": 1})
    with sqlite_db.atomic():
        assert Judge(sqlite_db).judge([StoredPoint(1, axis.id, 1.0, 31.0)]) == []  # pending, not yet firing
    sweeper = Sweeper(sqlite_db, "one")
    assert sweeper.sweep() == []
    AlertRule.update(pending_since=AlertRule.pending_since - 1).execute()  # as if 1 s went by
    assert [(a.state, a.repeat) for a in sweeper.sweep()] == [("firing", False)]
    assert sweeper.sweep() == []
    AlertRule.update(notified=AlertRule.notified - 61).execute()  # a minute later, still firing
    assert [(a.state, a.repeat) for a in sweeper.sweep()] == [("firing", True)]
    assert sweeper.sweep() == []
    assert [e.state for e in AlertEvent.select().where(AlertEvent.rule == held.id)] == ["firing"]

from __future__ import annotations

import math

import pytest

from emulator.sources import DoorSource, RandomWalkSource, Reading, SineSource, X10Source
from rtdp.casts import YCast

T0 = 1_795_000_000.0


def run(source: SineSource | DoorSource | X10Source | RandomWalkSource, steps: int) -> list[Reading]:
    out: list[Reading] = []
    for i in range(steps):
        out.extend(source.step(T0 + i * source.interval))
    return out


def test_sine_axes_are_phase_shifted_and_advance_by_step() -> None:
    sine = SineSource(step=0.25)
    first = sine.step(T0)
    assert [r.axis for r in first] == ["axis_at_0_degrees", "axis_at_45_degrees", "axis_at_90_degrees"]
    assert [r.y for r in first] == pytest.approx([0.0, math.sin(math.pi / 4), 1.0])
    assert all(r.x == T0 for r in first)
    second = sine.step(T0 + 1)
    assert second[0].y == pytest.approx(math.sin(0.25))
    assert second[2].y == pytest.approx(math.sin(0.25 + math.pi / 2))
    assert sine.state() == {"t": pytest.approx(0.5)}


def test_sine_restored_state_continues_the_wave() -> None:
    straight = SineSource(step=0.3)
    expected = run(straight, 10)
    first = SineSource(step=0.3)
    head = run(first, 4)
    second = SineSource(step=0.3)
    second.restore(first.state())
    tail = [r for i in range(4, 10) for r in second.step(T0 + i)]
    assert [r.y for r in head + tail] == pytest.approx([r.y for r in expected])


def test_sine_position_stays_bounded() -> None:
    sine = SineSource(step=3.0)
    run(sine, 1000)
    assert 0 <= sine.state()["t"] < 2 * math.pi


@pytest.mark.parametrize("factory", [DoorSource, X10Source, RandomWalkSource])
def test_same_seed_same_readings(factory: type[DoorSource | X10Source | RandomWalkSource]) -> None:
    a = run(factory(seed=7), 600)
    b = run(factory(seed=7), 600)
    c = run(factory(seed=8), 600)
    assert a == b
    assert a != c


def test_door_reports_then_toggles_within_dwell_bounds() -> None:
    door = DoorSource(seed=1, min_dwell=3, max_dwell=10)
    assert door.y_cast is YCast.BOOL
    events = run(door, 300)
    assert events[0] == Reading("state", T0, False)
    values = [e.y for e in events]
    assert all(isinstance(v, bool) for v in values)
    assert all(a != b for a, b in zip(values, values[1:], strict=False)), "every event after the first is a change"
    gaps = [b.x - a.x for a, b in zip(events[1:], events[2:], strict=False)]
    assert gaps and all(3 <= g <= 11 for g in gaps)  # the dwell, rounded up to the next one-second step
    assert door.state() == {"open": values[-1]}


def test_x10_restore_keeps_the_switch_position() -> None:
    x10 = X10Source(seed=3)
    x10.restore({"on": True})
    assert x10.step(T0) == [Reading("state", T0, True)]
    x10.restore({"on": "garbage"})
    assert x10.state() == {"on": True}


def test_random_walk_stays_within_bounds_and_restores_its_value() -> None:
    walk = RandomWalkSource(seed=5, mean=20, sigma=5, low=15, high=25)
    values = [r.y for r in run(walk, 2000)]
    assert all(isinstance(v, float) and 15 <= v <= 25 for v in values)
    assert len(set(values)) > 100
    again = RandomWalkSource(seed=5)
    again.restore({"value": 30.5})
    assert again.state() == {"value": 30.5}
    again.restore({"value": float("nan")})
    assert again.state() == {"value": 30.5}


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError):
        SineSource(interval=0)
    with pytest.raises(ValueError):
        DoorSource(min_dwell=5, max_dwell=1)

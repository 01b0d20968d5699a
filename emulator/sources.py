"""Simulated devices. Each source turns a time into readings and keeps its position in a small JSON state.

`step(now)` depends only on `now`, the source's state and its `random.Random(seed)`, so a fixed seed and the
same times give the same readings (tests rely on it). The runner persists `state()` after each step and
calls `restore()` on start, so a restart continues where it stopped.
"""

from __future__ import annotations

import math
import random
from typing import Any, ClassVar, NamedTuple

from rtdp.casts import YCast
from rtdp.emulation import check_source, default_feed

State = dict[str, Any]
# Each registered source's implementation by name, filled as the classes are defined (emulator.system's
# too, once imported: emulator.runner does).
SOURCES: dict[str, type[Source]] = {}


class Reading(NamedTuple):
    axis: str
    x: float  # UTC epoch seconds
    y: float | bool


class Source:
    """Base class: a named feed with fixed axes, stepped every `interval` seconds.

    A subclass that sets `name` is the implementation of that source of rtdp.emulation's registry (an
    unknown name fails when its module is imported); `SOURCES` maps the names to them.
    """

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            SOURCES[check_source(cls.name)] = cls
    y_cast: ClassVar[YCast] = YCast.FLOAT
    # Axis units set when the emulator makes an axis (a bool axis's "false/true" names its two states).
    units: ClassVar[dict[str, str]] = {}
    feed: str
    axes: tuple[str, ...]
    interval: float

    def __init__(self, *, seed: int | None = None, interval: float = 1.0) -> None:
        if not interval > 0:
            raise ValueError(f"{self.name}: interval must be positive, got {interval}")
        self.rng = random.Random(seed)
        self.interval = interval

    def step(self, now: float) -> list[Reading]:
        raise NotImplementedError

    def state(self) -> State:
        return {}

    def restore(self, state: State) -> None:
        """Take back a state saved by `state()`; unknown or malformed values leave the current one."""


def _float(state: State, key: str, default: float) -> float:
    value = state.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return default


class SineSource(Source):
    """The original's `sin_wave_over_time_in_seconds`: three axes 45 degrees apart, y = sin(t + phase)."""

    name = "sine"
    PHASES: ClassVar[dict[str, float]] = {
        "axis_at_0_degrees": 0.0,
        "axis_at_45_degrees": math.pi / 4,
        "axis_at_90_degrees": math.pi / 2,
    }

    def __init__(
        self,
        *,
        seed: int | None = None,
        interval: float = 1.0,
        step: float = 0.1,
        feed: str | None = None,
    ) -> None:
        super().__init__(seed=seed, interval=interval)
        self.feed = default_feed(self.name) if feed is None else feed
        self.axes = tuple(self.PHASES)
        self.angle_step = step
        self.t = 0.0  # the position in the wave, in radians; persisted

    def step(self, now: float) -> list[Reading]:
        readings = [Reading(axis, now, math.sin(self.t + phase)) for axis, phase in self.PHASES.items()]
        # Kept in [0, 2*pi) so a long run never loses precision.
        self.t = math.fmod(self.t + self.angle_step, 2 * math.pi)
        return readings

    def state(self) -> State:
        return {"t": self.t}

    def restore(self, state: State) -> None:
        self.t = _float(state, "t", self.t)


class _Toggle(Source):
    """A two-state device that flips after a random dwell time drawn from [min_dwell, max_dwell]."""

    y_cast = YCast.BOOL
    key: ClassVar[str] = "on"
    # Each device's typical dwell times (seconds), the defaults of min_dwell and max_dwell.
    dwell: ClassVar[tuple[float, float]] = (1.0, 10.0)

    def __init__(
        self,
        *,
        seed: int | None = None,
        interval: float = 1.0,
        feed: str | None = None,
        axis: str = "state",
        min_dwell: float | None = None,
        max_dwell: float | None = None,
    ) -> None:
        super().__init__(seed=seed, interval=interval)
        min_dwell = self.dwell[0] if min_dwell is None else min_dwell
        max_dwell = self.dwell[1] if max_dwell is None else max_dwell
        if not 0 <= min_dwell <= max_dwell:
            raise ValueError(f"{self.name}: need 0 <= min_dwell <= max_dwell, got {min_dwell}, {max_dwell}")
        self.feed = default_feed(self.name) if feed is None else feed
        self.axes = (axis,)
        self.min_dwell = min_dwell
        self.max_dwell = max_dwell
        self.value = False
        self.next_change: float | None = None  # None: report the current value at the first step

    def step(self, now: float) -> list[Reading]:
        if self.next_change is None:
            self.next_change = now + self.rng.uniform(self.min_dwell, self.max_dwell)
            return [Reading(self.axes[0], now, self.value)]
        if now < self.next_change:
            return []
        self.value = not self.value
        self.next_change = now + self.rng.uniform(self.min_dwell, self.max_dwell)
        return [Reading(self.axes[0], now, self.value)]

    def state(self) -> State:
        # The next change time is not kept: after a restart the device reports where it stands, then waits.
        return {self.key: self.value}

    def restore(self, state: State) -> None:
        value = state.get(self.key)
        if isinstance(value, bool):
            self.value = value


class DoorSource(_Toggle):
    """A door sensor: open (true) and closed (false) at random intervals."""

    name = "door"
    key = "open"
    units = {"state": "closed/open"}
    dwell = (3.0, 60.0)


class X10Source(_Toggle):
    """An X10 appliance switch going on and off with random dwell times."""

    name = "x10"
    key = "on"
    units = {"state": "off/on"}
    dwell = (10.0, 300.0)


class RandomWalkSource(Source):
    """A temperature-like float: a random walk pulled gently back towards its mean and kept within bounds."""

    name = "random_walk"
    units = {"celsius": "°C"}

    def __init__(
        self,
        *,
        seed: int | None = None,
        interval: float = 1.0,
        feed: str | None = None,
        axis: str = "celsius",
        mean: float = 21.0,
        sigma: float = 0.2,
        low: float = -10.0,
        high: float = 45.0,
    ) -> None:
        super().__init__(seed=seed, interval=interval)
        if not low <= mean <= high:
            raise ValueError(f"random_walk: need low <= mean <= high, got {low}, {mean}, {high}")
        self.feed = default_feed(self.name) if feed is None else feed
        self.axes = (axis,)
        self.mean = float(mean)
        self.sigma = float(sigma)
        self.low = float(low)
        self.high = float(high)
        self.value = self.mean  # persisted

    def step(self, now: float) -> list[Reading]:
        pull = 0.02 * (self.mean - self.value)
        self.value = min(self.high, max(self.low, self.value + pull + self.rng.gauss(0.0, self.sigma)))
        return [Reading(self.axes[0], now, round(self.value, 3))]

    def state(self) -> State:
        return {"value": self.value}

    def restore(self, state: State) -> None:
        self.value = min(self.high, max(self.low, _float(state, "value", self.value)))



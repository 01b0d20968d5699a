from __future__ import annotations

from pathlib import Path

import pytest

from emulator.errors import EmulatorError
from emulator.system import SystemSource
from rtdp.emulation import system_feed
from rtdp.topic import check_name
from tests.support.env import wait_for

MEMINFO = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n"
NET = (
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls\n"
    "    lo: {lo} 10 0 0 0 0 0 0 {lo} 10 0 0 0 0 0 0\n"
    "  eth0: {rx} 10 0 0 0 0 0 0 {tx} 10 0 0 0 0 0 0\n"
)


def fake_proc(root: Path, *, busy: int, idle: int, rx: int, tx: int) -> None:
    (root / "net").mkdir(parents=True, exist_ok=True)
    (root / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 0 0 1 0 0 0 0 0 0\n")
    (root / "meminfo").write_text(MEMINFO)
    (root / "loadavg").write_text("0.75 0.50 0.25 1/100 4242\n")
    (root / "net" / "dev").write_text(NET.format(lo=10**9, rx=rx, tx=tx))


def test_rates_come_from_differences_between_steps(tmp_path: Path) -> None:
    fake_proc(tmp_path, busy=100, idle=900, rx=1000, tx=500)
    source = SystemSource(proc=tmp_path, feed="system_test")
    first = {r.axis: r.y for r in source.step(100.0)}
    assert first == {"memory_percent": 75.0, "load_1m": 0.75}
    fake_proc(tmp_path, busy=130, idle=970, rx=3000, tx=400)  # counter went backwards: rate 0, never negative
    second = {r.axis: r.y for r in source.step(102.0)}
    assert second == {
        "cpu_percent": 30.0,
        "memory_percent": 75.0,
        "load_1m": 0.75,
        "net_rx_bytes_per_s": 1000.0,
        "net_tx_bytes_per_s": 0.0,
    }
    assert set(second) == set(source.axes)


def test_real_proc_gives_sane_values() -> None:
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc on this system")
    source = SystemSource()
    check_name(source.feed, "feed")
    assert source.feed == system_feed()
    source.step(1.0)
    times = iter(range(2, 10**6))

    def step_with_cpu() -> dict[str, float | bool] | None:
        # CPU % needs the kernel's jiffy counters to move between two steps.
        readings = {r.axis: r.y for r in source.step(float(next(times)))}
        return readings if "cpu_percent" in readings else None

    readings = wait_for(step_with_cpu, interval=0.05, what="a step with cpu_percent")
    assert readings is not None
    assert 0 <= float(readings["cpu_percent"]) <= 100
    assert 0 <= float(readings["memory_percent"]) <= 100
    assert float(readings["net_rx_bytes_per_s"]) >= 0


def test_missing_proc_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmulatorError, match="needs Linux"):
        SystemSource(proc=tmp_path)

"""This machine's real load, read from /proc (Linux): CPU %, memory %, load average, network bytes/s."""

from __future__ import annotations

from pathlib import Path

from emulator.errors import EmulatorError
from emulator.sources import Reading, Source
from rtdp.emulation import default_feed

AXES = ("cpu_percent", "memory_percent", "load_1m", "net_rx_bytes_per_s", "net_tx_bytes_per_s")


class SystemSource(Source):
    """One feed, several axes. CPU % and network rates are differences between two steps, so the first
    step reports only memory and load."""

    name = "system"
    units = {"cpu_percent": "%", "memory_percent": "%", "net_rx_bytes_per_s": "B/s", "net_tx_bytes_per_s": "B/s"}

    def __init__(
        self,
        *,
        seed: int | None = None,
        interval: float = 1.0,
        feed: str | None = None,
        proc: Path | str = "/proc",
    ) -> None:
        super().__init__(seed=seed, interval=interval)
        self.feed = feed or default_feed(self.name)
        self.axes = AXES
        self.proc = Path(proc)
        if not (self.proc / "stat").exists():
            raise EmulatorError(f"system source: {self.proc / 'stat'} is missing (the system source needs Linux)")
        self._cpu: tuple[int, int] | None = None  # (busy, total) jiffies at the previous step
        self._net: tuple[float, int, int] | None = None  # (time, rx bytes, tx bytes) at the previous step

    def step(self, now: float) -> list[Reading]:
        readings = [
            Reading("memory_percent", now, round(self._memory_percent(), 2)),
            Reading("load_1m", now, float((self.proc / "loadavg").read_text().split()[0])),
        ]
        busy, total = self._cpu_jiffies()
        if self._cpu is not None and total > self._cpu[1]:
            percent = 100.0 * (busy - self._cpu[0]) / (total - self._cpu[1])
            readings.insert(0, Reading("cpu_percent", now, round(min(100.0, max(0.0, percent)), 2)))
        self._cpu = (busy, total)
        rx, tx = self._net_bytes()
        if self._net is not None and now > self._net[0]:
            elapsed = now - self._net[0]
            # Counters reset when an interface goes away: never report a negative rate.
            readings.append(Reading("net_rx_bytes_per_s", now, round(max(0, rx - self._net[1]) / elapsed, 1)))
            readings.append(Reading("net_tx_bytes_per_s", now, round(max(0, tx - self._net[2]) / elapsed, 1)))
        self._net = (now, rx, tx)
        return readings

    def _cpu_jiffies(self) -> tuple[int, int]:
        for line in (self.proc / "stat").read_text().splitlines():
            if line.startswith("cpu "):
                values = [int(v) for v in line.split()[1:]]
                # user nice system idle iowait irq softirq steal (guest time is already in user and nice)
                fields = (values + [0] * 8)[:8]
                idle = fields[3] + fields[4]
                total = sum(fields)
                return total - idle, total
        raise EmulatorError(f"system source: no cpu line in {self.proc / 'stat'}")

    def _memory_percent(self) -> float:
        info: dict[str, int] = {}
        for line in (self.proc / "meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                info[key] = int(parts[0])
        total = info.get("MemTotal", 0)
        if total <= 0:
            return 0.0
        available = info.get("MemAvailable", info.get("MemFree", 0))
        return 100.0 * (total - available) / total

    def _net_bytes(self) -> tuple[int, int]:
        rx = tx = 0
        path = self.proc / "net" / "dev"
        if not path.exists():
            return 0, 0
        for line in path.read_text().splitlines()[2:]:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                continue  # loopback traffic is not the machine's network load
            values = rest.split()
            if len(values) >= 9:
                rx += int(values[0])
                tx += int(values[8])
        return rx, tx

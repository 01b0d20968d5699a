"""A private Mosquitto on a free port with a temporary config, for tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.env import free_port, wait_port

# Started as root, Mosquitto drops to the user `mosquitto`, which cannot read our 0600 files.
AS_ROOT = "user root\n" if os.geteuid() == 0 else ""

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


@dataclass(frozen=True)
class Mosquitto:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    config: Path

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


@contextmanager
def running_mosquitto(workdir: Path, extra_config: str = "", anonymous: bool = True) -> Iterator[Mosquitto]:
    if MOSQUITTO is None:
        raise RuntimeError("mosquitto is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\n"
        f"allow_anonymous {'true' if anonymous else 'false'}\n"
        "persistence false\n"
        # The bridge may hold up to max_inflight messages; Mosquitto's default queue is 1000.
        "max_queued_messages 100000\n"
        "max_inflight_messages 1000\n"
        f"{extra_config}\n"
    )
    log = (workdir / "mosquitto.log").open("wb")
    process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port("127.0.0.1", port)
        yield Mosquitto("127.0.0.1", port, process, config)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()

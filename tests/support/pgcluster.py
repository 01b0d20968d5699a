"""A PostgreSQL cluster of a test's own (initdb in a temporary directory, a free port), which the test may
stop and restart: the machine's shared server is never restarted."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.env import free_port


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


INITDB, PG_CTL = _binary("initdb"), _binary("pg_ctl")


def available() -> str | None:
    """None if a cluster can be made here, else why not."""
    if INITDB is None or PG_CTL is None:
        return "initdb/pg_ctl are not installed (apt-get install postgresql)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser (PostgreSQL refuses to run as root)"
    return None


@dataclass
class Cluster:
    data: Path
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        assert PG_CTL is not None
        subprocess.run(_as_owner([PG_CTL, "-D", str(self.data), "-l", str(self.log), *args]), check=True,
                       stdout=subprocess.DEVNULL, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} -c fsync=off"
        self._ctl("-o", options, "-w", "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()


def _as_owner(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root: as root, run them as the `postgres` user.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def own_cluster(workdir: Path) -> Iterator[Cluster]:
    assert INITDB is not None
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "pgdata"
    log = workdir / "postgres.log"
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        workdir.chmod(0o755)
        for parent in workdir.parents:  # postgres must reach its directory
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o011)
    subprocess.run(_as_owner([INITDB, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]),
                   check=True, stdout=subprocess.DEVNULL, timeout=120)
    cluster = Cluster(data, free_port(), log)
    cluster.start()
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        except subprocess.CalledProcessError:
            pass

"""docs/deploy.md, exercised: the systemd units' commands start a bridge and two viewers, nginx from Debian
runs the site from deploy/nginx/rtdp.conf in front of them, and a browser's stream through nginx survives one
viewer's restart (it resumes by Last-Event-ID on the other: every point once, in order). The original app's
ingestion URL works through it too."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import peewee as pw
import pytest

from rtdp.accounts import create_token
from rtdp.models import Axis, User
from rtdp.store import create_feed, points_after
from tests.faults.conftest import DevicePublisher, ResumingReader, count
from tests.support.env import free_port, require, wait_for, wait_port
from tests.support.mosquitto import Mosquitto
from tests.support.processes import terminate

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
TOTAL = 2_000


def unit_command(unit: str, instance: str) -> list[str]:
    """The unit's ExecStart, %i filled in, run with this checkout's Python instead of /opt/rtdp's."""
    text = (DEPLOY / "systemd" / unit).read_text()
    (line,) = re.findall(r"^ExecStart=(.+)$", text, re.MULTILINE)
    words = shlex.split(line.replace("%i", instance))
    assert words[0] == "/opt/rtdp/.venv/bin/rtdp"
    return [sys.executable, "-m", "rtdp", *words[1:]]


def unit_environment(**overrides: str) -> dict[str, str]:
    """rtdp.env's variables (all of them settings rtdp knows), with this test's broker, database and data."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTDP_")}
    for line in (DEPLOY / "systemd" / "rtdp.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    env.update(overrides)
    return env


class Proc:
    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.command, self.env, self.log = command, env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> int:
        return terminate(self.process)


@pytest.fixture
def nginx_site(tmp_path: Path) -> Iterator[tuple[int, list[int]]]:
    """nginx with deploy/nginx/rtdp.conf on free ports: (its port, the two viewers' ports)."""
    require(NGINX is not None, "nginx is not installed (apt-get install nginx-light)")
    assert NGINX is not None
    port, viewers = free_port(), [free_port(), free_port()]
    site = (DEPLOY / "nginx" / "rtdp.conf").read_text()
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    for default, chosen in zip(("127.0.0.1:8001", "127.0.0.1:8002"), viewers, strict=True):
        site = site.replace(default, f"127.0.0.1:{chosen}")
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    (prefix / "rtdp.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(
        f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"  access_log off;\n  client_body_temp_path {prefix}/body;\n  proxy_temp_path {prefix}/proxy;\n"
        f"  fastcgi_temp_path {prefix}/fastcgi;\n  uwsgi_temp_path {prefix}/uwsgi;\n  scgi_temp_path {prefix}/scgi;\n"
        f"  include {prefix}/rtdp.conf;\n"
        "}\n"
    )
    command = [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
    assert subprocess.run([*command[:-2], "-t"], capture_output=True).returncode == 0
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_port("127.0.0.1", port)
        yield port, viewers
    finally:
        terminate(process)


def test_the_systemd_units_are_valid(tmp_path: Path) -> None:
    """systemd-analyze finds nothing to say about them (an instance of each, its program made /bin/true: the
    commands themselves run in the test below)."""
    analyze = shutil.which("systemd-analyze")
    require(analyze is not None, "systemd-analyze is not installed")
    assert analyze is not None
    for unit in ("rtdp-bridge@.service", "rtdp-viewer@.service"):
        text = (DEPLOY / "systemd" / unit).read_text()
        assert "Restart=always" in text and "EnvironmentFile=/etc/rtdp/rtdp.env" in text
        assert unit_command(unit, "1")[3] in ("bridge", "viewer")
        instance = tmp_path / unit.replace("@.", "@1.")
        instance.write_text(text.replace("/opt/rtdp/.venv/bin/rtdp", "/bin/true").replace(
            "EnvironmentFile=/etc/rtdp/rtdp.env", f"EnvironmentFile={DEPLOY / 'systemd' / 'rtdp.env'}"))
        checked = subprocess.run([analyze, "verify", str(instance)], capture_output=True, text=True)
        assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr


def test_a_stream_through_nginx_survives_a_viewer_restart(
    nginx_site: tuple[int, list[int]], mosquitto: Mosquitto, sqlite_db: pw.Database, tmp_path: Path
) -> None:
    port, viewer_ports = nginx_site
    owner = User.create(email="o@example.com", password_hash="-")
    feed = create_feed("fault", owner, x_cast="int", public=True)
    axis = Axis.create(feed=feed, name="a")
    token = create_token(owner, feed=feed).token
    env = unit_environment(
        RTDP_DB_URL=f"sqlite:///{sqlite_db.database}", RTDP_BROKER=mosquitto.url, RTDP_DATA_DIR=str(tmp_path / "data"),
        RTDP_PUBLIC_URL=f"http://127.0.0.1:{port}",
    )
    bridge = Proc(unit_command("rtdp-bridge@.service", "1"), env, tmp_path / "bridge.log")
    viewers = [Proc(unit_command("rtdp-viewer@.service", str(p)), env, tmp_path / f"viewer-{p}.log")
               for p in viewer_ports]
    site = f"http://127.0.0.1:{port}"

    def viewer_ready(p: int) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{p}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    bridge.start()
    for viewer in viewers:
        viewer.start()
    readers: list[ResumingReader] = []
    try:
        for p in viewer_ports:
            wait_for(lambda: viewer_ready(p), timeout=60, what=f"viewer {p}")  # noqa: B023
        # The original app's URL through nginx: stored once the broker acknowledged it.
        answer = httpx.get(f"{site}/realtime_data_processor/service/feed_input.json/fault/a?x=-1&y=5",
                           headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 200, answer.text
        # Two browsers through nginx: its round robin puts them on both viewers.
        readers = [ResumingReader(f"{site}/api/v1/feeds/fault/stream") for _ in range(2)]
        wait_for(lambda: all(r.connections for r in readers), what="browsers streaming through nginx")
        device = DevicePublisher(mosquitto.host, mosquitto.port, "feeds/fault/a", 0, TOTAL, 500)
        wait_for(lambda: all(len(r.ids) >= TOTAL // 3 for r in readers), timeout=60, what="a third streamed")
        viewers[0].stop()
        viewers[0].start()
        device.finish()
        wait_for(lambda: count(axis.id) == TOTAL + 1, timeout=60, what="every point stored")
        stored = [row[0] for row in points_after(feed, 0, TOTAL + 10)]
        wait_for(lambda: all(len(r.ids) >= len(stored) - 1 for r in readers), timeout=60, what="every point streamed")
        for reader in readers:  # from its first point on, everything once, in order
            assert reader.ids == stored[stored.index(reader.ids[0]):]
        assert sum(r.connections for r in readers) >= 3  # at least one stream was cut by the restart and resumed
    finally:
        for reader in readers:
            reader.close()
        for viewer in viewers:
            viewer.stop()
        bridge.stop()

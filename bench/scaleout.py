"""Scale-out benchmark: two bridges on one share group against one, on PostgreSQL, one point per message
(points/s and CPU seconds per 10,000 points for each layout), and history on PostgreSQL (max_points=2000
over 1,000,000 points), and overload: Mosquitto + one bridge + a viewer under 5 x the measured capacity
(bounded memory, nothing acknowledged lost, HTTP ingestion answering 503 with Retry-After). Figures go to
bench/README.md.

    .venv/bin/python bench/scaleout.py [--quick] [--only bridges,history,overload] [--seconds 60]

Needs Mosquitto and a PostgreSQL server (tests/support/postgres.py: a throwaway database, dropped after).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import pipeline  # noqa: E402
import store_bench  # noqa: E402

from tests.support.mosquitto import running_mosquitto  # noqa: E402
from tests.support.postgres import available, throwaway_database  # noqa: E402
from tests.support.processes import established  # noqa: E402


def bench_bridges(work: Path, args: argparse.Namespace) -> None:
    """One bridge, then two on one share group, interleaved round by round on fresh axes of one database."""
    results: dict[int, list[pipeline.Stored]] = {1: [], 2: []}
    cpu: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    idle: dict[int, list[float]] = {1: [], 2: []}
    with throwaway_database() as url:
        data = work / "data"
        pipeline.prepare(data, url)
        with running_mosquitto(work / "mosquitto") as mosq:
            broker = pipeline.Broker(mosq.host, mosq.port)
            for r in range(args.rounds):
                for count in (1, 2):
                    with ExitStack() as stack:
                        pids, metrics = [], []
                        for n in range(count):
                            metrics.append(f"http://127.0.0.1:{pipeline.free_port()}/metrics")
                            command = [pipeline.RTDP, "bridge", "--broker", mosq.url, "--db", url, "--data-dir",
                                       str(data), "--client-id", f"bench-{count}-{n}", "--share-group", f"g{count}",
                                       "--log-level", "info", "--metrics", metrics[-1].split("/")[2]]
                            log = work / f"bridge-{count}-{n}-{r}.log"
                            proc = stack.enter_context(pipeline.process(command, log))
                            pids.append(proc.pid)
                            pipeline.wait_for(lambda: "connected to MQTT" in log.read_text(), 60,  # noqa: B023
                                              what=f"bridge {n} connected")
                        # Every session subscribed: a probe of this round on each of a few axes is stored.
                        for k in range(4):
                            probe = f"probe{count}{r}{k}"
                            pipeline.wait_for(lambda: _probe(broker, url, probe), 60, interval=0.3,  # noqa: B023
                                              what="a probe stored")
                        meter = CpuMeter(url, mosq.process.pid)
                        in_transactions = sum(_commit_seconds(m) for m in metrics)
                        got = pipeline.stored_rate(broker, url, work, f"b{count}r{r}", args.points, args.publishers,
                                                   pids=pids)
                        shares = meter.per_10k(got, (args.points // args.publishers) * args.publishers)
                        idle[count].append(meter.idle_percent())
                        # Seconds the bridges spent in their write transactions (a feed's writers take turns:
                        # pg_advisory_xact_lock), against the round's wall time.
                        elapsed = (args.points // args.publishers) * args.publishers / got.rate
                        shares["in transactions % of wall time"] = (
                            100 * (sum(_commit_seconds(m) for m in metrics) - in_transactions) / elapsed)
                        results[count].append(got)
                        cpu[count].append(shares)
                        print(f"  round {r}: {count} bridge(s): {got.rate:,.0f} points/s; CPU s per 10k points: "
                              + ", ".join(f"{k} {v:.3f}" for k, v in shares.items())
                              + f"; machine idle {idle[count][-1]:.0f}%", flush=True)
                    # Stopped, their persistent sessions would keep getting a copy of everything published while
                    # the other layout runs: retire them (rtdp bridge --retire).
                    for n in range(count):
                        pipeline.subprocess.run(
                            [pipeline.RTDP, "bridge", "--broker", mosq.url, "--db", url, "--data-dir", str(data),
                             "--client-id", f"bench-{count}-{n}", "--share-group", f"g{count}", "--retire",
                             "--log-level", "warning"], check=True, cwd=pipeline.ROOT)
    one = statistics.median(s.rate for s in results[1])
    two = statistics.median(s.rate for s in results[2])
    cpu1 = statistics.median(s.cpu_per_10k for s in results[1])
    cpu2 = statistics.median(s.cpu_per_10k for s in results[2])
    print(f"bridges on PostgreSQL, one point per message: one {one:,.0f} points/s ({cpu1:.2f} CPU s/10k), "
          f"two {two:,.0f} points/s ({cpu2:.2f} CPU s/10k): {two / one:.2f}x", flush=True)
    # The ceiling: every process's CPU per point (medians), against the cores there are.
    cores = os.cpu_count() or 1
    print("| median of the rounds: CPU s per 10,000 points, and % of wall time in transactions | "
          + " | ".join(cpu[1][0]) + " |")
    print("| --- |" + " --- |" * len(cpu[1][0]))
    medians = {}
    for count in (1, 2):
        medians[count] = {k: statistics.median(row[k] for row in cpu[count]) for k in cpu[count][0]}
        print(f"| {count} bridge(s) | " + " | ".join(f"{v:.3f}" for v in medians[count].values()) + " |")
    for count in (1, 2):
        mine = medians[count]["all measured"]
        print(f"  {count} bridge(s): {mine:.3f} CPU s per 10k points in all measured processes: at most "
              f"{cores * 10_000 / mine:,.0f} points/s on {cores} idle cores; one bridge alone at most "
              f"{10_000 * count / medians[count]['bridges']:,.0f} points/s ({count} process(es) each on a core)",
              flush=True)
    print(f"  load average at the end: {os.getloadavg()}", flush=True)
    pipeline.RESULTS.mkdir(exist_ok=True)
    out_path = pipeline.RESULTS / f"bridges-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json"
    rates = {count: [got.rate for got in rounds] for count, rounds in results.items()}
    out_path.write_text(json.dumps({"load": os.getloadavg(), "rates": rates, "cpu_per_10k": cpu, "idle_percent": idle},
                                   indent=1))


def _commit_seconds(metrics_url: str) -> float:
    """rtdp_bridge_commit_seconds_sum of a bridge's /metrics: seconds spent writing and committing."""
    import httpx

    text = httpx.get(metrics_url, timeout=10).text
    found = re.search(r"^rtdp_bridge_commit_seconds_sum ([0-9.e+-]+)$", text, re.M)
    assert found, "the bridge's /metrics has rtdp_bridge_commit_seconds_sum"
    return float(found.group(1))


def _machine_times() -> tuple[int, int]:
    """(idle + iowait, all) jiffies of every core since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])


def _cpu_each(pids: list[int]) -> dict[int, float]:
    """CPU seconds of each process still there."""
    found = {}
    for pid in pids:
        try:
            found[pid] = pipeline.cpu_seconds([pid])
        except FileNotFoundError:
            pass
    return found


class CpuMeter:
    """CPU seconds of every process a round uses, from its start: the bridges (given to stored_rate),
    Mosquitto, the PostgreSQL backends of the bench's database that exist now (the bridges' connections:
    they are connected and have stored their probes; the bench's own polling connection comes later),
    PostgreSQL's WAL writer, background writer and checkpointer (the server's, so also whatever other
    sessions on the machine write), and the publishers (mosquitto_pub: children of this process, reaped in
    the round, so counted by os.times())."""

    SERVER = ("walwriter", "background writer", "checkpointer")

    def __init__(self, url: str, mosquitto: int) -> None:
        import psycopg2

        conn = psycopg2.connect(url)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                               "AND pid <> pg_backend_pid()")
                self.backends = [row[0] for row in cursor.fetchall()]
                cursor.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = ANY(%s)", (list(self.SERVER),))
                self.server = [row[0] for row in cursor.fetchall()]
        finally:
            conn.close()
        self.mosquitto = mosquitto
        self.start = self._read()
        self.machine = _machine_times()

    def idle_percent(self) -> float:
        """How much of the machine's CPU time (all cores) was idle since the start: near 0, the machine
        was the limit, whoever used it."""
        idle, total = (b - a for a, b in zip(self.machine, _machine_times(), strict=True))
        return 100 * idle / max(1, total)

    def _read(self) -> dict[str, dict[int, float]]:
        children = os.times()
        return {"mosquitto": _cpu_each([self.mosquitto]), "postgres backends": _cpu_each(self.backends),
                "postgres wal/bg/checkpoint": _cpu_each(self.server),
                "publishers": {0: children.children_user + children.children_system}}

    def per_10k(self, got: pipeline.Stored, points: int) -> dict[str, float]:
        """CPU s per 10,000 of the round's `points` of each group since the start, with the bridges' from `got`
        (a process gone meanwhile, e.g. a backend of a connection being closed, counts for nothing)."""
        end = self._read()
        shares = {"bridges": got.cpu_per_10k}
        for group, now in end.items():
            before = self.start[group]
            shares[group] = 10_000 * sum(now[pid] - before[pid] for pid in now if pid in before) / points
        shares["all measured"] = sum(shares.values())
        return shares


def _probe(broker: pipeline.Broker, url: str, axis: str) -> bool:
    pipeline.publish_one(broker, f"feeds/{pipeline.FEED}/{axis}", f'{{"x":{time.time():.6f},"y":0}}')
    return pipeline.stored(url, axis) > 0


def bench_history(work: Path, args: argparse.Namespace) -> None:
    from rtdp.store import query_points

    with throwaway_database() as url:
        db, axis = store_bench.fill_axis(url, args.history_points)
        timings = [1000 * store_bench.timed(lambda: query_points(axis, max_points=2000)) for _ in range(7)]
        got = query_points(axis, max_points=2000)
        assert any(y == 1000.0 for _, _, y in got), "the spike must survive downsampling"
        db.close()
    print(f"history on PostgreSQL, max_points=2000 over {args.history_points:,} points: median "
          f"{statistics.median(timings):.1f} ms (min {min(timings):.1f}, max {max(timings):.1f})", flush=True)


# ---------------------------------------------------------------- viewers (rtdp viewer --workers N)


def bench_viewers(work: Path, args: argparse.Namespace) -> None:
    """Mosquitto + one bridge (SQLite) + `rtdp viewer --workers N` for each N of --viewer-workers; the SSE
    clients of bench/sse_fanout.py (in --client-processes processes) on one feed, points published at
    each of --viewer-rates: events/s delivered, latency (receive - publish time), the workers' CPU and RSS."""
    import paho.mqtt.client as mqtt
    import sse_fanout
    from paho.mqtt.enums import CallbackAPIVersion

    data = work / "data"
    token = pipeline.prepare(data)
    pipeline.cli(data, "axis", "add", pipeline.FEED, "live")
    rows = []
    with running_mosquitto(work / "mosquitto") as mosq:
        broker = pipeline.Broker(mosq.host, mosq.port)
        bridge_cmd = [pipeline.RTDP, "bridge", "--broker", mosq.url, "--data-dir", str(data),
                      "--client-id", "viewers-bridge", "--log-level", "warning"]
        with pipeline.process(bridge_cmd, work / "bridge.log") as bridge:
            pipeline.wait_stored_probe(broker, data / "rtdp.sqlite3")
            for workers in args.viewer_workers:
                port = pipeline.free_port()
                room = str(args.viewer_clients + 50)  # per worker: every client may land on one
                viewer_cmd = [pipeline.RTDP, "viewer", "--broker", mosq.url, "--data-dir", str(data),
                              "--http", f"127.0.0.1:{port}", "--workers", str(workers), "--log-level", "warning",
                              "--http-max-connections", room, "--http-connections-per-ip", room]
                url = f"http://127.0.0.1:{port}"
                with pipeline.process(viewer_cmd, work / f"viewer-{workers}.log") as viewer:
                    pipeline.wait_for(lambda: pipeline.ready(f"{url}/readyz"), 60, interval=0.1, what="viewer")  # noqa: B023
                    pids = [c.pid for c in psutil.Process(viewer.pid).children()] or [viewer.pid]
                    readers = sse_fanout.Readers(url, token, args.viewer_clients, args.client_processes)
                    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-viewers-{workers}",
                                            protocol=mqtt.MQTTv311)
                    publisher.connect(mosq.host, mosq.port)
                    publisher.loop_start()
                    try:
                        pipeline.wait_for(lambda: readers.connected() >= args.viewer_clients,  # noqa: B023
                                          120, interval=0.5, what="the streams to open")
                        spread = [established(pid, port) for pid in pids]
                        sse_fanout.publish_at(publisher, 10, 1.0)  # warm-up
                        time.sleep(sse_fanout.GRACE)
                        for rate in args.viewer_rates:
                            readers.reset()
                            # The viewer's CPU, and beside it the bridge's and the clients' (a limit too).
                            others = {"bridge": [bridge.pid], "clients": readers.pids,
                                      "mosquitto": [mosq.process.pid]}
                            cpu = pipeline.cpu_seconds(pids)
                            cpu_others = {k: pipeline.cpu_seconds(v) for k, v in others.items()}
                            started = time.perf_counter()
                            published = sse_fanout.publish_at(publisher, rate, args.viewer_seconds)
                            time.sleep(sse_fanout.GRACE)
                            elapsed = time.perf_counter() - started
                            used = pipeline.cpu_seconds(pids) - cpu
                            used_others = {k: round(100 * (pipeline.cpu_seconds(v) - cpu_others[k]) / elapsed)
                                           for k, v in others.items()}
                            got = readers.report()
                            delivered = got["delivered"]
                            row = {
                                "workers": workers, "clients": args.viewer_clients, "rate": rate,
                                "published": published, "delivered": delivered,
                                "events_per_s": delivered / args.viewer_seconds,
                                "complete": delivered / max(1, published * args.viewer_clients),
                                "p50_ms": got["p50_ms"], "p99_ms": got["p99_ms"], "cuts": got["cuts"],
                                "cpu_percent": 100 * used / elapsed, "others_cpu_percent": used_others,
                                "load": os.getloadavg()[0],
                                "rss_mb": [round(_rss_mb(pid), 1) for pid in pids], "streams_per_worker": spread,
                            }
                            rows.append(row)
                            print(f"  {workers} worker(s), {row['clients']} clients at {rate} points/s: "
                                  f"{row['events_per_s']:,.0f} events/s ({100 * row['complete']:.0f}%), p50 "
                                  f"{row['p50_ms']:.0f} / p99 {row['p99_ms']:.0f} ms, {row['cuts']} cuts, viewer "
                                  f"CPU {row['cpu_percent']:.0f}% (others: {used_others}), RSS {row['rss_mb']} MB, "
                                  f"streams {spread}",
                                  flush=True)
                            pipeline.wait_for(lambda: readers.connected() >= args.viewer_clients,  # noqa: B023
                                              60, interval=0.5, what="the cut streams to come back")
                    finally:
                        publisher.loop_stop()
                        publisher.disconnect()
                        readers.close()
    pipeline.RESULTS.mkdir(exist_ok=True)
    out_path = pipeline.RESULTS / f"viewers-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json"
    out_path.write_text(json.dumps({"load": os.getloadavg(), "rows": rows}, indent=1))
    print(f"  results: {out_path.relative_to(pipeline.ROOT)}", flush=True)


# ---------------------------------------------------------------- overload (5 x capacity)

# wrk's Lua: count answers by status, and the 503s that carry Retry-After, over all threads.
STATUS_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; busy = 0; retry = 0; other = 0 end
function response(status, headers, body)
  if status == 200 then ok = ok + 1
  elseif status == 503 then
    busy = busy + 1
    if headers["Retry-After"] or headers["retry-after"] then retry = retry + 1 end
  else other = other + 1 end
end
function done(summary, latency, requests)
  local a, b, c, d = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("ok"); b = b + t:get("busy"); c = c + t:get("retry"); d = d + t:get("other")
  end
  io.write(string.format("STATUS ok=%d busy=%d retry=%d other=%d\\n", a, b, c, d))
end
"""


class Paced:
    """`mosquitto_pub -l` publishers fed at `rate` points/s in all (0.1 s slices) for `seconds`; counts the
    lines each was given (not how many Mosquitto acknowledged: mosquitto_pub does not say). A publisher
    that cannot keep up blocks its feeder (the pipe is full): what was offered is what was written,
    reported against the target."""

    def __init__(self, broker: pipeline.Broker, tag: str, publishers: int, rate: float, seconds: float) -> None:
        self.written = [0] * publishers
        # -M: as many QoS 1 messages in flight as Mosquitto allows (max_inflight_messages), not 20.
        self.procs = [subprocess.Popen([pipeline.PUB, *broker.args(), "-M", "1000", "-t",
                                        f"feeds/{pipeline.FEED}/{tag}{i}", "-l"], stdin=subprocess.PIPE)
                      for i in range(publishers)]
        self.threads = [threading.Thread(target=self._feed, args=(i, rate / publishers, seconds), daemon=True)
                        for i in range(publishers)]
        self.started = time.perf_counter()
        for thread in self.threads:
            thread.start()

    def _feed(self, index: int, rate: float, seconds: float) -> None:
        stdin = self.procs[index].stdin
        assert stdin is not None
        step, n = 0.1, 0
        while (now := time.perf_counter() - self.started) < seconds:
            due = int(rate * min(seconds, now + step))
            if due > n:
                stdin.write("".join(f'{{"x":{pipeline.BASE_X + i:.3f},"y":{i % 97}}}\n'
                                    for i in range(n, due)).encode())
                stdin.flush()
                self.written[index] = n = due
            time.sleep(step / 2)

    def written_in(self) -> float:
        """Waits until every feeder has written its share; seconds since the start."""
        for thread in self.threads:
            thread.join(600)
        return time.perf_counter() - self.started

    def close(self) -> None:
        """Closes the publishers' input and waits for them. Only once all is stored: at the end of its input
        mosquitto_pub disconnects without sending what libmosquitto still queues beyond -M, which the
        broker never saw (in a run that closed at once, a million points and Mosquitto logging 'out of
        memory' disconnects, its word for a client gone before its PUBACK: eclipse-mosquitto #3253)."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in self.procs:
            if proc.wait(600) != 0:
                raise RuntimeError(f"mosquitto_pub exited with {proc.returncode}")
        return time.perf_counter() - self.started


def _drain(progress: pipeline.Progress, expected: int, patience: float = 30) -> None:
    """Waits until `expected` points are stored, or until none was stored for `patience` seconds (a loss:
    the caller's count then says how many)."""
    last, since = -1, time.perf_counter()
    while (count := progress.count()) < expected:
        if count != last:
            last, since = count, time.perf_counter()
            print(f"  stored {count:,} of {expected:,}", end="\r", flush=True)
        elif time.perf_counter() - since > patience:
            print(f"\n  nothing stored for {patience:.0f} s: {expected - count:,} missing", flush=True)
            return
        time.sleep(0.5)
    print(flush=True)


def _rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


# What mosquitto.conf says about queues, in-flight windows and persistence, which the overload bench runs with.
DEPLOYED = ("persistence", "autosave_interval", "max_queued_messages", "max_queued_bytes", "memory_limit",
            "max_inflight_messages", "set_tcp_nodelay")


def deployed_mosquitto(workdir: Path) -> str:
    """The lines of mosquitto.conf that set DEPLOYED options (later lines win over running_mosquitto's), with
    the persistence file in `workdir`."""
    lines = [line.strip() for line in (pipeline.ROOT / "mosquitto.conf").read_text().splitlines()
             if line.split(" ", 1)[0] in DEPLOYED]
    assert any(line.startswith("max_queued_messages") for line in lines), "mosquitto.conf sets max_queued_messages"
    return "\n".join([*lines, f"persistence_location {workdir}/"]) + "\n"


def bench_overload(work: Path, args: argparse.Namespace) -> None:
    """Mosquitto + one bridge (SQLite) + `rtdp viewer`: capacity first, then 5 x that over MQTT for
    `--seconds` while wrk drives HTTP ingestion past the viewer's pending limit; RSS sampled throughout."""
    data = work / "data"
    token = pipeline.prepare(data)
    pipeline.cli(data, "axis", "add", pipeline.FEED, "ovh")
    db = data / "rtdp.sqlite3"
    # Mosquitto queues the backlog for the bridge's session: as deployed (mosquitto.conf), not as the tests
    # run it (a queue of 100,000, which 5 x capacity for a minute passes, and no persistence).
    deployed = deployed_mosquitto(work / "mosquitto")
    print("  Mosquitto as mosquitto.conf: " + "; ".join(deployed.splitlines()), flush=True)
    with running_mosquitto(work / "mosquitto", extra_config=deployed) as mosq:
        broker = pipeline.Broker(mosq.host, mosq.port)
        http_port = pipeline.free_port()
        bridge_cmd = [pipeline.RTDP, "bridge", "--broker", mosq.url, "--data-dir", str(data),
                      "--client-id", "overload-bridge", "--log-level", "warning"]
        viewer_cmd = [pipeline.RTDP, "viewer", "--broker", mosq.url, "--data-dir", str(data),
                      "--http", f"127.0.0.1:{http_port}", "--http-max-pending", str(args.http_max_pending),
                      "--log-level", "warning"]
        with pipeline.process(bridge_cmd, work / "bridge.log") as bridge, \
                pipeline.process(viewer_cmd, work / "viewer.log") as viewer:
            url = f"http://127.0.0.1:{http_port}"
            pipeline.wait_stored_probe(broker, db)
            pipeline.wait_for(lambda: pipeline.ready(f"{url}/readyz"), 60, interval=0.1, what="viewer ready")
            capacity = pipeline.stored_rate(broker, db, work, "cap", args.capacity_points, args.publishers,
                                            pids=[bridge.pid]).rate
            print(f"  capacity, one point per message: {capacity:,.0f} points/s", flush=True)
            target = args.factor * capacity
            samples: dict[str, list[float]] = {"bridge": [], "viewer": [], "mosquitto": []}
            pids = {"bridge": bridge.pid, "viewer": viewer.pid, "mosquitto": mosq.process.pid}
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    for name, pid in pids.items():
                        samples[name].append(_rss_mb(pid))
                    stop.wait(0.5)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            lua = work / "status.lua"
            lua.write_text(STATUS_LUA)
            ingest = f"{url}/service/feed_input.json/{pipeline.FEED}/ovh?y=1"
            wrk = subprocess.Popen(["wrk", "-t2", f"-c{args.http_connections}", f"-d{args.seconds}s", "--timeout",
                                    "10s", "-H", f"Authorization: Bearer {token}", "-s", str(lua), ingest],
                                   stdout=subprocess.PIPE, text=True)
            progress = pipeline.Progress(db, "ovm")  # not "ov": the HTTP axis is ovh
            try:
                pubs = Paced(broker, "ovm", args.overload_publishers, target, args.seconds)
                published_in = pubs.written_in()
                offered = sum(pubs.written)
                print(f"  gave publishers {offered:,} points in {published_in:.1f} s", flush=True)
                out, _ = wrk.communicate(timeout=args.seconds + 60)
                backlog = offered - progress.count()
                _drain(progress, offered)
                drained_in = time.perf_counter() - pubs.started
                pubs.close()
            finally:
                stop.set()
                sampler.join()
                progress.close()
            stored = pipeline.stored(db, "ovm")
            # Messages Mosquitto dropped (a full queue: max_queued_messages); $SYS publishes every 10 s.
            dropped = subprocess.run([pipeline.SUB, "-h", mosq.host, "-p", str(mosq.port), "-C", "1", "-W", "15",
                                      "-t", "$SYS/broker/publish/messages/dropped"],
                                     capture_output=True, text=True).stdout.strip()
            dropped = dropped or "? (no $SYS answer within 15 s)"
            status = dict(kv.split("=") for kv in re.search(r"STATUS (.*)", out).group(1).split())  # type: ignore[union-attr]
            ok, busy, retry, other = (int(status[k]) for k in ("ok", "busy", "retry", "other"))
            http_stored = pipeline.stored(db, "ovh")
            mosquitto_log = (work / "mosquitto" / "mosquitto.log").read_text(errors="replace")
            out_of_memory = mosquitto_log.count("disconnected due to out of memory")
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": os.getloadavg(), "seconds": args.seconds,
        "capacity": capacity, "target_rate": target, "offered": offered, "offered_rate": offered / published_in,
        "published_in": published_in, "backlog_at_end": backlog, "drained_in": drained_in,
        "stored": stored, "missing": offered - stored, "mosquitto_out_of_memory_disconnects": out_of_memory,
        "mosquitto_dropped": dropped,
        "rss_max_mb": {name: max(values) for name, values in samples.items()},
        "rss_first_last_mb": {name: (values[0], values[-1]) for name, values in samples.items()},
        "http": {"connections": args.http_connections, "max_pending": args.http_max_pending, "ok": ok, "503": busy,
                 "503_with_retry_after": retry, "other": other, "stored": http_stored,
                 "lost": max(0, ok - http_stored)},
    }
    rows = [
        ("capacity (points/s, one per message)", f"{capacity:,.0f}", ""),
        ("offered over MQTT (points/s)", f"{offered / published_in:,.0f} ({offered / published_in / capacity:.1f}x)",
         f"{args.factor:.0f}x"),
        # Given to mosquitto_pub, not acknowledged: a publisher Mosquitto disconnects loses what it had not
        # had acknowledged, and mosquitto_pub does not say how many.
        ("points given to publishers / stored", f"{offered:,} / {stored:,}", "all"),
        ("Mosquitto: clients disconnected 'due to out of memory'", f"{out_of_memory}", "0"),
        ("Mosquitto: messages dropped ($SYS)", dropped, "0"),
        ("backlog when publishing ended; storing ended after", f"{backlog:,}, {drained_in:.0f} s", ""),
        *((f"{name} RSS max (first, last) MB", f"{max(v):.0f} ({v[0]:.0f}, {v[-1]:.0f})",
           "< 200" if name != "mosquitto" else "") for name, v in samples.items()),
        (f"HTTP ({args.http_connections} connections): 200 / 503 / other", f"{ok:,} / {busy:,} / {other:,}", ""),
        ("HTTP 503s with Retry-After", f"{retry:,} of {busy:,}", "all"),
        ("HTTP 200s stored", f"{http_stored:,} of {ok:,}", "all"),
    ]
    print("| measure | value | target |\n| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    pipeline.RESULTS.mkdir(exist_ok=True)
    out_path = pipeline.RESULTS / f"overload-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json"
    out_path.write_text(json.dumps(result, indent=1))
    print(f"  results: {out_path.relative_to(pipeline.ROOT)}", flush=True)


SECTIONS = {"bridges": bench_bridges, "history": bench_history, "viewers": bench_viewers, "overload": bench_overload}
NEEDS_POSTGRES = {"bridges", "history"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="short run (5.3 minutes measured at load 11-13 on 2 cores: bridges 91 s, history 58 s, "
                        "viewers 98 s, overload 65 s)")
    parser.add_argument("--only", default=",".join(SECTIONS))
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--seconds", type=int, help="overload: seconds at 5 x capacity (60; 10 with --quick)")
    parser.add_argument("--factor", type=float, default=5.0, help="overload: times the measured capacity")
    parser.add_argument("--overload-publishers", type=int, default=8, help="overload: mosquitto_pub -l processes")
    parser.add_argument("--http-connections", type=int, default=400, help="overload: wrk connections")
    parser.add_argument("--http-max-pending", type=int, default=100,
                        help="overload: the viewer's --http-max-pending, below --http-connections")
    parser.add_argument("--viewer-workers", default="1,2", help="viewers: one layout per --workers value")
    parser.add_argument("--viewer-clients", type=int, default=1000, help="viewers: SSE clients on one feed")
    parser.add_argument("--viewer-rates", default="10,50", help="viewers: points/s, one level each")
    parser.add_argument("--viewer-seconds", type=float, default=8.0, help="viewers: seconds per level")
    parser.add_argument("--client-processes", type=int, default=2, help="viewers: processes holding the clients")
    args = parser.parse_args()
    args.viewer_workers = [int(n) for n in args.viewer_workers.split(",")]
    args.viewer_rates = [int(n) for n in args.viewer_rates.split(",")]
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.points = 40_000 if args.quick else 100_000
    args.history_points = 1_000_000
    args.seconds = args.seconds or (10 if args.quick else 60)
    args.capacity_points = 20_000 if args.quick else 60_000
    reason = available() if NEEDS_POSTGRES & set(args.only.split(",")) else None
    if reason:
        print(f"skipped: {reason}")
        return 1
    with tempfile.TemporaryDirectory(prefix="rtdp-scaleout-") as tmp:
        for name in args.only.split(","):
            print(f"{name}: (load average {os.getloadavg()[0]:.1f})", flush=True)
            started = time.perf_counter()
            SECTIONS[name](Path(tmp) / name, args)
            print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

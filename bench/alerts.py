"""Alerts under load (issue 14's targets), Mosquitto + one `rtdp bridge` on SQLite, both in the same run.

    .venv/bin/python bench/alerts.py [--quick] [--rounds 3] [--rate 1000] [--flip 1]

1. Latency: 100 rules (`above 50`) on 100 axes, points published at `--rate` points/s (paho, QoS 1) round-robin
   over the axes, each axis's value crossing the threshold every `--flip` points (1: every point is a
   transition, so every point causes a webhook). Measured: the alert's time (set by the writer inside the
   transaction, just before its commit) to the webhook receiver (http.server on a free port) having read the
   request. Target p50 <= 20 ms, p99 <= 50 ms.
2. Throughput: points stored/s, one point per message (mosquitto_pub -l publishers), with no rule at all and
   with 1,000 enabled rules on the very axes being written (so every batch is judged against them), the
   two interleaved round by round. Target: with rules >= 0.9 x without.
3. Writer (`--only writer`, no broker): the bridge's Writer in this process on a fresh SQLite file, batches
   of `--batch` messages of one point each over 4 axes, CPU seconds per 10,000 points with no rule and with
   1,000 rules on those axes, interleaved round by round. The ratio none/rules is the throughput ratio the
   writer thread allows, steadier than 2. on a shared machine (CPU time, not wall time).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import pipeline  # noqa: E402

from tests.support.env import wait_for  # noqa: E402
from tests.support.receivers import webhook_receiver  # noqa: E402

RULES_FOR_THROUGHPUT = 1000
RULES_FOR_LATENCY = 100


def _receive(port: multiprocessing.Queue, results: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    """The webhook receiver in a process of its own (this one publishes the points): each request's
    latency, its arrival time minus the alert's time, sent back when `stop` is set."""
    with webhook_receiver() as hook:
        port.put(hook.url)
        stop.wait()
        results.put([h.at - float(h.body["time"]) for h in hook.received()])


class Receiver:
    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._port, self._results, self._stop = context.Queue(), context.Queue(), context.Event()
        self._process = context.Process(target=_receive, args=(self._port, self._results, self._stop), daemon=True)
        self._process.start()
        self.url: str = self._port.get(timeout=60)

    def latencies(self) -> list[float]:
        self._stop.set()
        found: list[float] = self._results.get(timeout=60)
        self._process.join(30)
        return found


def _open(db: Path) -> None:
    from rtdp.database import open_database

    open_database(f"sqlite:///{db}")


def _rules(axes: list[str], count: int, body: dict[str, object]) -> None:
    """`count` rules spread over `axes` of the bench feed, made through rtdp.alerts (as the API does)."""
    from rtdp import alerts
    from rtdp.models import Axis, Feed
    from rtdp.permissions import OPERATOR
    from rtdp.store import create_axis

    feed = Feed.get(Feed.name == pipeline.FEED)
    for name in axes:
        if not Axis.select().where((Axis.feed == feed.id) & (Axis.name == name)).exists():
            create_axis(feed, name)
    checks = alerts.Checks(allow_private=True)
    for index in range(count):
        alerts.add_rule(OPERATOR, {"name": f"r{index}", "feed": pipeline.FEED, "axis": axes[index % len(axes)],
                                   **body}, checks)


def _remove_rules() -> None:
    from rtdp import revision
    from rtdp.models import AlertEvent, AlertRule

    with AlertRule._meta.database.atomic():
        AlertEvent.delete().execute()
        AlertRule.delete().execute()
        revision.bump(revision.ALERTS)


def bench_latency(broker: pipeline.Broker, args: argparse.Namespace) -> dict[str, float | int | str]:
    from rtdp.models import AlertEvent, AlertRule
    from rtdp.mqtt import Endpoint, make_client

    axes = [f"lat{i:03d}" for i in range(RULES_FOR_LATENCY)]
    receiver = Receiver()
    _rules(axes, RULES_FOR_LATENCY, {"kind": "above", "threshold": 50,
                                     "actions": [{"type": "webhook", "url": receiver.url}]})
    client = make_client(Endpoint(broker.host, broker.port), f"bench-alerts-{time.time_ns()}", max_inflight=100)
    client.connect(broker.host, broker.port)
    client.loop_start()
    sent = [0] * len(axes)

    def send(index: int) -> None:
        axis = index % len(axes)
        value = 100 if (sent[axis] // args.flip) % 2 == 0 else 0
        sent[axis] += 1
        client.publish(f"feeds/{pipeline.FEED}/{axes[axis]}", f'{{"y":{value}}}', qos=1)

    def fired() -> int:
        return int(AlertRule.select().where(AlertRule.state == "firing").count())

    try:
        # Warm-up: every axis fires once (its first point is above), then the measured run.
        for index in range(len(axes)):
            send(index)
        wait_for(lambda: fired() == len(axes), 60, what="warm-up firings")
        time.sleep(2.0)
        count = int(args.seconds * args.rate)
        sent_for = pipeline.paced(count, args.rate, send)
        time.sleep(5.0)  # the last webhooks in flight
    finally:
        client.disconnect()
        client.loop_stop()
    values = sorted(1000 * v for v in receiver.latencies()[len(axes):])  # without the warm-up (first to arrive)
    # Transitions the bridge recorded beyond the warm-up's, and webhooks whose last attempt did not get a 200:
    # a webhook missing is either never judged or not delivered, and these say which.
    events = AlertEvent.select().count() - len(axes)
    failed = AlertRule.select().where(~AlertRule.last_result.startswith("HTTP 200")).count()
    _remove_rules()
    if not values:
        raise RuntimeError("no webhook received")
    p50, p99 = values[len(values) // 2], values[min(len(values) - 1, int(len(values) * 0.99))]
    expected = count // args.flip
    result = {"p50_ms": round(p50, 1), "p99_ms": round(p99, 1), "max_ms": round(values[-1], 1),
              "webhooks": len(values), "expected": expected, "events": events, "rules_last_failed": failed,
              "points": count, "rate": round(count / sent_for)}
    print(f"  latency point committed -> webhook received: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {values[-1]:.1f} "
          f"ms ({len(values)} of {expected} webhooks for {count} points sent at {count / sent_for:,.0f}/s over "
          f"{RULES_FOR_LATENCY} rules, a transition every {args.flip} points per axis; {events} transitions "
          f"recorded, {failed} rules whose last webhook failed)", flush=True)
    return result


def bench_throughput(broker: pipeline.Broker, db: Path, work: Path, args: argparse.Namespace,
                     bridge_pid: int) -> dict[str, object]:
    without: list[float] = []
    with_rules: list[float] = []
    for r in range(args.rounds):
        without.append(pipeline.stored_rate(broker, db, work, f"n{r}", args.points, args.publishers,
                                            pids=[bridge_pid]).rate)
        axes = [f"w{r}p{i}" for i in range(args.publishers)]
        # Rules that are judged on every point and never fire: the cost of judging, not of acting.
        _rules(axes, RULES_FOR_THROUGHPUT, {"kind": "above", "threshold": 1e12, "actions": [{"type": "mqtt"}]})
        time.sleep(1.0)  # the bridge reloads its index at its next batch; nothing to wait for really
        with_rules.append(pipeline.stored_rate(broker, db, work, f"w{r}", args.points, args.publishers,
                                               pids=[bridge_pid]).rate)
        _remove_rules()
        print(f"  round {r}: no rules {without[-1]:,.0f} points/s, {RULES_FOR_THROUGHPUT} rules "
              f"{with_rules[-1]:,.0f} points/s", flush=True)
    ratio = statistics.median(with_rules) / statistics.median(without)
    print(f"  stored/s with {RULES_FOR_THROUGHPUT} rules / without: {ratio:.2f} (target >= 0.9)", flush=True)
    return {"without": without, "with_rules": with_rules, "ratio": round(ratio, 3)}


def bench_writer(work: Path, args: argparse.Namespace) -> dict[str, object]:
    from bridge.stats import Stats
    from bridge.writer import Incoming, Writer
    from rtdp.alerting import Alerting
    from rtdp.models import User
    from rtdp.settings import Settings
    from rtdp.store import create_axis, create_feed

    _open(work / "writer.db")
    settings = Settings.build(env={}, data_dir=work)
    feed = create_feed(pipeline.FEED, User.create(email="bench@example.com", password_hash="-"), x_cast="float")
    axes = [f"a{i}" for i in range(4)]
    for name in axes:
        create_axis(feed, name)
    writer = Writer(feed._meta.database, settings, Stats(), alerting=Alerting(feed._meta.database, settings))
    sent = 0

    def cpu_per_10k(batches: int) -> float:
        nonlocal sent
        started = time.process_time()
        for _ in range(batches):
            messages = []
            for index in range(args.batch):
                sent += 1
                messages.append(Incoming(f"feeds/{pipeline.FEED}/{axes[index % 4]}", b'{"x":%d,"y":5}' % sent, 0, 1,
                                         False, time.time()))
            writer.write(messages)
        return (time.process_time() - started) / (batches * args.batch) * 10_000

    batches = max(1, 1000 // args.batch) * 10
    cpu_per_10k(batches // 5)  # warm-up
    without: list[float] = []
    with_rules: list[float] = []
    for _ in range(args.rounds * 2 + 1):
        without.append(cpu_per_10k(batches))
        _rules(axes, RULES_FOR_THROUGHPUT, {"kind": "above", "threshold": 1e12, "actions": [{"type": "mqtt"}]})
        cpu_per_10k(2)  # the index and the states loaded
        with_rules.append(cpu_per_10k(batches))
        _remove_rules()
    ratio = statistics.median(without) / statistics.median(with_rules)
    print(f"  writer, batches of {args.batch}: CPU s per 10k points {statistics.median(without):.3f} with no rule, "
          f"{statistics.median(with_rules):.3f} with {RULES_FOR_THROUGHPUT} rules: throughput ratio {ratio:.3f}",
          flush=True)
    return {"batch": args.batch, "without": without, "with_rules": with_rules, "ratio": round(ratio, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (about a minute)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--rate", type=float, default=1000.0, help="points/s in the latency part")
    parser.add_argument("--flip", type=int, default=1, help="an axis crosses its threshold every N points")
    parser.add_argument("--seconds", type=float, help="length of the latency run")
    parser.add_argument("--points", type=int, help="points per throughput round")
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=50, help="messages per batch in the writer part")
    parser.add_argument("--only", default="latency,throughput", help="latency, throughput, writer")
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.seconds = args.seconds or (5 if args.quick else 15)
    args.points = args.points or (20_000 if args.quick else 60_000)
    os.environ["RTDP_WEBHOOK_ALLOW_PRIVATE"] = "1"  # the receiver is on loopback
    results: dict[str, object] = {"args": vars(args), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    with tempfile.TemporaryDirectory(prefix="rtdp-bench-alerts-") as tmp:
        work = Path(tmp)
        if args.only == "writer":
            results["writer"] = bench_writer(work, args)
            print(json.dumps(results, indent=1))
            return 0
        with pipeline.mosquitto_stack(work, viewer=False) as (broker, db, _, _, bridge_pid):
            assert isinstance(db, Path)
            _open(db)
            only = args.only.split(",")
            if "latency" in only:
                results["latency"] = bench_latency(broker, args)
            if "throughput" in only:
                results["throughput"] = bench_throughput(broker, db, work, args, bridge_pid)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

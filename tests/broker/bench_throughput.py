"""QoS 1 throughput through the embedded broker: rtdp's plugins against amqtt with anonymous login only.

Not a test (timings on a shared machine are noise for CI). Run:
    .venv/bin/python -m tests.broker.bench_throughput [--messages 20000] [--rounds 3]

The broker runs in its own process on uvloop (it saturates one core); one paho publisher and one
paho subscriber (`feeds/#`, QoS 1) run here. Reported: messages per second from the first publish
to the last message received.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from rtdp.mqtt import Endpoint, make_client
from tests.support.env import free_port, wait_port

USER, PASSWORD = "ep@nothing.com", "1234"
MODES = ("amqtt-anonymous", "rtdp-user", "rtdp-service")


async def _serve(mode: str, port: int, data_dir: Path) -> None:
    from amqtt.broker import Broker

    from broker.server import EmbeddedBroker
    from rtdp.accounts import ServiceAccount
    from rtdp.settings import HostPort, Settings

    stop = asyncio.Event()
    if mode == "amqtt-anonymous":
        broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
        )
        await broker.start()
        await stop.wait()
        return
    settings = Settings.build(env={}, data_dir=data_dir)
    service = ServiceAccount.load_or_create(data_dir)
    async with EmbeddedBroker(settings, service, listen=HostPort("127.0.0.1", port)):
        await stop.wait()


def serve(mode: str, port: int, data_dir: Path) -> None:
    import logging

    import uvloop

    from rtdp.accounts import create_user
    from rtdp.database import open_database
    from rtdp.store import create_feed

    logging.basicConfig(level=logging.WARNING)
    open_database(f"sqlite:///{data_dir / 'rtdp.sqlite3'}")
    create_feed("bench", create_user(USER, PASSWORD))
    uvloop.run(_serve(mode, port, data_dir))


def measure(mode: str, messages: int, inflight: int) -> float:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        server = subprocess.Popen([sys.executable, "-m", "tests.broker.bench_throughput", "--serve", mode,
                                   str(port), str(data_dir)])
        try:
            wait_port("127.0.0.1", port, timeout=30)  # amqtt logs this probe as "No data": harmless
            if mode == "rtdp-service":
                from rtdp.accounts import ServiceAccount

                service = ServiceAccount.load_or_create(data_dir)
                endpoint = Endpoint("127.0.0.1", port, service.username, service.password)
            elif mode == "rtdp-user":
                endpoint = Endpoint("127.0.0.1", port, USER, PASSWORD)
            else:
                endpoint = Endpoint("127.0.0.1", port)
            return _run_clients(endpoint, messages, inflight)
        finally:
            server.terminate()
            server.wait(10)


def _run_clients(endpoint: Endpoint, messages: int, inflight: int) -> float:
    done = threading.Event()
    subscribed = threading.Event()
    count = 0

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        nonlocal count
        count += 1
        if count == messages:
            done.set()

    subscriber = make_client(endpoint, f"bench-sub-{time.time_ns()}", max_inflight=inflight)
    subscriber.on_message = on_message
    subscriber.on_subscribe = lambda *args: subscribed.set()
    subscriber.connect(endpoint.host, endpoint.port)
    subscriber.loop_start()
    subscriber.subscribe("feeds/#", 1)
    if not subscribed.wait(10):
        raise RuntimeError("no SUBACK")
    publisher = make_client(endpoint, f"bench-pub-{time.time_ns()}", max_inflight=inflight)
    publisher.connect(endpoint.host, endpoint.port)
    publisher.loop_start()
    started = time.perf_counter()
    for index in range(messages):
        info = publisher.publish(f"feeds/bench/axis_{index % 4}", str(index), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish failed: {info.rc}")
    if not done.wait(300):
        raise RuntimeError(f"only {count} of {messages} messages arrived")
    elapsed = time.perf_counter() - started
    for client in (publisher, subscriber):
        client.disconnect()
        client.loop_stop()
    return messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", nargs=3, metavar=("MODE", "PORT", "DIR"))
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=100)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), Path(args.serve[2]))
        return
    print(f"ACL check, cache hit: {acl_check_cost() * 1e6:.1f} us per topic decision", flush=True)
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):  # interleaved, so load from other processes hits every mode alike
        for mode in MODES:
            rates[mode].append(measure(mode, args.messages, args.inflight))
    for mode, values in rates.items():
        print(f"{mode:16} QoS 1: median {statistics.median(values):7.0f} msg/s  (rounds: "
              + ", ".join(f"{rate:.0f}" for rate in values) + ")", flush=True)


def acl_check_cost(calls: int = 100_000) -> float:
    """Seconds per topic decision (`AccessControl.permits`, what the broker asks) from the cache (user, PUBLISH)."""
    from broker.access import AccessControl, TopicAction
    from rtdp.accounts import ServiceAccount, create_user
    from rtdp.database import open_database
    from rtdp.store import create_feed

    async def run(data_dir: Path) -> float:
        access = AccessControl(ServiceAccount.load_or_create(data_dir))
        assert await access.authenticate("bench", USER, PASSWORD)
        assert await access.permits("bench", USER, "feeds/bench/a", TopicAction.PUBLISH)
        started = time.perf_counter()
        for _ in range(calls):
            await access.permits("bench", USER, "feeds/bench/a", TopicAction.PUBLISH)
        elapsed = time.perf_counter() - started
        access.close()
        return elapsed / calls

    import uvloop

    with tempfile.TemporaryDirectory() as tmp:
        db = open_database(f"sqlite:///{tmp}/rtdp.sqlite3")
        create_feed("bench", create_user(USER, PASSWORD))
        try:
            return uvloop.run(run(Path(tmp)))
        finally:
            db.close()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Publish a few points to rtdp over MQTT with paho-mqtt (pip install paho-mqtt), as a device would.

Topic `feeds/<feed>/<axis>`, QoS 1, payload a JSON object with x (the time) and y. The MQTT password is
a token (`rtdp token add EMAIL --write`, or the /account page); the user name is your email.

    RTDP_TOKEN=... python examples/mqtt_paho.py --host 127.0.0.1 --port 1883 --email ep@nothing.com
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--host", default=env.get("RTDP_MQTT_HOST", "127.0.0.1"),
                        help="broker host (env RTDP_MQTT_HOST; default %(default)s)")
    parser.add_argument("--port", type=int, default=int(env.get("RTDP_MQTT_PORT", "1883")),
                        help="broker port (env RTDP_MQTT_PORT; default %(default)s)")
    parser.add_argument("--email", default=env.get("RTDP_EMAIL", "device"), help="MQTT user name (env RTDP_EMAIL)")
    parser.add_argument("--token", default=env.get("RTDP_TOKEN"), help="MQTT password: a token (env RTDP_TOKEN)")
    parser.add_argument("--feed", default="mqtt_example", help="feed name (default %(default)s)")
    parser.add_argument("--axis", default="axis_00", help="axis name (default %(default)s)")
    parser.add_argument("--count", type=int, default=5, help="points to publish (default %(default)s)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between points (default %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # MQTT 3.1.1: the level rtdp's embedded broker speaks. Clean session: this device keeps no state.
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"example-{uuid.uuid4().hex[:12]}",
                         protocol=mqtt.MQTTv311)
    if args.token:
        client.username_pw_set(args.email, args.token)
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(client: mqtt.Client, userdata: object, flags: object, reason: object, properties: object) -> None:
        if getattr(reason, "is_failure", False):
            refused.append(str(reason))
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(args.host, args.port, keepalive=30)
    except OSError as exc:
        print(f"cannot reach the broker at {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    client.loop_start()
    try:
        if not connected.wait(10) or refused:
            print(f"the broker refused the connection: {refused[0] if refused else 'no answer'}", file=sys.stderr)
            return 1
        topic = f"feeds/{args.feed}/{args.axis}"
        for i in range(args.count):
            point = {"x": datetime.now(UTC).isoformat(), "y": round(10 * math.sin(i / 2), 3)}
            info = client.publish(topic, json.dumps(point), qos=1)
            # Wait for the broker's PUBACK: QoS 1 is delivered at least once, and we know it arrived.
            info.wait_for_publish(timeout=10)
            if not info.is_published():
                print(f"no acknowledgement for {topic} {point}", file=sys.stderr)
                return 1
            print(f"{topic} {json.dumps(point)}")
            if i + 1 < args.count:
                time.sleep(args.interval)
        return 0
    finally:
        client.disconnect()
        client.loop_stop()


if __name__ == "__main__":
    sys.exit(main())

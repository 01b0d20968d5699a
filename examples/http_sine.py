#!/usr/bin/env python3
"""Post a sine wave to rtdp over HTTP, as the original realtime_data_source_example.py did.

Three axes 45 degrees apart (the feed `sin_wave_over_time_in_seconds`), 128 steps, one GET per point
to the original URL:

    GET <url>/service/feed_input.json/<feed>/<axis>?x=<time>&y=<value>

authenticated with HTTP Basic: your email and password, or any user name and a token (create one
with `rtdp token add EMAIL` or on the /account page). Only the standard library is needed.

    RTDP_TOKEN=... python examples/http_sine.py --url http://127.0.0.1:8000
    python examples/http_sine.py --email ep@nothing.com --password 1234 --interval 0.2

Old scripts that include the app prefix keep working: --url http://127.0.0.1:8000/realtime_data_processor
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime

AXES = {"axis_at_0_degrees": 0.0, "axis_at_45_degrees": math.pi / 4, "axis_at_90_degrees": math.pi / 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", default=env.get("RTDP_URL", "http://127.0.0.1:8000"),
                        help="server address (env RTDP_URL; default %(default)s)")
    parser.add_argument("--token", default=env.get("RTDP_TOKEN"), help="a write token (env RTDP_TOKEN)")
    parser.add_argument("--email", default=env.get("RTDP_EMAIL"), help="account email (env RTDP_EMAIL)")
    parser.add_argument("--password", default=env.get("RTDP_PASSWORD"), help="account password (env RTDP_PASSWORD)")
    parser.add_argument("--feed", default="sin_wave_over_time_in_seconds", help="feed name (default %(default)s)")
    parser.add_argument("--steps", type=int, default=128, help="points per axis (default %(default)s)")
    parser.add_argument("--step", type=float, default=0.1, help="radians per step (default %(default)s)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between steps (default %(default)s)")
    args = parser.parse_args(argv)
    if not args.token and not (args.email and args.password):
        parser.error("give --token (or RTDP_TOKEN), or --email and --password")
    return args


def basic_auth(args: argparse.Namespace) -> str:
    # With a token the user name is not checked; the email is sent when known, for the server's logs.
    user, password = (args.email or "token", args.token) if args.token else (args.email, args.password)
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def send(url: str, auth: str, attempts: int = 5) -> int:
    """GET `url`; waits and retries when the server answers 503 (broker busy or down). Returns the status."""
    for attempt in range(attempts):
        request = urllib.request.Request(url, headers={"Authorization": auth})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as exc:
            body = exc.read()[:300].decode("utf-8", "replace")
            exc.close()
            if exc.code == 503 and attempt + 1 < attempts:
                time.sleep(min(10.0, float(exc.headers.get("Retry-After") or 1)))
                continue
            print(f"  HTTP {exc.code}: {body}", file=sys.stderr)
            return int(exc.code)
    return 503


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = args.url.rstrip("/")
    auth = basic_auth(args)
    t = 0.0
    for _ in range(args.steps):
        # An explicit UTC offset: a naive time would be read in the server's time zone.
        x = datetime.now(UTC).isoformat(sep=" ")
        for axis, phase in AXES.items():
            y = round(math.sin(t + phase), 6)
            query = urllib.parse.urlencode({"x": x, "y": y})
            url = f"{base}/service/feed_input.json/{args.feed}/{axis}?{query}"
            status = send(url, auth)
            print(f"{axis} x={x} y={y:+.6f} -> {status}")
            if status != 200:
                print(f"stopped: the server answered {status} for {url}", file=sys.stderr)
                return 1
        t += args.step
        time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())

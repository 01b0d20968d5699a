"""CPU per request of viewer.connection alone, for two checkouts (issue 16: the HTTP layer before/after).

    .venv/bin/python bench/connection_cpu.py /work/wt-old /work/wt-new [--requests 100000] [--rounds 5]

Each checkout's own Python runs its GuardedHttpProtocol on a transport that drops what is written, fed the
head wrk sends (`GET /service/feed_input.json/bench/a?y=1`, Host, Authorization) again and again on one
kept connection, with a lean route that answers at once: what the connection costs per request (parsing,
scope and cycle, the answer's bytes, keep-alive bookkeeping), without the network, the checks or the
writer. The best of the rounds; steadier than anything end to end on a shared machine. Not a test.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

# Run by each checkout's interpreter with the checkout first on sys.path.
PROBE = r'''
import asyncio, inspect, sys, time
import uvicorn
from uvicorn.server import ServerState
from rtdp.settings import HostPort, Settings
from viewer.connection import guarded_protocol

class Transport(asyncio.Transport):
    def __init__(self): super().__init__(); self.writes = 0; self.closing = False
    def write(self, data): self.writes += 1
    def is_closing(self): return self.closing
    def close(self): self.closing = True
    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)
    def pause_reading(self): pass
    def resume_reading(self): pass

ANSWER = (200, b'{"feed":"bench","axis":"a","x":1764979200.0,"y":1}', [(b"content-type", b"application/json")])

def lean(scope, reply):
    reply(ANSWER)
    return True

async def main(requests, rounds):
    async def app(scope, receive, send): pass
    config = uvicorn.Config(app, lifespan="off", log_level="warning")
    config.load()
    settings = Settings(http=HostPort("127.0.0.1", 0))
    # Before the plain-head reading, guarded_protocol took no lean_paths.
    paths = {"lean_paths": ("/service/feed_input.json/",)}
    takes = "lean_paths" in inspect.signature(guarded_protocol).parameters
    cls = guarded_protocol(settings, lean, **(paths if takes else {}))
    protocol = cls(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    head = (b"GET /service/feed_input.json/bench/a?y=1 HTTP/1.1\r\nHost: 127.0.0.1:41234\r\n"
            b"Authorization: Bearer rtdp_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\r\n\r\n")
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(requests):
            protocol.data_received(head)
        best = min(best, (time.process_time() - started) / requests * 1e6)
    assert transport.writes == requests * rounds and not transport.closing
    print(f"{best:.2f}")

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
'''


def measure(checkout: Path, requests: int, rounds: int) -> float:
    python = checkout / ".venv/bin/python"
    done = subprocess.run([str(python), "-c", PROBE, str(requests), str(rounds)], cwd=checkout, check=True,
                          capture_output=True, text=True, env={"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"})
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="+", type=Path, help="worktrees, each with its .venv (scripts/setup)")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for _ in range(2):  # twice, alternating: a burst of load elsewhere shows as a disagreement
        for checkout in args.checkouts:
            micros = measure(checkout.resolve(), args.requests, args.rounds)
            print(f"{checkout.name:>16}: {micros:5.2f} us per request on the connection (best of {args.rounds} "
                  f"x {args.requests:,})", flush=True)


if __name__ == "__main__":
    main()

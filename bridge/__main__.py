"""`python -m bridge --broker URL --db URL [--share-group G] [--client-id ID] [--data-dir DIR]`.

A thin stand-in for `rtdp bridge` (tests run it as a subprocess)."""

from __future__ import annotations

import argparse
import sys

from bridge.service import run
from rtdp.errors import ConfigError
from rtdp.logs import configure_logging
from rtdp.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge", description="Store points from MQTT.")
    for option in ("broker", "db", "data-dir", "share-group", "client-id", "batch-size", "max-inflight", "log-level"):
        parser.add_argument(f"--{option}")
    args = parser.parse_args(argv)
    try:
        settings = Settings.build(
            broker=args.broker,
            db_url=args.db,
            data_dir=args.data_dir,
            share_group=args.share_group,
            client_id=args.client_id,
            batch_size=args.batch_size,
            max_inflight=args.max_inflight,
            log_level=args.log_level,
        )
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())

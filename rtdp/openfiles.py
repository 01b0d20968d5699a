"""Open files a server process may hold: enough for its connection caps.

Each connection is a file descriptor, and Linux starts most processes with a soft limit of 1,024 open
files (the hard limit is usually far higher). Past the soft limit accept() fails and the server stops
taking anyone, which the connection caps exist to prevent; so a server raises its soft limit, up to the
hard one, to what its caps (and the database, logs and pipes) need, and warns when the hard limit is
lower: then the caps cannot hold and should be lowered.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# Descriptors besides connections: the database and its journal, logs, the event loop's, threads' pipes.
SPARE = 64


def allow_open_files(connections: int) -> int:
    """Raise the soft open-file limit to hold `connections` and the spare; returns the limit now in force."""
    try:
        import resource
    except ImportError:  # not on POSIX: nothing to raise
        return connections + SPARE
    needed = connections + SPARE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    if soft < needed:
        log.warning(
            "the open-file limit (%d) is below what the connection caps need (%d): lower --http-max-connections"
            " or --mqtt-max-connections, or raise the limit (ulimit -n, LimitNOFILE=)", soft, needed,
        )
    return int(soft)

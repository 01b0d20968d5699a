"""A point handed from HTTP ingestion to the writer inside one process (`rtdp serve`, embedded broker).

Over MQTT the viewer publishes the canonical payload and the writer decodes it again: what comes from a
broker is not trusted. In `rtdp serve` the viewer's check (rtdp.catalog) and its cast are the writer's
own, so the samples travel with the message and are stored as they are, unless the writer's route has
other casts than the viewer used (the feed was recreated meanwhile): then the payload is decoded as any
message. `receipt` is resolved on the event loop once the batch committed: None when stored, or the
error that refused the point.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from rtdp.codec import Casts, Sample
from rtdp.errors import RtdpError


@dataclass(frozen=True, slots=True)
class Handoff:
    casts: Casts
    samples: Sequence[Sample]
    receipt: asyncio.Future[RtdpError | None]


# The in-process entry (broker.server.EmbeddedBroker.ingest): (topic, canonical payload, casts, samples,
# timeout in seconds); returns once stored, raises RtdpError when refused or unavailable, TimeoutError
# when not stored in time (it may still be).
DirectWrite = Callable[[str, bytes, Casts, Sequence[Sample], float], Awaitable[None]]

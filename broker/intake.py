"""What the embedded broker hands every permitted `feeds/...` publish to, inside its own process.

The broker's session loop (`broker.server._AmqttBroker._hand_over`) awaits `Sink.put` after the PUBLISH
ACL check passed (a refused publish never reaches it), in arrival order per session. `put` waits while
the sink is full, which holds that session (back-pressure), and takes the message's `settled` future
(`broker.acks`, None for a message nobody waits for): the sink resolves it on the broker's loop once
the message is stored, and only then does the client get its PUBACK. With each message goes the
publisher's user id when the publish may create its feed (`AccessControl.creator`): the writer
creates the feed for that user once the payload decoded. In `rtdp serve` the sink is the bridge's
intake (bridge.intake).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from rtdp.handoff import Handoff
from rtdp.topic import FEEDS_PREFIX


class Sink(Protocol):
    async def put(
        self,
        topic: str,
        payload: bytes,
        retain: bool,
        arrived: float,
        creator: int | None,
        settled: asyncio.Future[None] | None,
        handoff: Handoff | None = None,
    ) -> None:
        """Take one message (its publisher's retain flag, arrival in epoch seconds, the user id that may
        create its feed); wait while full; resolve `settled` once the message is stored."""
        # A sink may also have `offer(topic, payload, arrived, creator, settled) -> bool`: `put` without
        # waiting, False (nothing taken) when full; broker.fastpath uses it (bridge.intake.Intake.offer).

    def has_room(self) -> bool:
        """Whether `put` would return at once."""


def wanted(topic: str) -> bool:
    """What the bridge's `feeds/#` subscription would get (wrong depths too: the bridge reports them)."""
    return topic == FEEDS_PREFIX or topic.startswith(FEEDS_PREFIX + "/")

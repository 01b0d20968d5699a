"""An amqtt plugin that hands every permitted `feeds/...` publish to a sink inside the broker's process.

amqtt fires `broker_message_broadcast` from a session's loop after the PUBLISH ACL check passed (a
refused publish never reaches it) and after it PUBACKed the message; the event runs as its own task,
in arrival order. The sink (in `rtdp serve`, the bridge's intake) must not block: it runs on the
broker's event loop. With each message goes the publisher's user id when the publish may create its
feed (`AccessControl.creator`): the writer creates the feed for that user once the payload decoded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amqtt.contexts import BaseContext
from amqtt.plugins.base import BasePlugin
from amqtt.session import ApplicationMessage

from broker.access import AccessControl
from rtdp.topic import FEEDS_PREFIX

# (topic, payload, retain flag as published, arrival time in epoch seconds, creator: the publisher's
# user id if the message may create its feed, else None)
Sink = Callable[[str, bytes, bool, float, int | None], object]


def wanted(topic: str) -> bool:
    """What the bridge's `feeds/#` subscription would get (wrong depths too: the bridge reports them)."""
    return topic == FEEDS_PREFIX or topic.startswith(FEEDS_PREFIX + "/")


@dataclass
class IntakeConfig:
    """The plugin's options: the sink and the broker's AccessControl (fields typed Any carry the objects)."""

    sink: Any = None
    access: Any = None


class IntakePlugin(BasePlugin[BaseContext]):  # type: ignore[misc]  # amqtt is untyped here (follow_imports=skip)
    """Hands each permitted `feeds/...` message to `config.sink`."""

    Config = IntakeConfig

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        sink = getattr(context.config, "sink", None)
        if not callable(sink):
            raise TypeError("broker.intake.IntakePlugin needs a callable 'sink' option")
        access = getattr(context.config, "access", None)
        if not isinstance(access, AccessControl):
            raise TypeError("broker.intake.IntakePlugin needs an AccessControl in its 'access' option")
        self.sink: Sink = sink
        self.access = access

    async def on_broker_message_broadcast(self, *, client_id: str, message: ApplicationMessage) -> None:
        topic = message.topic
        # An empty retained publish clears the topic's retained message (MQTT 3.1.1 section 3.3.1.3): not a point.
        if wanted(topic) and not (message.retain and not message.data):
            creator = self.access.creator(client_id, topic)
            self.sink(topic, bytes(message.data), bool(message.retain), time.time(), creator)

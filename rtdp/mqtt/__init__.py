"""rtdp's one MQTT client layer (viewer, bridge, emulator): paho driven by an asyncio event loop.

- `endpoint`: where and as whom a client connects (`Endpoint`), and a bare paho client set up the same way
  everywhere (`make_client`, also for tests and CLI tools).
- `client`: `Client`, one supervised connection on an event loop: reconnects with one back-off policy,
  publishes with a future per PUBACK, subscribes with automatic or manual acks.
- `loopthread`: `LoopThread`, that event loop on a thread of its own for a synchronous owner.
- `internals`: the only module that touches paho's private names (the fast packet reader, batched acks).
"""

from rtdp.mqtt.client import Client, ConnectionLost, MqttError, PublishRefused, Subscription
from rtdp.mqtt.endpoint import Endpoint, make_client
from rtdp.mqtt.internals import Publish
from rtdp.mqtt.loopthread import LoopThread

__all__ = [
    "Client",
    "ConnectionLost",
    "Endpoint",
    "LoopThread",
    "MqttError",
    "Publish",
    "PublishRefused",
    "Subscription",
    "make_client",
]

"""The embedded MQTT broker (amqtt) guarded by rtdp's users, tokens and permissions."""

from __future__ import annotations

from broker.access import AccessControl
from broker.errors import BrokerError, PortInUse
from broker.server import EmbeddedBroker, quiet_amqtt_logging, run, serve

__all__ = ["AccessControl", "BrokerError", "EmbeddedBroker", "PortInUse", "quiet_amqtt_logging", "run", "serve"]

"""Where and as whom a client connects, and paho clients made the same way everywhere."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from rtdp.settings import BrokerURL, HostPort


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and as whom a client connects."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def of(cls, target: BrokerURL | HostPort, username: str | None = None, password: str | None = None) -> Endpoint:
        if isinstance(target, BrokerURL):
            return cls(
                target.host,
                target.port,
                target.username or username,
                target.password or password,
                target.tls,
            )
        host = "127.0.0.1" if target.host in ("0.0.0.0", "::", "") else target.host
        return cls(host, target.port, username, password)


def make_client(
    endpoint: Endpoint,
    client_id: str,
    *,
    clean_session: bool = True,
    manual_ack: bool = False,
    max_inflight: int = 100,
) -> mqtt.Client:
    """A paho client (MQTT 3.1.1, the level amqtt speaks) set up but not connected."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
        manual_ack=manual_ack,
    )
    if endpoint.username is not None:
        client.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls:
        client.tls_set_context(ssl.create_default_context())
    client.max_inflight_messages_set(max_inflight)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return client

"""The amqtt plugin that hands every authentication question to an `AccessControl` (topic questions go
to it directly: `broker.server._AmqttBroker._topic_filtering`).

amqtt builds each plugin's `Config` dataclass from the broker config (dacite, strict); a field
typed `Any` carries the `AccessControl` object itself, so no global state is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amqtt.contexts import BaseContext
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from broker.access import AccessControl


@dataclass
class AccessConfig:
    """The plugin's options: the `AccessControl` it asks."""

    access: Any = None


def _access(context: BaseContext) -> AccessControl:
    access = getattr(context.config, "access", None)
    if not isinstance(access, AccessControl):
        raise TypeError("rtdp broker plugins need an AccessControl in their 'access' option")
    return access


class AuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt is untyped here (follow_imports=skip)
    """Users (email + password, or any username + token) and the service account; no anonymous access."""

    Config = AccessConfig

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.access = _access(context)

    async def authenticate(self, *, session: Session) -> bool | None:
        return await self.access.authenticate(session.client_id, session.username, session.password)

    async def on_broker_client_disconnected(self, *, client_id: str, client_session: Session) -> None:
        # Persistent sessions keep their principal: amqtt checks RECEIVE for them while offline
        # when it queues their QoS 1 messages.
        if not client_session.clean_session:
            return
        # A take-over by a new connection with the same client id disconnects the old session
        # after the new one authenticated: keep the newer principal. (Session == compares ids.)
        get_session = getattr(self.context, "get_session", None)
        current = get_session(client_id) if get_session is not None else None
        if current is None or current is client_session:
            self.access.forget(client_id)

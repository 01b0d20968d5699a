"""The broker package's exception root."""

from __future__ import annotations

from rtdp.errors import RtdpError


class BrokerError(RtdpError):
    """The embedded broker could not start or stop."""

    code = "broker"


class PortInUse(BrokerError):
    """The MQTT listen address is taken; the message names the option to change."""

    code = "port_in_use"

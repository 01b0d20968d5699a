"""The emulator's exception root."""

from __future__ import annotations

from rtdp.errors import RtdpError


class EmulatorError(RtdpError):
    """The emulator cannot start or publish (unknown source, missing owner, refused request)."""

    code = "emulator"


class PublishFailed(EmulatorError):
    """One reading could not be handed to the broker or the HTTP endpoint; the runner logs it and goes on."""

    code = "publish_failed"

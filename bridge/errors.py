"""The bridge's exception root."""

from __future__ import annotations

from rtdp.errors import RtdpError


class BridgeError(RtdpError):
    """Something the bridge itself cannot go on with (not a rejected message: those are data)."""

    code = "bridge"


class Rejected(RtdpError):
    """A message the bridge will not store; `code` is the counter key and goes on the errors topic."""

    status = 400

    def __init__(self, code: str, message: str, **detail: object) -> None:
        super().__init__(message, **detail)
        self.code = code

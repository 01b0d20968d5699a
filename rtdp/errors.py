"""The exception root of the shared core; every package maps these to its transport."""

from __future__ import annotations


class RtdpError(Exception):
    """Root of every error rtdp raises on purpose. `code` is stable and machine-readable."""

    code = "error"
    status = 500

    def __init__(self, message: str, **detail: object) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def as_dict(self) -> dict[str, object]:
        return {"error": self.message, "code": self.code, **self.detail}


class ConfigError(RtdpError):
    """A setting has a bad value; the message names the setting."""

    code = "config"


class InvalidInput(RtdpError):
    """Something from outside (topic, payload, name, query) failed validation."""

    code = "invalid"
    status = 400


class PayloadTooLarge(InvalidInput):
    code = "too_large"
    status = 413


class AuthenticationFailed(RtdpError):
    code = "unauthenticated"
    status = 401


class RetryLater(RtdpError):
    """An error that passes: `retry_after` seconds is when to try again (HTTP's Retry-After)."""

    def __init__(self, message: str, retry_after: int = 1, **detail: object) -> None:
        super().__init__(message, **detail)
        self.retry_after = retry_after


class TooManyAttempts(RetryLater):
    """Too many password attempts (or sign-ups) from one address or for one account; retry later."""

    code = "too_many_attempts"
    status = 429


class PermissionDenied(RtdpError):
    code = "forbidden"
    status = 403


class QuotaExceeded(PermissionDenied):
    """The user owns as many feeds as the feed quota allows."""

    code = "feed_quota"


class AxisQuotaExceeded(QuotaExceeded):
    """The feed has as many axes as the axis quota allows."""

    code = "axis_quota"


class NotFound(RtdpError):
    code = "not_found"
    status = 404


class Conflict(RtdpError):
    code = "conflict"
    status = 409


class Unavailable(RetryLater):
    """A dependency (broker, database) is down or saturated; retry later."""

    code = "unavailable"
    status = 503


class UnknownFeed(NotFound):
    """A point for a feed that does not exist, from a writer that cannot create it (the bridge, which
    does not know who published)."""

    code = "unknown_feed"

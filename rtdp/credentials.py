"""Password hashing (argon2id) and API tokens (random, stored as SHA-256, shown once)."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from rtdp.errors import InvalidInput

TOKEN_PREFIX = "rtdp_"
_hasher = PasswordHasher()
# Verifying against this when the user does not exist keeps timing the same for both cases.
_DUMMY_HASH = _hasher.hash("not a real password")

MIN_PASSWORD = 4  # the original's demo password is "1234"; a new password must be stronger (below)
MAX_PASSWORD = 1024
# The one rule for a password someone chooses now: registration, the Account page, an administrator's
# reset, `rtdp user add` and `rtdp user passwd`. (Demo users keep "1234": `--demo` warns about them.)
NEW_PASSWORD_MIN = 8


def check_new_password(password: str, field: str = "password") -> str:
    """`password` if it may be chosen now, else InvalidInput naming `field`."""
    if len(password) < NEW_PASSWORD_MIN:
        raise InvalidInput(f"The password must have at least {NEW_PASSWORD_MIN} characters.", field=field)
    if len(password) > MAX_PASSWORD:
        raise InvalidInput(f"The password must have at most {MAX_PASSWORD} characters.", field=field)
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if len(password) > MAX_PASSWORD:
        return False
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def looks_like_token(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX) and 20 <= len(value) <= 100

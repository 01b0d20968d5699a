"""Mosquitto 2's password-file hash (`$7$`, PBKDF2-SHA512), as `mosquitto_passwd` writes it.

Kept apart from rtdp.mosquitto so rtdp.accounts can hash a new token without importing the file writer
(which itself imports rtdp.accounts).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# mosquitto_passwd's defaults (mosquitto 2.0: src/password_mosq.c): 12-byte salt, 101 iterations, 64-byte
# SHA-512 digest. A low count is fine here: what we hash are 256-bit random secrets, not guessable passwords,
# and Mosquitto recomputes it on every CONNECT.
ITERATIONS = 101
SALT_BYTES = 12


def mosquitto_hash(secret: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """`$7$<iterations>$<base64 salt>$<base64 digest>`: the part after `username:` in a password file."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_mosquitto_hash(encoded: str, secret: str) -> bool:
    """True when `encoded` (a `$7$` hash) is the hash of `secret`; False for any other format."""
    parts = encoded.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode("utf-8"), salt, int(parts[2]))
    return hmac.compare_digest(digest, expected)

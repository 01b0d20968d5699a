"""Mosquitto's password and ACL files, written from our users, tokens and permissions.

Behind an external Mosquitto the broker, not rtdp, decides who may connect and publish where, so
`rtdp mosquitto-files` writes what it needs:

- the service account (bridge, viewer): every topic, shared subscriptions included;
- one user per active token: username = the token's stored prefix (its first 12 characters),
  password = the token. Devices use that pairing on both brokers: the embedded broker accepts any
  username with a token, Mosquitto needs this exact one. Its topics come from
  `rtdp.permissions.allowed`, the same rule as everywhere else.

Users' email + password cannot be exported: we keep only argon2 hashes, and Mosquitto needs its
own hash of the plaintext. On an external Mosquitto, devices and scripts connect with tokens.
Tokens made before `Token.broker_hash` existed have no Mosquitto hash and are skipped (reissue them).

After a change of users, tokens, feeds or shares, write the files again and send Mosquitto a SIGHUP
(`reload_mosquitto`): it rereads both files without dropping connections.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from rtdp.accounts import ServiceAccount, principal_for
from rtdp.errors import NotFound, RtdpError
from rtdp.models import Feed, Token, User
from rtdp.mosquitto_passwd import mosquitto_hash
from rtdp.permissions import Access, allowed, readable_feeds
from rtdp.settings import Settings
from rtdp.topic import NAME_RE, reader_topics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MosquittoFiles:
    """What `write_mosquitto_files` wrote."""

    passwd: Path
    acl: Path
    users: int  # entries in the password file, the service account included
    tokens: int  # token users among them
    skipped: int  # active tokens left out: no Mosquitto hash (made before it existed) or a clashing prefix


def _safe(value: str, what: str) -> str:
    # Feed names and token prefixes are validated to NAME_RE already; checked again here because anything
    # else in a password-file name or an ACL line (space, ':', '#', '+', newline) could widen access.
    if not NAME_RE.fullmatch(value):
        raise RtdpError(f"mosquitto files: {what} {value!r} cannot be written safely")
    return value


def _token_topics(token: Token) -> list[str]:
    """ACL `topic` lines for one token, from the one permission rule."""
    principal = principal_for(token.user, token)
    lines: list[str] = []
    # readable_feeds narrows the candidates in SQL (write implies read); allowed() decides each one.
    feeds = cast("Iterable[Feed]", readable_feeds(principal).order_by(Feed.name))
    for feed in feeds:
        name = _safe(feed.name, "feed name")
        if allowed(principal, feed, Access.WRITE):
            lines.append(f"topic write feeds/{name}/+")
        if allowed(principal, feed, Access.READ):
            lines += [f"topic read {topic}" for topic in reader_topics(name)]
    return lines


def _active_tokens() -> Iterable[Token]:
    return (
        Token.select(Token, User)
        .join(User)
        .where((Token.revoked == False) & (User.is_active == True))  # noqa: E712 -- peewee expressions
        .order_by(Token.id)
    )


def _write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with a 0600 file: Mosquitto never reads half a file, nobody else reads it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_mosquitto_files(settings: Settings, out_dir: Path | None = None) -> MosquittoFiles:
    """Write `passwd` and `acl` for an external Mosquitto into `out_dir` (default data_dir/mosquitto).

    The database must be open (rtdp.database.open_database). Each file is replaced atomically, mode 0600.
    """
    target = out_dir if out_dir is not None else settings.data_dir / "mosquitto"
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    service = ServiceAccount.load_or_create(settings.data_dir)
    service_name = _safe(service.username, "service account name")

    passwd = [f"{service_name}:{mosquitto_hash(service.password)}"]
    # Shared subscriptions: Mosquitto checks the filter without its `$share/<group>/` part, which `#` covers.
    acl = [
        "# Written by `rtdp mosquitto-files`; edits are lost on the next run.",
        "",
        f"user {service_name}",
        "topic readwrite #",
    ]
    seen = {service_name}
    tokens = skipped = 0
    for token in _active_tokens():
        username = _safe(token.prefix, "token prefix")
        if token.broker_hash is None or username in seen:
            # Without a hash (older token) it cannot log in; with a prefix already taken (about one in 4e12
            # pairs) Mosquitto would know only one of them. Either way: reissue the token.
            log.warning("token %s (id %s) left out of the Mosquitto files: reissue it", username, token.id)
            skipped += 1
            continue
        if not token.broker_hash.startswith("$7$") or any(c in token.broker_hash for c in ":\r\n"):
            raise RtdpError(f"mosquitto files: token {username} has a malformed broker hash")
        seen.add(username)
        tokens += 1
        passwd.append(f"{username}:{token.broker_hash}")
        acl += ["", f"user {username}", *_token_topics(token)]

    passwd_path, acl_path = target / "passwd", target / "acl"
    _write_private(passwd_path, "\n".join(passwd) + "\n")
    _write_private(acl_path, "\n".join(acl) + "\n")
    return MosquittoFiles(passwd_path, acl_path, users=len(passwd), tokens=tokens, skipped=skipped)


def reload_mosquitto(pid: int) -> None:
    """Tell a running Mosquitto to reread its password and ACL files (SIGHUP)."""
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise NotFound(f"no Mosquitto process with pid {pid}") from None
    except PermissionError:
        raise RtdpError(f"not allowed to signal Mosquitto (pid {pid}): run as its user") from None

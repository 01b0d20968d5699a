"""Users, tokens and the internal service account: creating them and checking credentials."""

from __future__ import annotations

import json
import os
import secrets
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import peewee as pw

from rtdp.credentials import (
    hash_password,
    hash_token,
    looks_like_token,
    new_token,
    verify_password,
)
from rtdp.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound
from rtdp.models import Feed, Token, User
from rtdp.mosquitto_passwd import mosquitto_hash
from rtdp.permissions import Access, Principal
from rtdp.private import private_dir
from rtdp.store.dialect import dialect_of

MAX_EMAIL = 254
SERVICE_ACCOUNT_FILE = "service-account.json"
# Control, format (bidi overrides such as U+202E, zero-width joiners), private-use, surrogate and
# unassigned characters: an address holding them can display as someone else's.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn"})


def _has_hidden(value: str) -> bool:
    return any(unicodedata.category(c) in _HIDDEN_CATEGORIES for c in value)


def normalize_email(email: str) -> str:
    value = email.strip().lower()
    if (
        not 3 <= len(value) <= MAX_EMAIL
        or value.count("@") != 1
        or any(c.isspace() for c in value)
        or _has_hidden(value)
    ):
        raise InvalidInput(f"invalid email address {email[:80]!a}", field="email")
    local, domain = value.split("@")
    if not local or not domain or "/" in value or "#" in value or "+" in domain:
        raise InvalidInput(f"invalid email address {email[:80]!r}", field="email")
    return value


def create_user(email: str, password: str, *, admin: bool = False, display_name: str = "") -> User:
    address = normalize_email(email)
    if not password:
        raise InvalidInput("password must not be empty", field="password")
    return _insert_user(address, hash_password(password), admin=admin, display_name=display_name)


REGISTRATION_CLOSED = "Registration is closed on this server; ask an administrator for an account."


def register_user(db: pw.Database, email: str, password_hash: str, *, open_to_all: bool = True) -> User:
    """Sign-up: a new user with a password hashed beforehand (outside any transaction); the first user
    administers the server (there is nobody else to make them one). Raises Conflict if the email is taken,
    and NotFound when registration is closed (`open_to_all` false) and someone else was first.

    The transaction is a write transaction from the start (on SQLite it takes the write lock first), so
    concurrent sign-ups wait for each other instead of failing "database is locked" when upgrading a read.
    """
    address = normalize_email(email)
    with dialect_of(db).write_transaction(db):
        first = not User.select().exists()
        if not first and not open_to_all:
            raise NotFound(REGISTRATION_CLOSED)
        return _insert_user(address, password_hash, admin=first)


def _insert_user(address: str, password_hash: str, *, admin: bool, display_name: str = "") -> User:
    if User.select().where(User.email == address).exists():
        raise Conflict(f"a user with email {address} already exists", field="email")
    try:
        return User.create(
            email=address,
            display_name=display_name or address.split("@")[0],
            password_hash=password_hash,
            is_admin=admin,
        )
    except pw.IntegrityError:
        raise Conflict(f"a user with email {address} already exists", field="email") from None


def get_user(email: str) -> User:
    user = User.get_or_none(User.email == email.strip().lower())
    if user is None:
        raise NotFound(f"no user with email {email[:80]!r}")
    return user


def principal_for(user: User, token: Token | None = None) -> Principal:
    return Principal(
        user_id=user.id,
        email=user.email,
        is_admin=bool(user.is_admin),
        token_id=token.id if token else None,
        token_feed_id=token.feed_id if token else None,
        token_access=Access(token.access) if token and token.access else None,
        password_version=None if token else int(user.session_version),
    )


def check_password(email: str, password: str) -> Principal:
    user = User.get_or_none(User.email == email.strip().lower()[:MAX_EMAIL])
    ok = verify_password(user.password_hash if user else None, password)
    if user is None or not ok or not user.is_active:
        raise AuthenticationFailed("wrong email or password")
    return principal_for(user)


# Seconds between two writes of a token's last use: a device sending every second must not cost a
# database write per message (logins are also cached, see rtdp.cache).
LAST_USE_EVERY = 60


def check_token(token: str, address: str | None = None) -> Principal:
    """The principal of a valid token; records when (and from which `address`) it was last used."""
    if not looks_like_token(token):
        raise AuthenticationFailed("invalid token")
    row = (
        Token.select(Token, User)
        .join(User)
        .where((Token.token_hash == hash_token(token)) & (Token.revoked == False))  # noqa: E712
        .first()
    )
    if row is None or not row.user.is_active:
        raise AuthenticationFailed("invalid or revoked token")
    now = time.time()
    if row.expires is not None and row.expires <= now:
        raise AuthenticationFailed("token expired")
    if row.last_used is None or now - row.last_used > LAST_USE_EVERY:
        Token.update(last_used=now, last_address=address[:64] if address else None).where(Token.id == row.id).execute()
    return principal_for(row.user, row)


def check_credentials(username: str | None, password: str | None, address: str | None = None) -> Principal:
    """MQTT CONNECT or HTTP Basic: email + password, or any username + a token (used from `address`)."""
    if not password:
        raise AuthenticationFailed("credentials required")
    if looks_like_token(password):
        return check_token(password, address)
    if not username:
        raise AuthenticationFailed("credentials required")
    return check_password(username, password)


def refresh_principal(principal: Principal) -> Principal:
    """`principal` as the database has it now (admin flag, token limits), for a login held for a while:
    raises AuthenticationFailed if its token was revoked, its user disabled or deleted, or (a password
    login) the password changed since."""
    if principal.service:
        return principal
    if principal.token_id is not None:
        row = Token.select(Token, User).join(User).where(Token.id == principal.token_id).first()
        if row is None or row.revoked:
            raise AuthenticationFailed("token revoked")
        if row.expires is not None and row.expires <= time.time():
            raise AuthenticationFailed("token expired")
        user = row.user
    else:
        row = None
        user = User.get_or_none(User.id == principal.user_id)
    if user is None or not user.is_active:
        raise AuthenticationFailed("user disabled or deleted")
    if principal.password_version is not None and principal.password_version != user.session_version:
        raise AuthenticationFailed("password changed")
    return principal_for(user, row)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str  # shown once, never stored
    row: Token


def create_token(
    user: User,
    *,
    feed: Feed | None = None,
    access: Access | None = None,
    name: str = "",
    expires: float | None = None,
) -> IssuedToken:
    """A new token (shown once); `expires`: epoch seconds after which it stops working, None for never."""
    token = new_token()
    row = Token.create(
        user=user,
        name=name[:100],
        token_hash=hash_token(token),
        prefix=token[:12],
        feed=feed,
        access=access.value if access else None,
        expires=expires,
        # Only now is the plaintext at hand: keep its Mosquitto hash for `rtdp mosquitto-files`.
        broker_hash=mosquitto_hash(token),
    )
    return IssuedToken(token, row)


@dataclass(frozen=True)
class ServiceAccount:
    """The internal account bridge and viewer use on the broker; owns `rtdp/#`."""

    username: str
    password: str
    # Seeds unguessable client ids: amqtt handles a CONNECT's client id before its password, so a
    # guessable id would let anyone knock the bridge's session over.
    client_secret: str

    def client_id(self, role: str) -> str:
        return f"rtdp-{role}-{self.client_secret[:16]}"

    def principal(self) -> Principal:
        return Principal(user_id=0, email=self.username, is_admin=True, service=True)

    def matches(self, username: str | None, password: str | None) -> bool:
        return (
            username is not None
            and password is not None
            and secrets.compare_digest(username.encode(), self.username.encode())
            and secrets.compare_digest(password.encode(), self.password.encode())
        )

    @classmethod
    def load_or_create(cls, data_dir: Path) -> ServiceAccount:
        """The account in `data_dir/service-account.json`, created (mode 0600) on first use.

        Safe when several processes start at once: the file is written aside and linked into
        place, so a reader never sees half of it and the first writer wins.
        """
        path = data_dir / SERVICE_ACCOUNT_FILE
        if path.exists():
            return cls._read(path)
        private_dir(data_dir)
        account = cls(
            username=f"rtdp-service-{secrets.token_hex(4)}",
            password=secrets.token_urlsafe(32),
            client_secret=secrets.token_hex(16),
        )
        aside = data_dir / f".{SERVICE_ACCOUNT_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        # Written with 0600 from the start: the file holds a password to every topic.
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(
                    {
                        "username": account.username,
                        "password": account.password,
                        "client_secret": account.client_secret,
                    },
                    handle,
                )
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(aside, path)
            except FileExistsError:
                return cls._read(path)  # another process won the race: use its account
        finally:
            aside.unlink(missing_ok=True)
        return account

    @classmethod
    def _read(cls, path: Path) -> ServiceAccount:
        data = json.loads(path.read_text())
        return cls(data["username"], data["password"], data["client_secret"])

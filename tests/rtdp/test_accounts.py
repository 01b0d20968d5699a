from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import stat
from pathlib import Path

import peewee as pw
import pytest

from rtdp.accounts import (
    SERVICE_ACCOUNT_FILE,
    ServiceAccount,
    check_credentials,
    check_password,
    check_token,
    create_token,
    create_user,
    get_user,
)
from rtdp.credentials import hash_token
from rtdp.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound
from rtdp.models import Token, User
from rtdp.permissions import Access
from rtdp.store import create_feed

PASSWORD = "correct horse"


@pytest.fixture
def ep(any_db: pw.Database) -> User:
    return create_user("Ep@Nothing.com", PASSWORD)


def test_email_is_case_insensitive_and_unique(ep: User) -> None:
    assert ep.email == "ep@nothing.com"
    assert get_user("EP@NOTHING.COM").id == ep.id
    with pytest.raises(Conflict):
        create_user("ep@NOTHING.com", "other")
    assert User.select().count() == 1


@pytest.mark.parametrize("email", ["", "no-at-sign", "a@b@c", "with space@x.com", "@x.com", "a@", "a/b@x.com"])
def test_bad_email_rejected(any_db: pw.Database, email: str) -> None:
    with pytest.raises(InvalidInput):
        create_user(email, PASSWORD)


def test_empty_password_rejected(any_db: pw.Database) -> None:
    with pytest.raises(InvalidInput):
        create_user("a@example.com", "")


def test_password_is_hashed_never_stored_plain(ep: User, any_db: pw.Database) -> None:
    stored = User.get_by_id(ep.id).password_hash
    assert PASSWORD not in stored
    assert stored.startswith("$argon2id$")
    # Nothing in the whole users table holds the password.
    for row in any_db.execute_sql("SELECT * FROM " + User._meta.table_name).fetchall():
        assert all(PASSWORD not in str(value) for value in row)


def test_right_and_wrong_password(ep: User) -> None:
    principal = check_password("EP@nothing.com", PASSWORD)
    assert principal.user_id == ep.id and principal.token_id is None
    with pytest.raises(AuthenticationFailed):
        check_password("ep@nothing.com", PASSWORD + "x")
    with pytest.raises(AuthenticationFailed):
        check_password("nobody@nothing.com", PASSWORD)
    with pytest.raises(AuthenticationFailed):
        check_credentials("ep@nothing.com", "")
    with pytest.raises(AuthenticationFailed):
        check_credentials(None, PASSWORD)


def test_inactive_user_cannot_log_in(ep: User) -> None:
    token = create_token(ep).token
    User.update(is_active=False).where(User.id == ep.id).execute()
    with pytest.raises(AuthenticationFailed):
        check_password("ep@nothing.com", PASSWORD)
    with pytest.raises(AuthenticationFailed):
        check_token(token)


def test_token_shown_once_and_stored_hashed(ep: User, any_db: pw.Database) -> None:
    issued = create_token(ep, name="device")
    assert issued.token.startswith("rtdp_")
    row = Token.get_by_id(issued.row.id)
    assert row.token_hash == hash_token(issued.token)
    for values in any_db.execute_sql("SELECT * FROM " + Token._meta.table_name).fetchall():
        assert all(issued.token not in str(value) for value in values)
    assert not hasattr(row, "token")
    # Any username goes with a token (a device's MQTT password or HTTP Basic password).
    assert check_credentials("whatever", issued.token).token_id == row.id
    assert check_credentials(None, issued.token).user_id == ep.id


def test_token_limits_are_carried(ep: User) -> None:
    feed = create_feed("f", ep)
    issued = create_token(ep, feed=feed, access=Access.READ)
    principal = check_token(issued.token)
    assert principal.token_feed_id == feed.id
    assert principal.token_access is Access.READ


def test_unknown_and_revoked_tokens_fail(ep: User) -> None:
    issued = create_token(ep)
    with pytest.raises(AuthenticationFailed):
        check_token(issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B"))
    with pytest.raises(AuthenticationFailed):
        check_token("not-a-token")
    Token.update(revoked=True).where(Token.id == issued.row.id).execute()
    with pytest.raises(AuthenticationFailed):
        check_token(issued.token)
    with pytest.raises(AuthenticationFailed):
        check_credentials("ep@nothing.com", issued.token)


def test_get_user_missing(any_db: pw.Database) -> None:
    with pytest.raises(NotFound):
        get_user("nobody@example.com")


# -- the service account ------------------------------------------------------------------------


def test_service_account_created_0600_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = ServiceAccount.load_or_create(data_dir)
    path = data_dir / SERVICE_ACCOUNT_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ServiceAccount.load_or_create(data_dir) == first
    assert first.matches(first.username, first.password)
    assert not first.matches(first.username, first.password + "x")
    assert not first.matches(None, first.password)
    assert first.client_id("bridge") != first.client_id("viewer")
    assert first.client_secret[:16] in first.client_id("bridge")
    assert first.principal().service
    assert [p.name for p in data_dir.iterdir()] == [SERVICE_ACCOUNT_FILE]  # nothing left aside


def _load(data_dir: str, barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue[str]) -> None:
    barrier.wait()
    out.put(ServiceAccount.load_or_create(Path(data_dir)).password)


def test_service_account_race_between_processes(tmp_path: Path) -> None:
    """Processes starting together (rtdp bridge and rtdp viewer) end up with one account."""
    context = multiprocessing.get_context("fork")
    for round_ in range(3):
        data_dir = tmp_path / f"round{round_}"
        workers = 6
        barrier = context.Barrier(workers)
        out: multiprocessing.Queue[str] = context.Queue()
        processes = [context.Process(target=_load, args=(str(data_dir), barrier, out)) for _ in range(workers)]
        for process in processes:
            process.start()
        passwords = {out.get(timeout=30) for _ in range(workers)}
        for process in processes:
            process.join(30)
            assert process.exitcode == 0
        assert passwords == {ServiceAccount.load_or_create(data_dir).password}
        assert sorted(p.name for p in data_dir.iterdir()) == [SERVICE_ACCOUNT_FILE]

"""Tokens remember when and from where they were last used (cheaply), and may expire."""

from __future__ import annotations

import time
from pathlib import Path

import peewee as pw
import pytest
from click.testing import CliRunner

from rtdp.accounts import check_credentials, check_token, create_token, principal_for, refresh_principal
from rtdp.cli import main
from rtdp.errors import AuthenticationFailed
from rtdp.models import Token, User


@pytest.fixture
def ep(any_db: pw.Database) -> User:
    created: User = User.create(email="ep@nothing.com", password_hash="unused")
    return created


def test_last_use_is_written_at_most_once_a_minute(ep: User) -> None:
    issued = create_token(ep)
    check_credentials("device", issued.token, "192.0.2.7")
    row = Token.get_by_id(issued.row.id)
    assert row.last_address == "192.0.2.7" and time.time() - row.last_used < 60
    # Again within the minute: no write (the first use's time and address stay).
    check_token(issued.token, "192.0.2.8")
    assert Token.get_by_id(issued.row.id).last_address == "192.0.2.7"
    Token.update(last_used=time.time() - 61).where(Token.id == issued.row.id).execute()
    check_token(issued.token, "192.0.2.8")
    assert Token.get_by_id(issued.row.id).last_address == "192.0.2.8"


def test_an_expired_token_stops_working_also_for_a_held_login(ep: User) -> None:
    issued = create_token(ep, expires=time.time() + 3600)
    held = check_token(issued.token)
    Token.update(expires=time.time() - 1).where(Token.id == issued.row.id).execute()
    with pytest.raises(AuthenticationFailed, match="expired"):
        check_token(issued.token)
    with pytest.raises(AuthenticationFailed, match="expired"):
        refresh_principal(held)
    assert refresh_principal(principal_for(ep)).email == "ep@nothing.com"  # the password login is unaffected


def test_cli_token_with_expiry(tmp_path: Path) -> None:
    def run(*args: str) -> str:
        return CliRunner().invoke(main, [*args, "--data-dir", str(tmp_path)], catch_exceptions=False).output

    run("user", "add", "ep@nothing.com", "--password", "a-long-password")
    assert run("token", "add", "ep@nothing.com", "--expires-days", "7").startswith("rtdp_")
    assert 6.9 * 86400 < Token.get().expires - time.time() <= 7 * 86400
    assert "Invalid value" in run("token", "add", "ep@nothing.com", "--expires-days", "0")

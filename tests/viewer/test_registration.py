"""RTDP_REGISTRATION: closed by default, except for the first account on an empty database; --demo opens it."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from rtdp.errors import ConfigError
from rtdp.models import User
from rtdp.settings import Settings
from tests.viewer.conftest import make_user
from tests.viewer.test_pages import csrf
from viewer.app import create_app


def register(client: TestClient, email: str) -> int:
    data = {"email": email, "password": "a-long-password", "csrf_token": csrf(client, "/login")}
    return client.post("/register", data=data, follow_redirects=False).status_code


def test_closed_by_default_except_for_the_first_account(settings: Settings) -> None:
    closed = settings.replace(registration=None)
    assert not closed.registration_open
    with TestClient(create_app(closed)) as client:
        # Nobody has an account: the page offers registration, and the first account is the admin.
        assert 'href="/register"' in client.get("/login").text
        assert register(client, "first@example.com") == 303
        assert User.get(User.email == "first@example.com").is_admin
        client.cookies.clear()
        assert 'href="/register"' not in client.get("/login").text
        assert client.get("/register").status_code == 404
        assert register(client, "second@example.com") == 404
        assert User.select().count() == 1


def test_open_lets_anyone_register_and_demo_opens_it(settings: Settings) -> None:
    assert settings.replace(registration=None, demo=True).registration_open
    assert not settings.replace(registration="closed", demo=True).registration_open
    with TestClient(create_app(settings.replace(registration="open"))) as client:
        make_user("someone@example.com", "a-long-password")
        assert 'href="/register"' in client.get("/").text
        assert register(client, "second@example.com") == 303
        assert not User.get(User.email == "second@example.com").is_admin


def test_the_setting_names_its_values() -> None:
    assert Settings.build(env={"RTDP_REGISTRATION": "open"}).registration_open
    with pytest.raises(ConfigError, match="RTDP_REGISTRATION.*open or closed"):
        Settings.build(env={"RTDP_REGISTRATION": "maybe"})
    with pytest.raises(ConfigError, match="--registration"):
        Settings.build(env={}, registration="maybe")

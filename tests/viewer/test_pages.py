"""The HTML pages in-process (TestClient on the real create_app): sessions, CSRF, registration,
permissions, escaping and the feed and axis forms."""

from __future__ import annotations

import re
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from rtdp import revision
from rtdp.codec import Sample
from rtdp.credentials import hash_token
from rtdp.demo import seed_demo
from rtdp.models import Axis, Feed, Share, Token, User
from rtdp.settings import Settings
from rtdp.store import create_axis, create_feed, get_axis, write_points
from tests.viewer.conftest import World, make_user
from viewer.app import create_app
from viewer.session import SECRET_FILE, SESSION_COOKIE, secret_key

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf(client: TestClient, path: str = "/login") -> str:
    page = client.get(path)
    match = CSRF_RE.search(page.text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def login(client: TestClient, email: str, password: str) -> None:
    answer = client.post(
        "/login", data={"email": email, "password": password, "csrf_token": csrf(client)}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text


def test_login_shows_the_user_and_logout_ends_the_session(client: TestClient, world: World) -> None:
    assert client.get("/", follow_redirects=False).status_code == 200  # anonymous: public feeds only
    login(client, "ep@nothing.com", "1234")
    home = client.get("/")
    assert "ep@nothing.com" in home.text and "feed_a" in home.text
    assert "feed_ap" not in home.text  # ap's private feed
    token = CSRF_RE.search(home.text).group(1)  # type: ignore[union-attr]
    assert client.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    assert "ep@nothing.com" not in client.get("/").text
    assert client.get("/feeds/feed_a", follow_redirects=False).headers["location"] == "/login?next=%2Ffeeds%2Ffeed_a"


def test_wrong_password_is_refused(client: TestClient, world: World) -> None:
    answer = client.post("/login", data={"email": "ep@nothing.com", "password": "nope", "csrf_token": csrf(client)})
    assert answer.status_code == 400
    assert "Wrong email or password" in answer.text
    assert "ep@nothing.com (admin)" not in answer.text


def test_session_cookie_is_httponly_and_samesite_lax(client: TestClient, world: World) -> None:
    client.get("/login")
    answer = client.post(
        "/login",
        data={"email": "ep@nothing.com", "password": "1234", "csrf_token": csrf(client)},
        follow_redirects=False,
    )
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(SESSION_COOKIE + "=")
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()


def test_login_next_must_stay_on_this_site(client: TestClient, world: World) -> None:
    answer = client.post(
        "/login",
        data={"email": "ep@nothing.com", "password": "1234", "csrf_token": csrf(client), "next": "//evil.example/x"},
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/"


@pytest.mark.parametrize("token", [None, "", "forged"])
def test_posts_without_the_session_csrf_token_are_rejected(client: TestClient, world: World, token: str | None) -> None:
    login(client, "ep@nothing.com", "1234")
    data = {"name": "sneaky", "x_cast": "datetime", "y_cast": "float"}
    if token is not None:
        data["csrf_token"] = token
    answer = client.post("/feeds", data=data)
    assert answer.status_code == 403
    assert not Feed.select().where(Feed.name == "sneaky").exists()
    # A logout is state-changing too: without the token the session survives.
    assert client.post("/logout", data={"csrf_token": "forged"}).status_code == 403
    assert "ep@nothing.com" in client.get("/").text


def test_login_form_needs_csrf_too(client: TestClient, world: World) -> None:
    client.get("/login")
    answer = client.post("/login", data={"email": "ep@nothing.com", "password": "1234"})
    assert answer.status_code == 403


def test_register_first_user_is_admin_then_plain_users(client: TestClient) -> None:
    answer = client.post(
        "/register",
        data={"email": "first@example.com", "password": "longenough", "csrf_token": csrf(client, "/register")},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/login?registered=1"
    assert "its account now exists: sign in" in client.get(answer.headers["location"]).text
    login(client, "first@example.com", "longenough")
    assert "first@example.com (admin)" in client.get("/").text
    client.cookies.clear()
    client.post(
        "/register",
        data={"email": "second@example.com", "password": "longenough", "csrf_token": csrf(client, "/register")},
    )
    assert User.get(User.email == "first@example.com").is_admin
    assert not User.get(User.email == "second@example.com").is_admin


def test_register_needs_eight_characters_and_keeps_a_taken_email(client: TestClient, world: World) -> None:
    short = client.post(
        "/register", data={"email": "x@example.com", "password": "short", "csrf_token": csrf(client, "/register")}
    )
    assert short.status_code == 400 and "at least 8" in short.text
    again = client.post(
        "/register",
        data={"email": "EP@nothing.com", "password": "longenough", "csrf_token": csrf(client, "/register")},
        follow_redirects=False,
    )
    # Answered as a new address is (see test_hostile), and the account is left as it was.
    assert again.status_code == 303 and again.headers["location"] == "/login?registered=1"
    assert User.get(User.email == "ep@nothing.com").password_hash == world.ep.password_hash
    assert not User.select().where(User.email == "x@example.com").exists()


def test_registration_off(settings: Settings) -> None:
    with TestClient(create_app(settings.replace(registration="closed"))) as client:
        make_user("someone@example.com", "a-long-password")  # else the first account may register
        assert client.get("/register").status_code == 404
        assert "Register" not in client.get("/login").text
        answer = client.post("/register", data={"email": "x@example.com", "password": "longenough"})
        assert answer.status_code in (403, 404)
        assert User.select().count() == 1


def test_feed_name_description_and_email_are_escaped(client: TestClient, world: World) -> None:
    evil = "<script>alert('x')</script>"
    feed = create_feed("escaped", world.ep, description=evil, public=True)
    create_axis(feed, "a")
    login(client, "ep@nothing.com", "1234")
    for path in ("/", "/feeds/escaped", "/feeds/escaped/graph", "/feeds/escaped/sparklines", "/feeds/escaped/axes/a"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert evil not in page.text, path
    assert "&lt;script&gt;" in client.get("/feeds/escaped").text
    # A rejected feed name comes back in the form and the message: escaped as well.
    answer = client.post("/feeds", data={"name": "<b>x</b>", "csrf_token": csrf(client, "/")})
    assert answer.status_code == 400
    assert "<b>x</b>" not in answer.text and "&lt;b&gt;x&lt;/b&gt;" in answer.text


def test_other_users_feed_is_403_in_the_layout_and_unknown_is_404(client: TestClient, world: World) -> None:
    login(client, "ap@nothing.com", "1234")
    for path in ("/feeds/feed_a", "/feeds/feed_a/graph", "/feeds/feed_a/sparklines", "/feeds/feed_a/axes/axis_a00"):
        page = client.get(path)
        assert page.status_code == 403, path
        assert "Access denied" in page.text and "ap@nothing.com" in page.text  # the site's header
    assert client.post("/feeds/feed_a/delete", data={"csrf_token": csrf(client, "/")}).status_code == 403
    assert Feed.select().where(Feed.name == "feed_a").exists()
    missing = client.get("/feeds/no_such_feed")
    assert missing.status_code == 404 and "ap@nothing.com" in missing.text
    nowhere = client.get("/no/such/page")
    assert nowhere.status_code == 404 and 'class="site"' in nowhere.text


def test_create_feed_owned_by_me_then_delete_it(client: TestClient, world: World) -> None:
    login(client, "ap@nothing.com", "1234")
    token = csrf(client, "/")
    answer = client.post(
        "/feeds",
        data={"name": "kitchen", "x_cast": "datetime", "y_cast": "bool", "public": "on", "csrf_token": token},
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/feeds/kitchen"
    feed = Feed.get(Feed.name == "kitchen")
    assert (feed.owner_id, feed.y_cast, feed.public) == (world.ap.id, "bool", True)
    deleted = client.post(
        "/feeds/kitchen/delete", data={"csrf_token": token}, headers={"Accept": "application/json"}
    )
    assert deleted.status_code == 200 and deleted.json() == {"deleted": "kitchen"}
    assert not Feed.select().where(Feed.name == "kitchen").exists()


def test_axes_added_renamed_deleted_as_json(client: TestClient, world: World) -> None:
    login(client, "ep@nothing.com", "1234")
    token = csrf(client, "/feeds/feed_t")
    json_headers = {"Accept": "application/json", "X-CSRF-Token": token}
    added = client.post("/feeds/feed_t/axes", data={"name": "humidity"}, headers=json_headers)
    assert added.status_code == 201
    assert added.json()["examples"]["topic"] == "feeds/feed_t/humidity"
    clash = client.post("/feeds/feed_t/axes/humidity/rename", data={"name": "temp"}, headers=json_headers)
    assert clash.status_code == 409 and "already has an axis" in clash.json()["error"]
    renamed = client.post("/feeds/feed_t/axes/humidity/rename", data={"name": "rh"}, headers=json_headers)
    assert renamed.json()["name"] == "rh"
    bad = client.post("/feeds/feed_t/axes", data={"name": "a/b"}, headers=json_headers)
    assert bad.status_code == 400
    assert client.post("/feeds/feed_t/axes/rh/delete", headers=json_headers).json() == {"deleted": "rh"}
    assert [a.name for a in Axis.select().where(Axis.feed == world.feed_t.id)] == ["temp"]


def test_a_write_share_adds_axes_but_only_the_owner_renames_or_deletes_them(client: TestClient, world: World) -> None:
    """The API's rule (owner or admin manage a feed; a write share adds points and axes), on the pages too."""
    Share.create(feed=world.feed_t, user=world.ap, access="write")
    login(client, "ap@nothing.com", "1234")
    page = client.get("/feeds/feed_t")
    assert 'id="add-axis"' in page.text and "rename-axis" not in page.text and "data-manage" not in page.text
    token = csrf(client, "/feeds/feed_t")
    json_headers = {"Accept": "application/json", "X-CSRF-Token": token}
    assert client.post("/feeds/feed_t/axes", data={"name": "rh"}, headers=json_headers).status_code == 201
    assert client.post("/feeds/feed_t/axes/rh/rename", data={"name": "x"}, headers=json_headers).status_code == 403
    assert client.post("/feeds/feed_t/axes/temp/delete", headers=json_headers).status_code == 403
    assert sorted(a.name for a in Axis.select().where(Axis.feed == world.feed_t.id)) == ["rh", "temp"]


def test_feed_page_shows_topic_url_and_examples(client: TestClient, world: World) -> None:
    login(client, "ep@nothing.com", "1234")
    page = client.get("/feeds/feed_t").text
    assert "feeds/feed_t/temp" in page
    assert "http://testserver/service/feed_input.json/feed_t/temp" in page
    for marker in ("curl ", "mosquitto_pub -h", "paho.mqtt.client", "urllib.request"):
        assert marker in page


def test_axis_page_trend_colours_and_pages(client: TestClient, world: World) -> None:
    axis = Axis.get((Axis.feed == world.feed_a.id) & (Axis.name == "axis_a00"))
    # 9 < 10 as numbers (as text "9" > "10"): the original compared numbers.
    values = [1, 3, 3, 2, 9, 10] + list(range(100, 160))
    write_points([(axis.id, Sample(float(i), float(v))) for i, v in enumerate(values)])
    login(client, "ep@nothing.com", "1234")
    newest = client.get("/feeds/feed_a/axes/axis_a00").text
    rows = re.findall(r'<tr class="trend-(\w+)" data-id="\d+" data-x="([\d.]+)"', newest)
    assert len(rows) == 50 and rows[0] == ("up", "65.0")
    older = re.search(r'href="\?before=([\d.]+)"', newest)
    assert older
    history = client.get(f"/feeds/feed_a/axes/axis_a00?before={older.group(1)}").text
    rows = re.findall(r'<tr class="trend-(\w+)" data-id="\d+" data-x="([\d.]+)"', history)
    assert [x for _, x in rows] == [f"{float(i)}" for i in range(15, -1, -1)]
    trends = dict((x, t) for t, x in rows)
    assert (trends["5.0"], trends["4.0"], trends["3.0"], trends["2.0"], trends["0.0"]) == (
        "up",
        "up",
        "down",
        "equal",
        "none",
    )


def test_password_change_ends_other_sessions(client: TestClient, settings: Settings, world: World) -> None:
    login(client, "ep@nothing.com", "1234")
    before = revision.current()
    with TestClient(client.app) as other:
        login(other, "ep@nothing.com", "1234")
        short = client.post(
            "/account/password",
            data={"current_password": "1234", "new_password": "short", "csrf_token": csrf(client, "/account")},
        )
        assert short.status_code == 400
        changed = client.post(
            "/account/password",
            data={"current_password": "1234", "new_password": "a-new-password", "csrf_token": csrf(client, "/account")},
        )
        assert changed.status_code == 200 and "Password changed" in changed.text
        assert "ep@nothing.com" in client.get("/account").text  # this session carries on
        assert other.get("/account", follow_redirects=False).status_code == 303  # the other one is gone
        assert revision.current() > before  # and the broker disconnects the MQTT password logins (rtdp.revision)


def test_tokens_are_shown_once_and_can_be_revoked(client: TestClient, world: World) -> None:
    login(client, "ap@nothing.com", "1234")
    created = client.post(
        "/account/tokens",
        data={"name": "sensor <1>", "feed": "feed_ap", "access": "write", "csrf_token": csrf(client, "/account")},
    )
    token = re.search(r'<code id="new-token">([^<]+)</code>', created.text)
    assert token and "sensor &lt;1&gt;" in created.text
    assert token.group(1) not in client.get("/account").text  # shown once
    row = Token.get(Token.name == "sensor <1>")
    assert (row.feed_id, row.access) == (world.feed_ap.id, "write")
    denied = client.post(
        "/account/tokens", data={"feed": "feed_a", "csrf_token": csrf(client, "/account")}
    )
    assert denied.status_code == 403
    before = revision.current()
    client.post("/account/tokens/revoke", data={"token_id": str(row.id), "csrf_token": csrf(client, "/account")})
    assert Token.get_by_id(row.id).revoked
    assert revision.current() > before  # the broker disconnects the token's MQTT clients (rtdp.revision)


def test_revoking_a_token_id_beyond_any_row_is_a_404(client: TestClient, world: World) -> None:
    # 2**63 does not fit SQLite's integer: it was a 500 from an OverflowError.
    login(client, "ap@nothing.com", "1234")

    def revoke(token_id: str) -> int:
        data = {"token_id": token_id, "csrf_token": csrf(client, "/account")}
        return client.post("/account/tokens/revoke", data=data).status_code

    for token_id in (str(2**63), "9" * 30, str(-(2**63) - 1)):
        assert revoke(token_id) == 404, token_id
    ep_token = Token.get(Token.user == world.ep.id)
    assert revoke(str(ep_token.id)) == 404 and not Token.get_by_id(ep_token.id).revoked


def test_a_token_revoked_on_the_account_page_stops_working_at_once(client: TestClient, world: World) -> None:
    """The viewer caches verified credentials; a change made through its own pages must not wait for that."""
    login(client, "ap@nothing.com", "1234")
    row = Token.get((Token.user == world.ap.id) & (Token.token_hash == hash_token(world.ap_token)))
    headers = {"Authorization": f"Bearer {world.ap_token}"}
    assert client.get("/api/v1/feeds/feed_ap", headers=headers).status_code == 200  # now cached
    client.post("/account/tokens/revoke", data={"token_id": str(row.id), "csrf_token": csrf(client, "/account")})
    assert client.get("/api/v1/feeds/feed_ap", headers=headers).status_code == 401


def test_secret_key_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d")
    first = secret_key(settings)
    assert secret_key(settings) == first and len(first) >= 32
    assert stat.S_IMODE((tmp_path / "d" / SECRET_FILE).stat().st_mode) == 0o600
    assert secret_key(settings.replace(secret_key="given")) == "given"


def test_public_feed_is_readable_without_signing_in(client: TestClient, world: World) -> None:
    feed = create_feed("open_data", world.ap, public=True)
    create_axis(feed, "a")
    assert "open_data" in client.get("/").text
    for path in ("/feeds/open_data", "/feeds/open_data/graph", "/feeds/open_data/axes/a"):
        assert client.get(path).status_code == 200, path
    assert 'id="add-axis"' not in client.get("/feeds/open_data").text  # reading is not writing


def test_export_links_on_the_axis_page_answer(client: TestClient, world: World) -> None:
    axis = Axis.get((Axis.feed == world.feed_a.id) & (Axis.name == "axis_a00"))
    write_points([(axis.id, Sample(1.0, 5.0)), (axis.id, Sample(2.0, 6.0))])
    login(client, "ep@nothing.com", "1234")
    page = client.get("/feeds/feed_a/axes/axis_a00").text
    links = [link.replace("&amp;", "&") for link in re.findall(r'href="(/api/v1/[^"]+/export[^"]+)"', page)]
    assert len(links) == 2
    csv_answer = client.get(links[0])
    assert csv_answer.status_code == 200 and csv_answer.text.splitlines()[0] == "x,y"
    assert client.get(links[1]).status_code == 200


def test_session_cookie_alone_cannot_change_anything_through_the_api(client: TestClient, world: World) -> None:
    """A signed-in browser sends its cookie from any site: API writes and ingestion made with the
    session need the page's CSRF token in X-CSRF-Token; reads do not."""
    login(client, "ep@nothing.com", "1234")
    token = csrf(client, "/")
    assert client.get("/api/v1/feeds/feed_t").status_code == 200
    refused = client.post("/api/v1/feeds", json={"name": "forged"})
    assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["error"]
    assert client.get("/service/feed_input.json/feed_t/temp", params={"y": "1"}).status_code == 403
    assert client.delete("/api/v1/feeds/feed_t").status_code == 403
    assert Feed.get_or_none(Feed.name == "forged") is None and Feed.get_or_none(Feed.name == "feed_t") is not None
    created = client.post("/api/v1/feeds", json={"name": "made_here"}, headers={"X-CSRF-Token": token})
    assert created.status_code in (200, 201), created.text


POLYLINE_RE = re.compile(r'<svg class="sparkline"[^>]*><polyline [^>]*points="([^"]*)"')


def test_feed_list_and_feed_page_draw_a_sparkline_per_axis_with_points(client: TestClient, world: World) -> None:
    axis = Axis.get((Axis.feed == world.feed_a.id) & (Axis.name == "axis_a00"))
    write_points([(axis.id, Sample(float(i), float(i % 7))) for i in range(100)], received_at=1000.0)
    login(client, "ep@nothing.com", "1234")
    for path in ("/", "/feeds/feed_a"):
        text = client.get(path).text
        lines = POLYLINE_RE.findall(text)
        assert len(lines) == 1, path  # axis_a00 only: feed_t's temp has no points
        pairs = lines[0].split(" ")
        assert len(pairs) == 60  # the newest 60 points
        coords = [tuple(float(v) for v in pair.split(",")) for pair in pairs]
        assert all(0 <= x <= 120 and 0 <= y <= 24 for x, y in coords)
        assert coords == sorted(coords, key=lambda c: c[0])  # oldest to newest, left to right


def test_sparkline_points_are_numbers_only() -> None:
    from viewer.pages.spark import polyline_points

    assert polyline_points([(1.0, 2.0)]) == ""  # nothing to draw
    assert polyline_points([(0.0, 5.0), (1.0, 5.0)]) == "1.5,12.0 118.5,12.0"  # flat: in the middle
    assert polyline_points([(0.0, 0.0), (1.0, float("nan")), (2.0, 1.0)]) == "1.5,22.5 118.5,1.5"


def _field_error(text: str, form_id: str, field: str) -> str:
    match = re.search(
        rf'name="{field}"[^>]*aria-invalid="true" aria-describedby="{form_id}-{field}-error">\s*'
        rf'<span class="field-error" id="{form_id}-{field}-error" role="alert">([^<]*)</span>',
        text,
    )
    assert match, f"no error next to {form_id} {field}"
    return match.group(1)


def test_create_feed_errors_are_shown_next_to_the_name_field(client: TestClient, world: World) -> None:
    login(client, "ep@nothing.com", "1234")
    taken = client.post("/feeds", data={"name": "feed_a", "csrf_token": csrf(client, "/")})
    assert taken.status_code == 409
    assert "already exists" in _field_error(taken.text, "create-feed", "name")
    assert 'class="error" role="alert"' not in taken.text  # not in the general alert as well
    bad = client.post("/feeds", data={"name": "no spaces<b>", "csrf_token": csrf(client, "/")})
    assert bad.status_code == 400
    assert "invalid feed" in _field_error(bad.text, "create-feed", "name")
    assert "<b>" not in bad.text.split("<main>")[1]  # escaped, in the message and the value
    cast = client.post("/feeds", data={"name": "ok", "x_cast": "nope", "csrf_token": csrf(client, "/")})
    assert cast.status_code == 400 and 'class="error" role="alert">unknown cast' in cast.text  # no field: general


def test_register_password_and_add_axis_errors_are_next_to_their_fields(client: TestClient, world: World) -> None:
    short = client.post(
        "/register", data={"email": "x@example.com", "password": "short", "csrf_token": csrf(client, "/register")}
    )
    assert "at least 8" in _field_error(short.text, "register", "password")
    taken = client.post(
        "/register",
        data={"email": "ep@@nothing.com", "password": "longenough", "csrf_token": csrf(client, "/register")},
    )
    assert "invalid email" in _field_error(taken.text, "register", "email")
    login(client, "ep@nothing.com", "1234")
    wrong = client.post(
        "/account/password",
        data={"current_password": "nope", "new_password": "a-new-password", "csrf_token": csrf(client, "/account")},
    )
    assert "wrong" in _field_error(wrong.text, "change-password", "current_password")
    differ = client.post(
        "/account/password",
        data={
            "current_password": "1234",
            "new_password": "a-new-password",
            "new_password2": "other-password",
            "csrf_token": csrf(client, "/account"),
        },
    )
    assert "differ" in _field_error(differ.text, "change-password", "new_password2")
    axis = client.post("/feeds/feed_a/axes", data={"name": "axis_a00", "csrf_token": csrf(client, "/feeds/feed_a")})
    assert axis.status_code == 409
    assert "already has an axis" in _field_error(axis.text, "add-axis", "name")
    as_json = client.post(
        "/feeds/feed_a/axes",
        data={"name": "bad name", "csrf_token": csrf(client, "/feeds/feed_a")},
        headers={"Accept": "application/json"},
    )
    assert as_json.status_code == 400 and as_json.json()["field"] == "axis"


def test_the_original_page_urls_lead_to_their_pages_and_ap_is_refused_eps(client: TestClient, world: World) -> None:
    """The original's TODO: ep at .../default/feed_data/<id> sees it, ap gets access denied."""
    old = "/realtime_data_processor/default"
    axis = get_axis(world.feed_a, "axis_a00")
    feed_id, axis_id = world.feed_a.id, axis.id
    # Not signed in: sign in first (following the redirect would show the feed's name).
    answer = client.get(f"{old}/feed_data/{axis_id}", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next=")
    assert "feed_a" not in answer.headers["location"]
    login(client, "ap@nothing.com", "1234")
    for path in (f"feed_data/{axis_id}", f"feed_graph/{feed_id}", f"feed_axis_list/{feed_id}"):
        refused = client.get(f"{old}/{path}", follow_redirects=False)
        assert refused.status_code == 403 and "feed_a" not in refused.headers.get("location", ""), path
    client.post("/logout", data={"csrf_token": csrf(client, "/")})
    login(client, "ep@nothing.com", "1234")
    expected = {
        f"feed_data/{axis_id}": "/feeds/feed_a/axes/axis_a00",
        f"feed_sparkline/{axis_id}": "/feeds/feed_a/sparklines",
        f"feed_graph/{feed_id}": "/feeds/feed_a/graph",
        f"feed_axis_list/{feed_id}": "/feeds/feed_a",
        "feed_list": "/",
        "admin_dashboard": "/admin",
        "user/login": "/login",
    }
    for path, target in expected.items():
        answer = client.get(f"{old}/{path}", follow_redirects=False)
        assert (answer.status_code, answer.headers.get("location")) == (303, target), path
    assert client.get(f"{old}/feed_data/{axis_id}").status_code == 200  # the page itself
    for missing in ("feed_data/999999", "feed_data/x", "feed_data/\uff13", "feed_graph/99999999999999999999", "nope/1"):
        assert client.get(f"{old}/{missing}", follow_redirects=False).status_code == 404, missing
    assert client.get("/realtime_data_processor/tools/index", follow_redirects=False).headers["location"] == "/tools"


def test_account_page_shows_a_tokens_last_use_and_expiry(client: TestClient, world: World) -> None:
    login(client, "ep@nothing.com", "1234")
    made = client.post(
        "/account/tokens", data={"name": "sensor", "expires_days": "30", "csrf_token": csrf(client, "/account")}
    )
    token = re.search(r'id="new-token">([^<]+)<', made.text).group(1)  # type: ignore[union-attr]
    row = Token.get(Token.token_hash == hash_token(token))
    assert 29.9 * 86400 < row.expires - row.created <= 30 * 86400
    assert client.get("/api/v1/feeds/feed_a", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    page = client.get("/account").text
    used = re.search(rf'<tr data-token="{row.prefix}">.*?</tr>', page, re.S).group(0)  # type: ignore[union-attr]
    # TestClient's peer address is "testclient".
    assert "from <code>testclient</code>" in used and "(expired)" not in used
    bad = client.post("/account/tokens", data={"expires_days": "0", "csrf_token": csrf(client, "/account")})
    assert bad.status_code == 400


def test_the_anonymous_home_page_says_what_rtdp_is_and_names_the_demo_logins(settings: Settings) -> None:
    with TestClient(create_app(replace(settings, demo=True))) as demo:
        seed_demo()
        page = demo.get("/").text
        assert "takes numbers from sensors" in page and 'href="/login"' in page
        assert "<code>ap@nothing.com</code> or <code>ep@nothing.com</code> with the password <code>1234</code>" in page
    with TestClient(create_app(settings)) as plain:
        page = plain.get("/").text
        assert "takes numbers from sensors" in page and "the password" not in page


def test_a_feed_without_axes_shows_complete_examples_for_its_first_axis(client: TestClient, world: World) -> None:
    login(client, "ep@nothing.com", "1234")
    create_feed("empty_feed", world.ep)
    page = client.get("/feeds/empty_feed").text
    assert "feeds/empty_feed/value" in page and "pip install paho-mqtt" in page and "RTDP_TOKEN" in page

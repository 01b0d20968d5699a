from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from rtdp.codec import Sample
from rtdp.models import Axis, Feed, Share
from rtdp.permissions import Access
from rtdp.settings import BrokerURL, Settings
from rtdp.store import get_axis, write_points
from tests.support.env import wait_for
from tests.support.mosquitto import Mosquitto
from tests.viewer.conftest import Watcher, World, basic, bearer, make_world, ready
from viewer.app import create_app

API = "/api/v1/feeds"
EP = basic("ep@nothing.com", "1234")
AP = basic("ap@nothing.com", "1234")


def names(response_json: dict[str, list[dict[str, object]]]) -> list[object]:
    return [feed["name"] for feed in response_json["feeds"]]


def test_list_follows_the_permission_rule(client: TestClient, world: World) -> None:
    assert names(client.get(API).json()) == []
    assert names(client.get(API, headers=EP).json()) == ["feed_a", "feed_t"]
    assert names(client.get(API, headers=bearer(world.ep_other_feed_token)).json()) == ["feed_t"]
    assert names(client.get(API, headers=bearer(world.admin_token)).json()) == ["feed_a", "feed_ap", "feed_t"]
    Feed.update(public=True).where(Feed.id == world.feed_ap.id).execute()
    assert names(client.get(API).json()) == ["feed_ap"]
    Share.create(feed=world.feed_a, user=world.ap, access=Access.READ.value)
    assert names(client.get(API, headers=AP).json()) == ["feed_a", "feed_ap"]


def test_feed_shows_axes_and_last_values(client: TestClient, world: World) -> None:
    axis = get_axis(world.feed_a, "axis_a00")
    write_points([(axis.id, Sample(1, 5)), (axis.id, Sample(2, 7))])
    body = client.get(f"{API}/feed_a", headers=EP).json()
    assert body["x_cast"] == "int" and body["y_cast"] == "int"
    assert body["axes"] == [
        {"name": "axis_a00", "point_count": 2, "last_x": 2, "last_y": 7, "last_seen": body["axes"][0]["last_seen"],
         "unit": None, "label": None}
    ]


def test_unknown_and_forbidden(client: TestClient, world: World) -> None:
    # Anonymous: 401 (a challenge) for a private feed and a missing one alike, so names cannot be probed.
    # Signed in: 403 for someone else's feed, 404 for a missing one.
    assert client.get(f"{API}/feed_a").status_code == 401
    assert client.get(f"{API}/nope").status_code == 401
    assert client.get(f"{API}/feed_a", headers=AP).status_code == 403
    assert client.get(f"{API}/nope", headers=AP).status_code == 404
    assert client.get(f"{API}/feed_a/axes/axis_a00/points").status_code == 401
    assert client.get(f"{API}/feed_a/export").status_code == 401


def test_create_update_delete(client: TestClient, world: World) -> None:
    created = client.post(API, json={"name": "new_feed", "y_cast": "int", "description": "d"}, headers=AP)
    assert created.status_code == 201, created.text
    assert created.json()["y_cast"] == "int"
    assert client.post(API, json={"name": "new_feed"}, headers=AP).status_code == 409
    assert client.post(API, json={"name": "bad/name"}, headers=AP).json()["field"] == "feed"
    assert client.post(API, json={"name": "x", "x_cast": "nope"}, headers=AP).status_code == 400
    assert client.post(API, json={"name": "x", "public": "yes"}, headers=AP).status_code == 400
    assert client.post(API, json={"name": "anon"}).status_code == 401
    assert client.post(API, json={"name": "ro"}, headers=bearer(world.ep_read_token)).status_code == 403
    assert client.post(API, content=b"{nope", headers=AP).status_code == 400

    patched = client.patch(f"{API}/new_feed", json={"public": True, "retention_days": 7}, headers=AP)
    assert patched.status_code == 200 and patched.json()["public"] is True
    assert patched.json()["retention_days"] == 7
    assert client.patch(f"{API}/new_feed", json={"retention_days": -1}, headers=AP).status_code == 400
    assert client.patch(f"{API}/new_feed", json={"name": "renamed"}, headers=AP).status_code == 400
    # Public now: ep reads it but may not change or delete it; the admin may.
    assert client.get(f"{API}/new_feed", headers=EP).status_code == 200
    assert client.patch(f"{API}/new_feed", json={"public": False}, headers=EP).status_code == 403
    assert client.delete(f"{API}/new_feed", headers=EP).status_code == 403
    assert client.patch(f"{API}/new_feed", json={"description": "by admin"}, headers=bearer(world.admin_token)).json()[
        "description"
    ] == "by admin"
    assert client.delete(f"{API}/new_feed", headers=AP).status_code == 204
    assert client.get(f"{API}/new_feed", headers=AP).status_code == 404


def test_a_token_for_one_feed_uses_its_points_but_cannot_change_or_delete_the_feed(
    client: TestClient, world: World
) -> None:
    device = bearer(world.ep_other_feed_token)  # ep's token limited to feed_t
    assert client.get(f"{API}/feed_t/axes/temp/points", headers=device).status_code == 200
    assert client.post(f"{API}/feed_t/points", json=[{"axis": "temp", "y": 1}], headers=device).status_code == 200
    for method, url, body in (
        ("PATCH", f"{API}/feed_t", {"public": True}),
        ("DELETE", f"{API}/feed_t", None),
        ("PATCH", f"{API}/feed_t/axes/temp", {"name": "renamed"}),
        ("DELETE", f"{API}/feed_t/axes/temp", None),
    ):
        response = client.request(method, url, json=body, headers=device)
        assert response.status_code == 403, (method, url, response.text)
    assert Feed.get(Feed.name == "feed_t").public is False
    assert get_axis(world.feed_t, "temp") is not None
    # ep's own login, or a token for all of ep's feeds, still may.
    assert client.patch(f"{API}/feed_t", json={"description": "ok"}, headers=bearer(world.ep_token)).status_code == 200


def test_retention_points_must_be_a_whole_number(client: TestClient, world: World) -> None:
    # JSON's 1e400 is infinity (once a 500), and 1.5 was cut to 1: a purge down to one point per axis.
    body = {"retention_points": 100}
    assert client.patch(f"{API}/feed_a", json=body, headers=EP).json()["retention_points"] == 100
    for raw in (b'{"retention_points": 1e400}', b'{"retention_points": -1e400}', b'{"retention_points": 1.5}'):
        for method, url in (("PATCH", f"{API}/feed_a"), ("POST", API)):
            content = raw if method == "PATCH" else raw.replace(b"{", b'{"name": "rp_feed", ', 1)
            response = client.request(method, url, content=content, headers={**EP, "Content-Type": "application/json"})
            assert response.status_code == 400, (method, raw, response.text)
            assert response.json()["field"] == "retention_points"
    assert client.get(f"{API}/feed_a", headers=EP).json()["retention_points"] == 100
    assert client.get(f"{API}/rp_feed", headers=EP).status_code == 404
    assert client.patch(f"{API}/feed_a", json={"retention_points": 5.0}, headers=EP).json()["retention_points"] == 5


def test_axes(client: TestClient, world: World) -> None:
    url = f"{API}/feed_t/axes"
    assert client.get(url, headers=EP).json()["axes"][0]["name"] == "temp"
    assert client.post(url, json={"name": "humidity"}, headers=EP).status_code == 201
    assert client.post(url, json={"name": "humidity"}, headers=EP).status_code == 409
    assert client.post(url, json={"name": "a/b"}, headers=EP).status_code == 400
    assert client.post(url, json={"name": "x"}, headers=AP).status_code == 403
    assert client.post(url, json={"name": "x"}, headers=bearer(world.ep_read_token)).status_code == 403
    assert client.get(f"{url}/humidity", headers=EP).json()["name"] == "humidity"
    renamed = client.patch(f"{url}/humidity", json={"name": "rh"}, headers=EP)
    assert renamed.status_code == 200 and renamed.json()["name"] == "rh"
    assert client.patch(f"{url}/rh", json={"name": "temp"}, headers=EP).status_code == 409
    assert client.get(f"{url}/humidity", headers=EP).status_code == 404
    assert client.delete(f"{url}/rh", headers=AP).status_code == 403
    assert client.delete(f"{url}/rh", headers=EP).status_code == 204
    assert [a["name"] for a in client.get(url, headers=EP).json()["axes"]] == ["temp"]


def test_axis_unit_and_label(client: TestClient, world: World) -> None:
    url = f"{API}/feed_t/axes/temp"
    answer = client.patch(url, json={"unit": "°C", "label": "Kitchen"}, headers=EP)
    assert answer.status_code == 200
    assert answer.json()["unit"] == "°C" and answer.json()["label"] == "Kitchen" and answer.json()["name"] == "temp"
    assert client.get(url, headers=EP).json()["unit"] == "°C"
    assert client.get(f"{API}/feed_t", headers=EP).json()["axes"][0]["label"] == "Kitchen"
    write_points([(get_axis(world.feed_t, "temp").id, Sample(1416653442.0, 21.5))])
    exported = client.get(f"{API}/feed_t/export", params={"format": "json"}, headers=EP).json()
    assert exported[0]["unit"] == "°C"
    for body, field in (({"unit": 3}, "unit"), ({"unit": "x" * 33}, "unit"), ({"label": "a\nb"}, "label"),
                        ({"colour": "red"}, "colour")):
        refused = client.patch(url, json=body, headers=EP)
        assert refused.status_code == 400 and refused.json()["field"] == field, body
    assert client.patch(url, json={"unit": "%"}, headers=AP).status_code == 403
    cleared = client.patch(url, json={"unit": None, "label": ""}, headers=EP).json()
    assert cleared["unit"] is None and cleared["label"] is None
    assert "unit" not in client.get(f"{API}/feed_t/export", params={"format": "json"}, headers=EP).json()[0]


def test_points_since_until_limit_max_points(client: TestClient, world: World) -> None:
    axis = get_axis(world.feed_t, "temp")
    base = 1416653442.0  # 2014-11-22T10:50:42Z
    write_points([(axis.id, Sample(base + i, float(i % 7))) for i in range(100)])
    url = f"{API}/feed_t/axes/temp/points"
    everything = client.get(url, headers=EP).json()
    assert everything["feed"] == "feed_t" and everything["axis"] == "temp"
    xs = [p["x"] for p in everything["points"]]
    assert xs == sorted(xs) and len(xs) == 100
    assert set(everything["points"][0]) == {"id", "x", "y"}
    window = client.get(url, params={"since": "2014-11-22T10:51:00Z", "until": base + 20}, headers=EP).json()
    assert [p["x"] for p in window["points"]] == [base + i for i in range(18, 21)]
    naive = client.get(url, params={"since": "2014-11-22 10:52:00"}, headers=EP).json()  # server tz is UTC
    assert naive["points"][0]["x"] == base + 78
    assert len(client.get(url, params={"limit": 5}, headers=EP).json()["points"]) == 5
    newest = client.get(url, params={"limit": 2, "newest": "true"}, headers=EP).json()["points"]
    assert [p["x"] for p in newest] == [base + 98, base + 99]
    sampled = client.get(url, params={"max_points": 10}, headers=EP).json()["points"]
    assert 0 < len(sampled) <= 10
    assert max(p["y"] for p in sampled) == 6.0  # spikes survive downsampling
    for bad in ({"since": "yesterday"}, {"limit": "ten"}, {"limit": "0"}, {"max_points": "1"}, {"newest": "x"}):
        response = client.get(url, params=bad, headers=EP)
        assert response.status_code == 400, bad
        assert response.json()["field"] == next(iter(bad))


def test_int_feed_points_are_ints(client: TestClient, world: World) -> None:
    axis = get_axis(world.feed_a, "axis_a00")
    write_points([(axis.id, Sample(3, 2))])
    points = client.get(f"{API}/feed_a/axes/axis_a00/points", headers=EP).json()["points"]
    assert points == [{"id": points[0]["id"], "x": 3, "y": 2}]
    assert client.get(f"{API}/feed_a/axes/axis_a00/points", params={"since": "1.5"}, headers=EP).status_code == 400


def test_batch_is_all_or_nothing(client: TestClient, world: World, watcher: Watcher) -> None:
    url = f"{API}/feed_a/points"
    bad = [{"axis": "axis_a00", "x": 1, "y": 1}, {"axis": "axis_a00", "x": 2, "y": 2.5}]
    response = client.post(url, json=bad, headers=EP)
    assert response.status_code == 400 and response.json()["index"] == 1
    assert "element 1" in response.json()["error"]
    bad_on_new_axis = [{"axis": "axis_new", "x": 1, "y": 1}, {"axis": "axis_a00", "x": 2, "y": 2.5}]
    assert client.post(url, json=bad_on_new_axis, headers=EP).status_code == 400
    assert not Axis.select().where(Axis.name == "axis_new").exists()  # a refused batch creates no axis
    bad_axis = [{"axis": "axis_a00", "x": 1, "y": 1}, {"axis": "no/pe", "x": 2, "y": 2}]
    assert client.post(url, json=bad_axis, headers=EP).json()["index"] == 1
    assert client.post(url, json={"axis": "a"}, headers=EP).status_code == 400
    assert client.post(url, json=[], headers=EP).status_code == 400
    assert client.post(url, json=bad, headers=AP).status_code == 403
    good = [
        {"axis": "axis_a00", "x": 1, "y": 1},
        {"axis": "axis_b", "x": 1, "y": 10},
        {"axis": "axis_a00", "x": 2, "y": 2},
    ]
    response = client.post(url, json=good, headers=EP)
    assert response.status_code == 200, response.text
    assert response.json() == {"feed": "feed_a", "accepted": 3, "axes": ["axis_a00", "axis_b"]}
    # One canonical message per axis; nothing from the rejected batches.
    assert wait_for(lambda: watcher.payloads("feeds/feed_a/axis_b")) == [[{"x": 1.0, "y": 10.0}]]
    assert watcher.payloads("feeds/feed_a/axis_a00") == [[{"x": 1.0, "y": 1.0}, {"x": 2.0, "y": 2.0}]]
    assert Axis.select().where(Axis.name == "axis_b").exists()


def test_batch_auto_creates_its_feed_for_the_caller_once_every_element_is_valid(
    client: TestClient, world: World, watcher: Watcher
) -> None:
    """As the original URL does (README): the feed is the caller's, and a refused batch makes nothing."""
    url = f"{API}/ap_batch/points"
    x = 1.7e9
    bad = [{"axis": "a", "x": x, "y": 1}, {"axis": "a", "x": x + 1, "y": "warm"}]
    response = client.post(url, json=bad, headers=AP)
    assert response.status_code == 400 and response.json()["index"] == 1
    assert not Feed.select().where(Feed.name == "ap_batch").exists()
    good = [{"axis": "a", "x": x, "y": 1}, {"axis": "b", "x": x, "y": 2}]
    response = client.post(url, json=good, headers=AP)
    assert response.status_code == 200, response.text
    assert response.json() == {"feed": "ap_batch", "accepted": 2, "axes": ["a", "b"]}
    feed = Feed.get(Feed.name == "ap_batch")
    assert feed.owner.email == "ap@nothing.com"
    assert sorted(a.name for a in feed.axes) == ["a", "b"]
    assert wait_for(lambda: watcher.payloads("feeds/ap_batch/b")) == [[{"x": x, "y": 2.0}]]
    assert client.post(f"{API}/bad name/points", json=good, headers=AP).status_code == 400


def test_batch_to_a_missing_feed_with_auto_create_off_is_404(settings: Settings) -> None:
    with TestClient(create_app(settings.replace(auto_create=False))) as client:
        wait_for(lambda: ready(client))
        make_world()
        response = client.post(f"{API}/nope/points", json=[{"axis": "a", "y": 1}], headers=EP)
        assert response.status_code == 404 and "auto-create is off" in response.json()["error"]
        assert not Feed.select().where(Feed.name == "nope").exists()


def test_batch_over_more_axes_than_may_await_the_broker_is_refused_whole(settings: Settings) -> None:
    # One publish per axis, at most http_max_pending awaiting PUBACK: a batch over more axes used to
    # create every axis, store the first http_max_pending and answer 503, and so on at every retry.
    with TestClient(create_app(dataclasses.replace(settings, http_max_pending=3))) as client:
        wait_for(lambda: ready(client), what="the viewer to be ready")
        make_world()
        url = f"{API}/feed_a/points"
        too_many = [{"axis": f"ax{i}", "x": 1, "y": i} for i in range(4)]
        response = client.post(url, json=too_many, headers=EP)
        assert response.status_code == 400, response.text
        assert not Axis.select().where(Axis.name.in_([item["axis"] for item in too_many])).exists()
        response = client.post(url, json=[*too_many[:3], {"axis": "ax0", "x": 2, "y": 5}], headers=EP)
        assert response.status_code == 200, response.text


def test_export_csv_and_json(client: TestClient, world: World) -> None:
    temp = get_axis(world.feed_t, "temp")
    write_points([(temp.id, Sample(1416653442.5, 21.5)), (temp.id, Sample(1416653443.0, 22.0))])
    one = client.get(f"{API}/feed_t/export", params={"format": "csv"}, headers=EP)
    assert one.status_code == 200 and one.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(one.text))) == [
        ["x", "y"], ["2014-11-22T10:50:42.500000Z", "21.5"], ["2014-11-22T10:50:43Z", "22.0"]
    ]
    client.post(f"{API}/feed_t/axes", json={"name": "rh"}, headers=EP)
    write_points([(get_axis(world.feed_t, "rh").id, Sample(1416653442.5, 40.0))])
    several = list(csv.reader(io.StringIO(client.get(f"{API}/feed_t/export", headers=EP).text)))
    assert several[0] == ["axis", "x", "y"] and len(several) == 4
    chosen = client.get(f"{API}/feed_t/export", params={"axis": "rh", "format": "json"}, headers=EP).json()
    assert chosen == [{"axis": "rh", "x": "2014-11-22T10:50:42.500000Z", "y": 40.0}]
    since = client.get(f"{API}/feed_t/export", params={"axis": "temp", "since": 1416653443}, headers=EP)
    assert since.text.splitlines() == ["x,y", "2014-11-22T10:50:43Z,22.0"]
    assert client.get(f"{API}/feed_t/export", params={"format": "xml"}, headers=EP).status_code == 400


def test_export_pages_through_many_points(client: TestClient, world: World) -> None:
    axis = get_axis(world.feed_a, "axis_a00")
    write_points([(axis.id, Sample(float(i), float(i))) for i in range(12_001)])
    rows = client.get(f"{API}/feed_a/export", headers=EP).text.splitlines()
    assert rows[0] == "x,y" and len(rows) == 12_002
    assert rows[1:4] == ["0,0", "1,1", "2,2"] and rows[-1] == "12000,12000"


def test_html_paths_get_html_errors(client: TestClient) -> None:
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert client.get("/api/v1/nope").json()["code"] == "not_found"


def test_health(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/readyz").json() == {"status": "ready", "mqtt": True, "database": True}
    assert "rtdp_sse_clients 0.0" in client.get("/metrics").text


@pytest.mark.postgres
def test_api_and_ingestion_on_postgres(
    tmp_path: Path, mosquitto: Mosquitto, pg_url: str, pg_db: object, watcher: Watcher
) -> None:
    # pg_db empties the tables afterwards.
    settings = Settings(data_dir=tmp_path / "pg", broker=BrokerURL.parse(mosquitto.url), db_url=pg_url)
    with TestClient(create_app(settings)) as client:
        wait_for(lambda: ready(client))
        world = make_world()
        assert names(client.get(API, headers=EP).json()) == ["feed_a", "feed_t"]
        assert client.post(API, json={"name": "pg_feed", "x_cast": "float"}, headers=EP).status_code == 201
        assert client.get("/service/feed_input.json/pg_feed/a?x=1.5&y=2", headers=bearer(world.ep_token)).json() == {
            "feed": "pg_feed", "axis": "a", "x": 1.5, "y": 2.0
        }
        batch = [{"axis": "a", "x": 2, "y": 3}, {"axis": "b", "x": 2, "y": 4}]
        assert client.post(f"{API}/pg_feed/points", json=batch, headers=EP).status_code == 200
        assert wait_for(lambda: watcher.payloads("feeds/pg_feed/b")) == [[{"x": 2.0, "y": 4.0}]]
        axis = get_axis(Feed.get(Feed.name == "pg_feed"), "a")
        write_points([(axis.id, Sample(1.5, 2.0)), (axis.id, Sample(2.0, 3.0))])
        points = client.get(f"{API}/pg_feed/axes/a/points", params={"since": 1.6}, headers=EP).json()["points"]
        assert [(p["x"], p["y"]) for p in points] == [(2.0, 3.0)]
        assert client.get(f"{API}/pg_feed/export", params={"axis": "a"}, headers=EP).text.splitlines() == [
            "x,y", "1.5,2.0", "2.0,3.0"
        ]
        assert client.delete(f"{API}/pg_feed", headers=EP).status_code == 204
        assert client.get(f"{API}/pg_feed", headers=EP).status_code == 404
        assert client.get("/readyz").json()["database"] is True

"""rtdp.mosquitto: the password and ACL files, checked against a real Mosquitto with paho clients."""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import peewee as pw
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from rtdp.accounts import ServiceAccount, create_token, create_user, principal_for
from rtdp.errors import NotFound, RtdpError
from rtdp.models import Feed, Group, Membership, Share, Token, User
from rtdp.mosquitto import MosquittoFiles, reload_mosquitto, write_mosquitto_files
from rtdp.mosquitto_passwd import mosquitto_hash, verify_mosquitto_hash
from rtdp.permissions import Access, allowed
from rtdp.settings import Settings
from rtdp.store import create_feed
from tests.support.env import free_port, require, wait_for, wait_port
from tests.support.mosquitto import AS_ROOT, MOSQUITTO, Mosquitto, running_mosquitto

REPO = Path(__file__).resolve().parents[2]


@dataclass
class World:
    settings: Settings
    service: ServiceAccount
    tokens: dict[str, str]  # role -> plaintext token
    rows: dict[str, Token]


@pytest.fixture
def world(sqlite_db: pw.Database, tmp_path: Path) -> World:
    """ep owns a, b and a public feed; ap owns aj; cz reads a through a share, dd writes b through a group."""
    # Only ep gets a real password (argon2 costs ~0.1-0.4 s here); the broker never sees passwords anyway.
    ep = create_user("ep@nothing.com", "1234")
    ap, cz, dd, gone = (
        User.create(email=f"{name}@nothing.com", password_hash="-") for name in ("ap", "cz", "dd", "gone")
    )
    feed_a = create_feed("manual_feed_a", ep)
    feed_b = create_feed("manual_feed_b", ep)
    create_feed("public.feed", ep, public=True)
    create_feed("manual_feed_aj", ap)
    Share.create(feed=feed_a, user=cz, access="read")
    writers = Group.create(name="writers")
    Membership.create(user=dd, group=writers)
    Share.create(feed=feed_b, group=writers, access="write")

    issued = {
        "ep": create_token(ep),
        "ep_read": create_token(ep, access=Access.READ),
        "ep_write": create_token(ep, access=Access.WRITE),
        "ep_one": create_token(ep, feed=feed_a),
        "ap": create_token(ap),
        "cz": create_token(cz),
        "dd": create_token(dd),
        "revoked": create_token(ep),
        "inactive": create_token(gone),
    }
    Token.update(revoked=True).where(Token.id == issued["revoked"].row.id).execute()
    User.update(is_active=False).where(User.id == gone.id).execute()
    settings = Settings.build(env={}, data_dir=tmp_path / "data")
    return World(
        settings,
        ServiceAccount.load_or_create(settings.data_dir),
        {role: i.token for role, i in issued.items()},
        {role: i.row for role, i in issued.items()},
    )


def user_of(world: World, role: str) -> str:
    return world.tokens[role][:12]


def parse_acl(text: str) -> dict[str, set[str]]:
    blocks: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in text.splitlines():
        if line.startswith("user "):
            current = blocks.setdefault(line.split(" ", 1)[1], set())
        elif line.startswith("topic "):
            assert current is not None, "topic line before any user line would apply to everyone"
            current.add(line)
    return blocks


# --- the hash ---------------------------------------------------------------------------------


def test_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd")
    require(tool is not None, "mosquitto_passwd is not installed (apt-get install mosquitto)")
    assert tool is not None
    path = tmp_path / "pw"
    subprocess.run([tool, "-c", "-b", str(path), "alice", "s3cret"], check=True, capture_output=True)
    theirs = path.read_text().strip().split(":", 1)[1]
    assert verify_mosquitto_hash(theirs, "s3cret")
    assert not verify_mosquitto_hash(theirs, "s3creT")
    # Same salt and count as theirs: our function must produce their exact string.
    _, _, count, salt, _ = theirs.split("$")
    assert mosquitto_hash("s3cret", iterations=int(count), salt=base64.b64decode(salt)) == theirs


def test_hash_format_and_rejects() -> None:
    encoded = mosquitto_hash("rtdp_token")
    assert re.fullmatch(r"\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==", encoded)
    assert mosquitto_hash("rtdp_token") != encoded  # fresh salt each time
    assert verify_mosquitto_hash(encoded, "rtdp_token")
    assert not verify_mosquitto_hash("$6$abc$def", "rtdp_token")
    assert not verify_mosquitto_hash("$7$101$!!$!!", "rtdp_token")


def test_create_token_stores_broker_hash(world: World) -> None:
    row = Token.get_by_id(world.rows["ep"].id)
    assert row.broker_hash is not None and verify_mosquitto_hash(row.broker_hash, world.tokens["ep"])
    assert row.prefix == world.tokens["ep"][:12]


# --- the files --------------------------------------------------------------------------------


def test_files_are_private_and_complete(world: World) -> None:
    files = write_mosquitto_files(world.settings)
    assert files == MosquittoFiles(
        world.settings.data_dir / "mosquitto" / "passwd",
        world.settings.data_dir / "mosquitto" / "acl",
        users=8,  # service + 7 active tokens (revoked and inactive user's left out)
        tokens=7,
        skipped=0,
    )
    for path in (files.passwd, files.acl):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in files.passwd.parent.iterdir()) == ["acl", "passwd"]  # no temp files left
    names = [line.split(":", 1)[0] for line in files.passwd.read_text().splitlines()]
    assert names[0] == world.service.username
    assert user_of(world, "revoked") not in names and user_of(world, "inactive") not in names
    acl = parse_acl(files.acl.read_text())
    assert acl[world.service.username] == {"topic readwrite #"}


def test_acl_follows_allowed_for_every_token_and_feed(world: World) -> None:
    acl = parse_acl(write_mosquitto_files(world.settings, world.settings.data_dir / "out").acl.read_text())
    for role in ("ep", "ep_read", "ep_write", "ep_one", "ap", "cz", "dd"):
        row = Token.get_by_id(world.rows[role].id)
        principal = principal_for(row.user, row)
        expected: set[str] = set()
        for feed in Feed.select():
            if allowed(principal, feed, Access.WRITE):
                expected.add(f"topic write feeds/{feed.name}/+")
            if allowed(principal, feed, Access.READ):
                expected |= {
                    f"topic read feeds/{feed.name}/+",
                    f"topic read rtdp/stored/{feed.name}",
                    f"topic read rtdp/errors/{feed.name}/+",
                    f"topic read rtdp/alerts/{feed.name}",
                }
        assert acl[user_of(world, role)] == expected, role
    # Spot checks, so the rule above cannot be vacuous.
    assert acl[user_of(world, "ep_one")] == {
        "topic write feeds/manual_feed_a/+",
        "topic read feeds/manual_feed_a/+",
        "topic read rtdp/stored/manual_feed_a",
        "topic read rtdp/errors/manual_feed_a/+",
        "topic read rtdp/alerts/manual_feed_a",
    }
    assert "topic read feeds/public.feed/+" in acl[user_of(world, "ap")]
    assert not any("manual_feed_a/" in line and "write" in line for line in acl[user_of(world, "cz")])
    assert "topic write feeds/manual_feed_b/+" in acl[user_of(world, "dd")]
    assert not any(line.startswith("topic write") for line in acl[user_of(world, "ep_read")])


def test_old_tokens_without_hash_are_skipped(world: World) -> None:
    Token.update(broker_hash=None).where(Token.id == world.rows["ap"].id).execute()
    files = write_mosquitto_files(world.settings)
    assert (files.tokens, files.skipped) == (6, 1)
    assert user_of(world, "ap") not in files.passwd.read_text()


def test_unsafe_feed_name_is_refused(world: World) -> None:
    # Feed names are validated on creation; a row written around that must not reach the ACL.
    Feed.update(name="x/#\ntopic readwrite #").where(Feed.name == "manual_feed_aj").execute()
    with pytest.raises(RtdpError, match="cannot be written safely"):
        write_mosquitto_files(world.settings)


def test_reload_of_missing_process_is_not_found() -> None:
    process = subprocess.Popen(["true"])
    process.wait()
    with pytest.raises(NotFound):
        reload_mosquitto(process.pid)


# --- against a real Mosquitto -----------------------------------------------------------------


class Client:
    """A paho client whose connect result and received messages the test can wait for."""

    _ids = itertools.count()

    def __init__(self, broker: Mosquitto, username: str | None, password: str | None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.connack: ReasonCode | None = None
        self.granted: list[int] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-{next(self._ids)}", protocol=mqtt.MQTTv311
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        wait_for(lambda: self.connack is not None, what="CONNACK")

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: ReasonCode, p: object) -> None:
        self.connack = rc
        if rc.is_failure:
            client.disconnect()  # do not retry: the test wants the refusal

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int, codes: list[ReasonCode], p: object
    ) -> None:
        self.granted = [code.value for code in codes]

    @property
    def connected(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def subscribe(self, topic: str) -> int:
        self.granted = []
        self.client.subscribe(topic, qos=1)
        wait_for(lambda: self.granted, what=f"SUBACK for {topic}")
        return self.granted[0]

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait for the PUBACK: Mosquitto has routed (or dropped) it by then."""
        info = self.client.publish(topic, payload, qos=1)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
        info.wait_for_publish(5)
        assert info.is_published()

    def received(self, topic: str, payload: bytes) -> bool:
        with self._lock:
            return (topic, payload) in self.messages

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    try:
        yield made
    finally:
        for client in made:
            client.stop()


@pytest.fixture
def broker(world: World, tmp_path: Path) -> Iterator[Mosquitto]:
    require(MOSQUITTO is not None, "mosquitto is not installed (apt-get install mosquitto)")
    files = write_mosquitto_files(world.settings)
    extra = f"{AS_ROOT}password_file {files.passwd}\nacl_file {files.acl}\n"
    with running_mosquitto(tmp_path / "mosquitto", extra_config=extra, anonymous=False) as running:
        yield running


def connect(made: list[Client], broker: Mosquitto, username: str, password: str) -> Client:
    client = Client(broker, username, password)
    made.append(client)
    return client


class Watch:
    """The service account on feeds/#: what it receives is what Mosquitto let through."""

    def __init__(self, made: list[Client], broker: Mosquitto, world: World) -> None:
        self.service = connect(made, broker, world.service.username, world.service.password)
        assert self.service.subscribe("$share/bridges/feeds/#") == 1
        self._probes = itertools.count()

    def dropped(self, publisher: Client, topic: str) -> bool:
        """Publish from `publisher`, then a marker from the service: once the marker arrives, an allowed
        message would have arrived too (Mosquitto routed it before its PUBACK, the marker after)."""
        n = next(self._probes)
        payload = f"probe-{n}".encode()  # unique: an earlier probe on the same topic must not count
        publisher.publish(topic, payload)
        marker = f"marker-{n}".encode()
        self.service.publish("feeds/_marker/m", marker)
        wait_for(lambda: self.service.received("feeds/_marker/m", marker), what="marker")
        return not self.service.received(topic, payload)


@pytest.mark.mosquitto
def test_service_account_everywhere(world: World, broker: Mosquitto) -> None:
    with clients() as made:
        watch = Watch(made, broker, world)
        reader = connect(made, broker, user_of(world, "cz"), world.tokens["cz"])
        assert reader.subscribe("rtdp/stored/manual_feed_a") == 1
        watch.service.publish("rtdp/stored/manual_feed_a", b"[1]")
        wait_for(lambda: reader.received("rtdp/stored/manual_feed_a", b"[1]"), what="stored point at reader")
        assert not watch.dropped(watch.service, "feeds/manual_feed_aj/x")


@pytest.mark.mosquitto
def test_token_writes_only_where_allowed(world: World, broker: Mosquitto) -> None:
    with clients() as made:
        watch = Watch(made, broker, world)
        ep = connect(made, broker, user_of(world, "ep"), world.tokens["ep"])
        assert ep.connected
        assert not watch.dropped(ep, "feeds/manual_feed_a/axis_a00")
        assert watch.dropped(ep, "feeds/manual_feed_aj/axis_aj_00")  # ap's feed
        ap = connect(made, broker, user_of(world, "ap"), world.tokens["ap"])
        assert not watch.dropped(ap, "feeds/manual_feed_aj/axis_aj_00")
        assert watch.dropped(ap, "feeds/manual_feed_a/axis_a00")  # ep's feed
        assert watch.dropped(ap, "feeds/public.feed/x")  # public means readable, not writable
        dd = connect(made, broker, user_of(world, "dd"), world.tokens["dd"])
        assert not watch.dropped(dd, "feeds/manual_feed_b/x")  # group write share
        assert watch.dropped(dd, "feeds/manual_feed_a/x")


@pytest.mark.mosquitto
def test_only_the_service_publishes_stored_points(world: World, broker: Mosquitto) -> None:
    with clients() as made:
        service = connect(made, broker, world.service.username, world.service.password)
        assert service.subscribe("rtdp/#") == 1
        ep = connect(made, broker, user_of(world, "ep"), world.tokens["ep"])
        ep.publish("rtdp/stored/manual_feed_a", b"forged")
        service.publish("rtdp/stored/manual_feed_a", b"real")
        wait_for(lambda: service.received("rtdp/stored/manual_feed_a", b"real"), what="real stored message")
        assert not service.received("rtdp/stored/manual_feed_a", b"forged")


@pytest.mark.mosquitto
def test_read_only_and_one_feed_tokens(world: World, broker: Mosquitto) -> None:
    with clients() as made:
        watch = Watch(made, broker, world)
        reader = connect(made, broker, user_of(world, "ep_read"), world.tokens["ep_read"])
        assert watch.dropped(reader, "feeds/manual_feed_a/x")
        assert reader.subscribe("feeds/manual_feed_a/+") == 1
        one = connect(made, broker, user_of(world, "ep_one"), world.tokens["ep_one"])
        assert not watch.dropped(one, "feeds/manual_feed_a/x")
        assert watch.dropped(one, "feeds/manual_feed_b/x")  # ep owns b, but the token is limited to a
        wait_for(lambda: any(t == "feeds/manual_feed_a/x" for t, _ in reader.messages), what="reader gets a")
        # Reading is enforced too: a feed the token may not read gets no messages. Mosquitto 2.0.11 grants
        # the subscription (with an ACL file it checks `read` per message delivered), newer ones may refuse it.
        assert one.subscribe("feeds/manual_feed_b/+") in (1, 0x80)
        assert one.subscribe("feeds/manual_feed_a/+") == 1
        cz = connect(made, broker, user_of(world, "cz"), world.tokens["cz"])
        assert watch.dropped(cz, "feeds/manual_feed_a/x")  # a read share does not write
        watch.service.publish("feeds/manual_feed_b/y", b"private")
        watch.service.publish("feeds/manual_feed_a/y", b"after")
        # Same socket, same order: once `one` has "after", it would have had "private" before it.
        wait_for(lambda: one.received("feeds/manual_feed_a/y", b"after"), what="after")
        assert not one.received("feeds/manual_feed_b/y", b"private")


@pytest.mark.mosquitto
def test_refused_connections(world: World, broker: Mosquitto) -> None:
    with clients() as made:
        revoked = connect(made, broker, user_of(world, "revoked"), world.tokens["revoked"])
        inactive = connect(made, broker, user_of(world, "inactive"), world.tokens["inactive"])
        token = world.tokens["ep"]
        wrong_token = token[:-1] + ("B" if token[-1] != "B" else "C")  # a fixed letter would match 1 in 16
        wrong = connect(made, broker, user_of(world, "ep"), wrong_token)
        swapped = connect(made, broker, user_of(world, "ap"), world.tokens["ep"])  # right token, wrong name
        email = connect(made, broker, "ep@nothing.com", "1234")  # passwords are not exported
        for name, client in zip(
            "revoked inactive wrong swapped email".split(), (revoked, inactive, wrong, swapped, email), strict=True
        ):
            assert not client.connected, (name, client.connack)


@pytest.mark.mosquitto
def test_reload_picks_up_a_new_token(world: World, broker: Mosquitto) -> None:
    user = User.get(User.email == "ap@nothing.com")
    fresh = create_token(user)
    with clients() as made:
        assert not connect(made, broker, fresh.token[:12], fresh.token).connected
        write_mosquitto_files(world.settings)
        reload_mosquitto(broker.process.pid)

        def accepted() -> bool:
            client = connect(made, broker, fresh.token[:12], fresh.token)
            return client.connected

        wait_for(accepted, what="the new token to be accepted after SIGHUP")


@pytest.mark.mosquitto
def test_repository_mosquitto_conf_runs(world: World, tmp_path: Path) -> None:
    """The repo's mosquitto.conf, unchanged except for its port, run from a directory laid out like the repo."""
    require(MOSQUITTO is not None, "mosquitto is not installed (apt-get install mosquitto)")
    assert MOSQUITTO is not None
    root = tmp_path / "root"
    root.mkdir()
    settings = Settings.build(env={}, data_dir=root / "rtdp-data")
    # The same service account as the world's, so its credentials are the ones we know.
    (root / "rtdp-data").mkdir()
    shutil.copy(world.settings.data_dir / "service-account.json", root / "rtdp-data" / "service-account.json")
    write_mosquitto_files(settings)
    port = free_port()
    text, count = re.subn(
        r"(?m)^listener 1883 127\.0\.0\.1$", f"listener {port} 127.0.0.1", (REPO / "mosquitto.conf").read_text()
    )
    assert count == 1
    config = root / "mosquitto.conf"
    config.write_text(text + AS_ROOT)
    with (root / "mosquitto.log").open("wb") as log:
        process = subprocess.Popen([MOSQUITTO, "-c", str(config)], cwd=root, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_port("127.0.0.1", port)
            running = Mosquitto("127.0.0.1", port, process, config)
            with clients() as made:
                watch = Watch(made, running, world)
                ep = connect(made, running, user_of(world, "ep"), world.tokens["ep"])
                assert not watch.dropped(ep, "feeds/manual_feed_a/x")
                assert watch.dropped(ep, "feeds/manual_feed_aj/x")
                anonymous = Client(running, None, None)
                made.append(anonymous)
                assert not anonymous.connected
        finally:
            process.terminate()
            process.wait(10)
    log_text = (root / "mosquitto.log").read_text()
    assert "Error" not in log_text, log_text
    # persistence on, in rtdp-data/mosquitto/: a clean stop saves the store there.
    assert (root / "rtdp-data" / "mosquitto" / "mosquitto.db").exists(), log_text
    assert json.loads((root / "rtdp-data" / "service-account.json").read_text())["username"] == world.service.username

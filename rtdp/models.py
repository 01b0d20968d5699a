"""Peewee models for the whole data model. The database is bound later (see rtdp.database)."""

from __future__ import annotations

import time

import peewee as pw

database_proxy = pw.DatabaseProxy()


def _now() -> float:
    return time.time()


class MonotonicIdField(pw.BigAutoField):
    """An auto id that never reuses a value, even after the highest row is deleted (how: the dialect's
    `autoincrement`)."""

    def ddl(self, ctx):  # type: ignore[no-untyped-def]
        # Imported here: the store's modules import these models.
        from rtdp.store.dialect import dialect_of

        return dialect_of(database_proxy).autoincrement(super().ddl(ctx))


# The largest id any row can have (64-bit keys on SQLite and PostgreSQL): a larger number from outside
# matches nothing, and SQLite would raise OverflowError on it.
MAX_ID = 2**63 - 1


class BaseModel(pw.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class User(BaseModel):
    id = pw.AutoField()
    # Stored lower-cased: uniqueness and look-ups are case-insensitive on every database.
    email = pw.CharField(max_length=254, unique=True)
    display_name = pw.CharField(max_length=100, default="")
    password_hash = pw.CharField(max_length=255)
    is_admin = pw.BooleanField(default=False)
    is_active = pw.BooleanField(default=True)
    # Bumped on password change so signed sessions issued before it stop working.
    session_version = pw.IntegerField(default=0)
    created = pw.DoubleField(default=_now)


class Group(BaseModel):
    id = pw.AutoField()
    name = pw.CharField(max_length=64, unique=True)
    description = pw.TextField(default="")


class Membership(BaseModel):
    id = pw.AutoField()
    user = pw.ForeignKeyField(User, backref="memberships", on_delete="CASCADE")
    group = pw.ForeignKeyField(Group, backref="memberships", on_delete="CASCADE")
    # The id attributes Peewee adds for foreign keys, declared for type checkers.
    user_id: int
    group_id: int

    class Meta:
        indexes = ((("user", "group"), True),)


class Feed(BaseModel):
    id = pw.AutoField()
    name = pw.CharField(max_length=64, unique=True)
    owner = pw.ForeignKeyField(User, backref="feeds", on_delete="CASCADE")
    owner_id: int
    x_cast = pw.CharField(max_length=16, default="datetime")
    y_cast = pw.CharField(max_length=16, default="float")
    description = pw.TextField(default="")
    public = pw.BooleanField(default=False)
    retention_days = pw.FloatField(null=True)
    retention_points = pw.IntegerField(null=True)
    created = pw.DoubleField(default=_now)


class Share(BaseModel):
    id = pw.AutoField()
    feed = pw.ForeignKeyField(Feed, backref="shares", on_delete="CASCADE")
    user = pw.ForeignKeyField(User, null=True, backref="shares", on_delete="CASCADE")
    group = pw.ForeignKeyField(Group, null=True, backref="shares", on_delete="CASCADE")
    feed_id: int
    user_id: int | None
    group_id: int | None
    access = pw.CharField(max_length=8)  # "read" or "write"

    class Meta:
        constraints = [pw.SQL("CHECK ((user_id IS NULL) <> (group_id IS NULL))")]
        indexes = ((("feed", "user", "group"), True),)


class Axis(BaseModel):
    id = pw.AutoField()
    feed = pw.ForeignKeyField(Feed, backref="axes", on_delete="CASCADE")
    feed_id: int
    name = pw.CharField(max_length=64)
    created = pw.DoubleField(default=_now)
    # Kept current by the bridge so lists never count millions of rows.
    last_x = pw.DoubleField(null=True)
    last_y = pw.DoubleField(null=True)
    last_seen = pw.DoubleField(null=True)
    point_count = pw.BigIntegerField(default=0)
    # The finest level of the axis's rows in Summary: None until it has enough points, 127 for never
    # (rtdp.store.summary).
    summary_level = pw.SmallIntegerField(null=True)
    # What the numbers are in ("°C", "%", "B/s") and a display name for pages ("Kitchen"); both optional.
    unit = pw.CharField(max_length=32, null=True)
    label = pw.CharField(max_length=64, null=True)

    class Meta:
        indexes = ((("feed", "name"), True),)


class Point(BaseModel):
    # Monotonic: it is the SSE event id. A replaced point (same axis and x) gets a new id.
    id = MonotonicIdField()
    axis = pw.ForeignKeyField(Axis, backref="points", on_delete="CASCADE", index=False)
    axis_id: int
    x = pw.DoubleField()
    y = pw.DoubleField()
    received_at = pw.DoubleField(default=_now)

    class Meta:
        # Only (axis, x): a covering (axis, x, y) index made downsampling's scans a third faster but
        # every insert ~12% slower; downsampling now reads per-block summaries (rtdp.store.summary).
        indexes = ((("axis", "x"), True),)


class Summary(BaseModel):
    """Per block of x (16**level wide): how many points an axis has there, and the lowest and the
    highest of them. Kept exact by rtdp.store.write and rtdp.retention; read by downsampling (rtdp.store.summary)."""

    axis = pw.ForeignKeyField(Axis, on_delete="CASCADE", index=False)
    axis_id: int
    level = pw.SmallIntegerField()
    block = pw.BigIntegerField()
    points = pw.BigIntegerField()
    min_id = pw.BigIntegerField()
    min_x = pw.DoubleField()
    min_y = pw.DoubleField()
    max_id = pw.BigIntegerField()
    max_x = pw.DoubleField()
    max_y = pw.DoubleField()

    class Meta:
        table_name = "point_summary"
        primary_key = pw.CompositeKey("axis", "level", "block")


class Token(BaseModel):
    id = pw.AutoField()
    user = pw.ForeignKeyField(User, backref="tokens", on_delete="CASCADE")
    user_id: int
    name = pw.CharField(max_length=100, default="")
    # SHA-256 of the token: tokens are 256-bit random, so a fast hash is safe and allows indexed look-up.
    token_hash = pw.CharField(max_length=64, unique=True)
    prefix = pw.CharField(max_length=16)
    feed = pw.ForeignKeyField(Feed, null=True, backref="tokens", on_delete="CASCADE")
    feed_id: int | None
    access = pw.CharField(max_length=8, null=True)  # None (both), "read" or "write"
    created = pw.DoubleField(default=_now)
    # When and from where the token was last used, written at most once a minute (rtdp.accounts).
    last_used = pw.DoubleField(null=True)
    last_address = pw.CharField(max_length=64, null=True)
    # After this time (epoch seconds) the token no longer works; None: never expires.
    expires = pw.DoubleField(null=True)
    revoked = pw.BooleanField(default=False)
    # The token in Mosquitto's password-file format (PBKDF2-SHA512), for `rtdp mosquitto-files`:
    # only the plaintext can produce it and we keep no plaintext. None for tokens made before it existed.
    broker_hash = pw.CharField(max_length=255, null=True)


class BrowserSession(BaseModel):
    """A browser sign-in. The cookie carries a random key, the database its SHA-256: deleting the row
    (sign-out, password change) ends the session at once, whatever the signed cookie still says."""

    key_hash = pw.CharField(max_length=64, primary_key=True)
    user = pw.ForeignKeyField(User, backref="browser_sessions", on_delete="CASCADE")
    user_id: int
    created = pw.DoubleField(default=_now, index=True)


class RightsRevision(BaseModel):
    """One row: a number bumped by every change to who may do what (shares, groups, public, owner, users),
    so that every process's cached permission decisions can see cheaply that they are stale (rtdp.revision)."""

    id = pw.IntegerField(primary_key=True)
    value = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "rights_revision"


class FeedHead(BaseModel):
    """Per feed, the id of its newest committed point, moved by every write of its points under the
    feed's write lock (rtdp.store.write). Each stored notice says which head it follows, so a viewer
    hearing notices of several bridges out of order sees a missing batch and waits for it (viewer/order.py)."""

    feed = pw.ForeignKeyField(Feed, primary_key=True, on_delete="CASCADE")
    feed_id: int
    last_id = pw.BigIntegerField()

    class Meta:
        table_name = "feed_head"


class EmulatorState(BaseModel):
    source = pw.CharField(max_length=64, primary_key=True)
    enabled = pw.BooleanField(default=False)
    state = pw.TextField(default="{}")
    updated = pw.DoubleField(default=_now)


class Rejection(BaseModel):
    """Recent rejected messages per axis, for the dashboard; purged by the bridge."""

    id = pw.AutoField()
    feed = pw.CharField(max_length=64)
    axis = pw.CharField(max_length=64)
    reason = pw.TextField()
    at = pw.DoubleField(default=_now, index=True)


class PurgeLog(BaseModel):
    """What each retention purge removed per axis, for the dashboard; the newest rows are kept (rtdp.retention)."""

    id = pw.AutoField()
    # Names, not foreign keys: the record outlives a deleted feed, like Rejection's.
    feed = pw.CharField(max_length=64)
    axis = pw.CharField(max_length=64)
    removed = pw.BigIntegerField()
    at = pw.DoubleField(default=_now, index=True)


class AlertRule(BaseModel):
    """A rule on one axis (rtdp.alerts) and its state, judged where points are committed (rtdp.alerting)."""

    id = pw.AutoField()
    feed = pw.ForeignKeyField(Feed, backref="alert_rules", on_delete="CASCADE")
    feed_id: int
    axis = pw.ForeignKeyField(Axis, backref="alert_rules", on_delete="CASCADE")
    axis_id: int
    # Who made it: the owner topic of an mqtt action is published as them.
    owner = pw.ForeignKeyField(User, backref="alert_rules", on_delete="CASCADE")
    owner_id: int
    name = pw.CharField(max_length=100)
    kind = pw.CharField(max_length=16)  # above, below, changes, silent
    threshold = pw.DoubleField(null=True)
    hysteresis = pw.DoubleField(default=0.0)
    for_s = pw.DoubleField(default=0.0)
    value = pw.DoubleField(null=True)  # changes: only to this value
    silent_s = pw.DoubleField(null=True)
    severity = pw.CharField(max_length=16, default="warning")
    enabled = pw.BooleanField(default=True)
    repeat_min = pw.DoubleField(null=True)
    actions = pw.TextField(default="[]")  # JSON list
    secret = pw.CharField(max_length=64)  # signs webhook bodies (X-Rtdp-Signature)
    created = pw.DoubleField(default=_now)
    # The state, changed only in the transaction of the point (or silence) that caused it.
    state = pw.CharField(max_length=8, default="ok")
    since = pw.DoubleField(null=True)
    pending_since = pw.DoubleField(null=True)  # the condition holds since, for for_s
    last_y = pw.DoubleField(null=True)
    notified = pw.DoubleField(null=True)  # when its actions last ran (repeat_min)
    last_result = pw.TextField(default="")  # the last webhook's outcome


class AlertEvent(BaseModel):
    """A transition of a rule, with the point that caused it (none for silence)."""

    id = pw.AutoField()
    rule = pw.ForeignKeyField(AlertRule, backref="events", on_delete="CASCADE")
    rule_id: int
    state = pw.CharField(max_length=8)  # firing, ok, changed
    at = pw.DoubleField(default=_now, index=True)
    point_id = pw.BigIntegerField(null=True)
    x = pw.DoubleField(null=True)
    y = pw.DoubleField(null=True)
    acknowledged = pw.BooleanField(default=False)
    acknowledged_by = pw.CharField(max_length=254, null=True)


class AlertLease(BaseModel):
    """Which process judges time-based rules (silence, for_s, repeats) now: one at a time (rtdp.alerting)."""

    name = pw.CharField(max_length=32, primary_key=True)
    holder = pw.CharField(max_length=128)
    expires = pw.DoubleField()


class Dashboard(BaseModel):
    """A page of widgets over any feeds (rtdp.dashboards owns its rules). The id is random, so a public
    dashboard is reachable only by whoever has its link."""

    id = pw.CharField(max_length=32, primary_key=True)
    owner = pw.ForeignKeyField(User, backref="dashboards", on_delete="CASCADE")
    owner_id: int
    name = pw.CharField(max_length=100)
    # The widgets as JSON (validated by rtdp.dashboards before it is stored).
    widgets = pw.TextField(default="[]")
    # The time range every widget shows, in seconds before now.
    range = pw.IntegerField(default=3600)
    public = pw.BooleanField(default=False)
    created = pw.DoubleField(default=_now)
    updated = pw.DoubleField(default=_now)


class DashboardShare(BaseModel):
    """A dashboard shared read-only with a user or a group."""

    id = pw.AutoField()
    dashboard = pw.ForeignKeyField(Dashboard, backref="shares", on_delete="CASCADE")
    user = pw.ForeignKeyField(User, null=True, backref="dashboard_shares", on_delete="CASCADE")
    group = pw.ForeignKeyField(Group, null=True, backref="dashboard_shares", on_delete="CASCADE")
    dashboard_id: str
    user_id: int | None
    group_id: int | None

    class Meta:
        table_name = "dashboard_share"
        constraints = [pw.SQL("CHECK ((user_id IS NULL) <> (group_id IS NULL))")]
        indexes = ((("dashboard", "user", "group"), True),)


class BrokerSession(BaseModel):
    """A persistent MQTT session (clean session 0) of the embedded broker, kept across restarts
    (broker.persistence): its id (the client's id within its rights, `broker.access.session_id`) and who it
    authenticated as, read again (revocation) before its first decision after a restart."""

    client_id = pw.TextField(primary_key=True)
    user_id = pw.IntegerField(null=True)  # not a foreign key: the service account has no user row
    token_id = pw.IntegerField(null=True)
    password_version = pw.IntegerField(null=True)
    service = pw.BooleanField(default=False)
    # When its client last disconnected (epoch seconds; expiry counts from here), None while connected.
    disconnected = pw.DoubleField(null=True)
    # Messages queued for it through their audience (`BrokerMessage.audience`) count from this id on: below
    # it they were delivered, dropped from its full queue, or saved for it as `BrokerQueued` rows.
    floor = pw.BigIntegerField(default=0)

    class Meta:
        table_name = "broker_session"


class BrokerSubscription(BaseModel):
    session = pw.ForeignKeyField(BrokerSession, on_delete="CASCADE", index=False)
    session_id: str
    topic_filter = pw.TextField()
    qos = pw.SmallIntegerField()

    class Meta:
        table_name = "broker_subscription"
        primary_key = pw.CompositeKey("session", "topic_filter")


class BrokerAudience(BaseModel):
    """The sessions a message was queued for while they were offline (client ids, one a line): one row
    for the many messages a fan-out sends to the same sessions."""

    id = pw.BigIntegerField(primary_key=True)
    members = pw.TextField()

    class Meta:
        table_name = "broker_audience"


class BrokerMessage(BaseModel):
    """A QoS 1 or 2 message waiting for one or more persistent sessions, saved once however many wait for
    it: those of its `audience` whose floor (`BrokerSession.floor`) is not above its id, and those with a
    `BrokerQueued` row for it. Removed once nobody waits for it. The id is given by the broker
    (broker.persistence) and orders each session's queue."""

    id = pw.BigIntegerField(primary_key=True)
    topic = pw.TextField()
    payload = pw.BlobField()
    qos = pw.SmallIntegerField()
    audience = pw.BigIntegerField(null=True, index=True)  # a BrokerAudience id (not a key: swept apart)

    class Meta:
        table_name = "broker_message"


class BrokerQueued(BaseModel):
    """A message (`BrokerMessage`) waiting for one persistent session: queued while it was offline
    (`packet_id` None), or sent to it with `packet_id` and not acknowledged (`released`: a QoS 2 one whose
    PUBREC came, so that PUBREL, not the message, is sent again)."""

    session = pw.ForeignKeyField(BrokerSession, on_delete="CASCADE", index=False)
    session_id: str
    message = pw.ForeignKeyField(BrokerMessage, on_delete="CASCADE")
    message_id: int
    packet_id = pw.IntegerField(null=True)
    released = pw.BooleanField(default=False)

    class Meta:
        table_name = "broker_pending"
        primary_key = pw.CompositeKey("session", "message")


class BrokerReceived(BaseModel):
    """A QoS 2 publish a persistent session's client sent, delivered and answered with PUBREC, whose PUBREL
    has not come yet: a resend of its packet id is not delivered again, its PUBREL gets a PUBCOMP."""

    session = pw.ForeignKeyField(BrokerSession, on_delete="CASCADE", index=False)
    session_id: str
    packet_id = pw.IntegerField()

    class Meta:
        table_name = "broker_received"
        primary_key = pw.CompositeKey("session", "packet_id")


class RetainedMessage(BaseModel):
    """The embedded broker's retained message per topic. One on a feed's topics belongs to that feed by
    id and goes with it (cascade); `feed` is None for a topic outside every feed."""

    topic = pw.TextField(primary_key=True)
    feed = pw.ForeignKeyField(Feed, null=True, on_delete="CASCADE")
    feed_id: int | None
    payload = pw.BlobField()
    qos = pw.SmallIntegerField(null=True)

    class Meta:
        table_name = "retained_message"


BROKER_MODELS: list[type[BaseModel]] = [
    BrokerSession, BrokerSubscription, BrokerAudience, BrokerMessage, BrokerQueued, BrokerReceived, RetainedMessage
]

ALL_MODELS: list[type[BaseModel]] = [
    User, Group, Membership, Feed, Share, Axis, Point, Summary, Token, EmulatorState, Rejection, PurgeLog,
    BrowserSession, RightsRevision, AlertRule, AlertEvent, AlertLease, FeedHead, Dashboard, DashboardShare,
    *BROKER_MODELS,
]

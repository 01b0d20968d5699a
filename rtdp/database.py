"""Opening the database: SQLite (WAL) by default, PostgreSQL by URL (the URL chooses the
rtdp.store.dialect); schema created on first start.

Migrations: the schema version lives in `schema_version`. Version 1 is `create_tables`. A later
change adds a numbered step to `MIGRATIONS` (a function using `playhouse.migrate`), applied in order
inside a transaction on start; each step is written to run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import peewee as pw
from playhouse.migrate import SchemaMigrator
from playhouse.migrate import migrate as run_migrations

from rtdp.errors import ConfigError
from rtdp.models import (
    ALL_MODELS,
    BROKER_MODELS,
    AlertEvent,
    AlertLease,
    AlertRule,
    Axis,
    BrokerAudience,
    BrokerMessage,
    BrokerQueued,
    BrokerReceived,
    BrowserSession,
    Dashboard,
    DashboardShare,
    FeedHead,
    PurgeLog,
    RightsRevision,
    Summary,
    database_proxy,
)
from rtdp.store import summary
from rtdp.store.dialect import dialect_of, open_url, redact

Migration = Callable[[pw.Database], None]


def _add_token_broker_hash(db: pw.Database) -> None:
    # Token.broker_hash (Mosquitto password-file hash); existing tokens keep NULL and must be reissued
    # to work on an external Mosquitto.
    migrator = SchemaMigrator.from_database(db)
    run_migrations(migrator.add_column("token", "broker_hash", pw.CharField(max_length=255, null=True)))


def _index_point_axis_x_y(db: pw.Database) -> None:
    # The covering (axis, x, y) index that downsampling in rtdp.store.read instead of the rows.
    db.execute_sql("CREATE INDEX IF NOT EXISTS point_axis_id_x_y ON point (axis_id, x, y)")  # type: ignore[no-untyped-call]


def _create_purge_log(db: pw.Database) -> None:
    # PurgeLog: what the retention purge removed per axis (rtdp.retention).
    db.create_tables([PurgeLog], safe=True)


def _create_point_summary(db: pw.Database) -> None:
    # Per-block summaries for downsampling (rtdp.store.summary). Axes that already hold enough points are
    # summarised now, once, so that no writer has to do it in the middle of a batch.
    if "summary_level" not in {c.name for c in db.get_columns("axis")}:
        migrator = SchemaMigrator.from_database(db)
        run_migrations(migrator.add_column("axis", "summary_level", pw.SmallIntegerField(null=True)))
    db.create_tables([Summary], safe=True)
    due: Any = Axis.select(Axis.id, Axis.point_count).where(
        Axis.summary_level.is_null() & (Axis.point_count >= summary.PLAN_AT)
    )
    for axis_id, count in due.tuples():
        summary.plan(db, axis_id, count)


def _drop_point_axis_x_y(db: pw.Database) -> None:
    # Downsampling reads the summaries now; the covering index only slowed every insert.
    db.execute_sql("DROP INDEX IF EXISTS point_axis_id_x_y")  # type: ignore[no-untyped-call]


def _create_browser_session(db: pw.Database) -> None:
    # BrowserSession: sign-ins the server can end (sign-out, password change); older cookies sign in again.
    db.create_tables([BrowserSession], safe=True)


def _create_rights_revision(db: pw.Database) -> None:
    # RightsRevision: bumped by every change to shares, groups, users and feed owners (rtdp.revision).
    db.create_tables([RightsRevision], safe=True)


def _add_token_address_and_expiry(db: pw.Database) -> None:
    # Token.last_address (shown on the Account page) and Token.expires (optional expiry).
    migrator = SchemaMigrator.from_database(db)
    present = {c.name for c in db.get_columns("token")}
    if "last_address" not in present:
        run_migrations(migrator.add_column("token", "last_address", pw.CharField(max_length=64, null=True)))
    if "expires" not in present:
        run_migrations(migrator.add_column("token", "expires", pw.DoubleField(null=True)))


def _add_axis_unit_and_label(db: pw.Database) -> None:
    # Axis.unit and Axis.label: shown by the charts (one y scale per unit) and every page.
    migrator = SchemaMigrator.from_database(db)
    present = {c.name for c in db.get_columns("axis")}
    if "unit" not in present:
        run_migrations(migrator.add_column("axis", "unit", pw.CharField(max_length=32, null=True)))
    if "label" not in present:
        run_migrations(migrator.add_column("axis", "label", pw.CharField(max_length=64, null=True)))


def _create_alerts(db: pw.Database) -> None:
    # Alert rules, their events and the lease on time-based rules (rtdp.alerts, rtdp.alerting).
    db.create_tables([AlertRule, AlertEvent, AlertLease], safe=True)


def _create_feed_head(db: pw.Database) -> None:
    # FeedHead: each feed's newest committed point id; stored notices name the head they follow. Feeds
    # get their row on their next write (until then their notices say they follow an unknown head).
    db.create_tables([FeedHead], safe=True)


def _create_dashboards(db: pw.Database) -> None:
    # Dashboard and DashboardShare (rtdp.dashboards).
    db.create_tables([Dashboard, DashboardShare], safe=True)


def _create_broker_state(db: pw.Database) -> None:
    # The embedded broker's persistent sessions and retained messages (broker.persistence).
    db.create_tables(BROKER_MODELS, safe=True)


def _share_broker_messages(db: pw.Database) -> None:
    # A message queued for many persistent sessions is saved once (broker_message) for its audience (the
    # sessions it was queued for, broker_audience; each session's floor says which it still waits for),
    # instead of a whole copy each (broker_queued); messages sent and not acknowledged get a row per
    # session (broker_pending), QoS 2 publishes waiting for their PUBREL broker_received.
    db.create_tables([BrokerAudience, BrokerMessage, BrokerQueued, BrokerReceived], safe=True)
    if "floor" not in {c.name for c in db.get_columns("broker_session")}:
        migrator = SchemaMigrator.from_database(db)
        run_migrations(migrator.add_column("broker_session", "floor", pw.BigIntegerField(default=0)))
    if "broker_queued" in db.get_tables():
        db.execute_sql(
            "INSERT INTO broker_message (id, topic, payload, qos) SELECT id, topic, payload, qos FROM broker_queued"
        )  # type: ignore[no-untyped-call]
        db.execute_sql(
            "INSERT INTO broker_pending (session_id, message_id, released)"
            " SELECT session_id, id, FALSE FROM broker_queued"
        )  # type: ignore[no-untyped-call]
        db.execute_sql("DROP TABLE broker_queued")  # type: ignore[no-untyped-call]


MIGRATIONS: list[Migration] = [
    _add_token_broker_hash,
    _index_point_axis_x_y,
    _create_purge_log,
    _create_point_summary,
    _drop_point_axis_x_y,
    _create_browser_session,
    _create_rights_revision,
    _add_token_address_and_expiry,
    _add_axis_unit_and_label,
    _create_alerts,
    _create_feed_head,
    _create_dashboards,
    _create_broker_state,
    _share_broker_messages,
]  # step i brings version i+1 to i+2
SCHEMA_VERSION = 1 + len(MIGRATIONS)


class SchemaVersion(pw.Model):
    version = pw.IntegerField()

    class Meta:
        database = database_proxy
        table_name = "schema_version"


def open_database(url: str, *, create: bool = True, synchronous: str = "normal") -> pw.Database:
    """Open `url`, bind the models to it and bring the schema up to date. `synchronous` is SQLite's
    pragma (`normal` or `full`, settings.sqlite_synchronous); PostgreSQL always syncs its commits."""
    db = open_url(url, synchronous=synchronous)
    database_proxy.initialize(db)
    try:
        _connect(db)
        if create:
            migrate(db)
    except pw.DatabaseError as exc:  # also "file is not a database"
        db.close()
        raise ConfigError(f"--db: cannot open {redact(url)}: {str(exc).strip()}") from None
    return db


def _connect(db: pw.Database, patience: float = 5.0) -> None:
    """Connect, waiting while another process holds a brand-new SQLite file's lock.

    Switching a new file to WAL (a pragma, run on connect) answers "database is locked" at once,
    without SQLite's busy handler, when a second process opens the file at the same moment.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            db.connect(reuse_if_open=True)
            return
        except pw.OperationalError as exc:
            if not dialect_of(db).locked(exc) or time.monotonic() > deadline:
                raise
            if not db.is_closed():
                db.close()
            time.sleep(0.02)


def migrate(db: pw.Database) -> None:
    """Create the schema on first start, or bring it up to date: once, even when processes race."""
    # A racing process waits here instead of failing to upgrade its read transaction.
    dialect = dialect_of(db)
    with dialect.write_transaction(db):
        dialect.serialise_migrations(db)
        db.create_tables([SchemaVersion], safe=True)
        row = SchemaVersion.select().first()
        if row is None:
            db.create_tables(ALL_MODELS, safe=True)
            SchemaVersion.create(version=SCHEMA_VERSION)
            return
        if row.version > SCHEMA_VERSION:
            raise ConfigError(
                f"--db: schema version {row.version} is newer than this rtdp ({SCHEMA_VERSION}); upgrade rtdp"
            )
        for step in MIGRATIONS[row.version - 1 :]:
            step(db)
        SchemaVersion.update(version=SCHEMA_VERSION).execute()

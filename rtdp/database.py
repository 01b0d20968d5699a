"""Opening the database: SQLite (WAL) by default, PostgreSQL by URL; schema created on first start.

Migrations: the schema version lives in `schema_version`. Version 1 is `create_tables`. A later
change adds a numbered step to `MIGRATIONS` (a function using `playhouse.migrate`), applied in order
inside a transaction on start; each step is written to run on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import peewee as pw
from playhouse.db_url import connect
from playhouse.migrate import SchemaMigrator
from playhouse.migrate import migrate as run_migrations

from rtdp.errors import ConfigError
from rtdp.models import ALL_MODELS, database_proxy

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    # NORMAL is durable across application crashes in WAL mode (only an OS crash can lose the tail).
    "synchronous": "normal",
    "foreign_keys": 1,
    "busy_timeout": 5000,
    "cache_size": -32000,
}

Migration = Callable[[pw.Database], None]


def _add_token_broker_hash(db: pw.Database) -> None:
    # Token.broker_hash (Mosquitto password-file hash); existing tokens keep NULL and must be reissued
    # to work on an external Mosquitto.
    migrator = SchemaMigrator.from_database(db)
    run_migrations(migrator.add_column("token", "broker_hash", pw.CharField(max_length=255, null=True)))


def _index_point_axis_x_y(db: pw.Database) -> None:
    # The covering (axis, x, y) index that downsampling in rtdp.store reads instead of the rows.
    db.execute_sql("CREATE INDEX IF NOT EXISTS point_axis_id_x_y ON point (axis_id, x, y)")


MIGRATIONS: list[Migration] = [_add_token_broker_hash, _index_point_axis_x_y]  # step i brings version i+1 to i+2
SCHEMA_VERSION = 1 + len(MIGRATIONS)


class SchemaVersion(pw.Model):
    version = pw.IntegerField()

    class Meta:
        database = database_proxy
        table_name = "schema_version"


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def open_database(url: str, *, create: bool = True) -> pw.Database:
    """Open `url`, bind the models to it and bring the schema up to date."""
    scheme = urlsplit(url).scheme
    if scheme in ("sqlite", ""):
        path = url.split("sqlite:///", 1)[1] if url.startswith("sqlite:///") else url
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db: pw.Database = pw.SqliteDatabase(path, pragmas=SQLITE_PRAGMAS, timeout=5)
    elif scheme in ("postgres", "postgresql", "postgresext"):
        try:
            db = connect(url, autorollback=True)
        except (ImportError, RuntimeError) as exc:
            raise ConfigError(f"--db: PostgreSQL needs psycopg2 (pip install rtdp[postgres]): {exc}") from None
    else:
        raise ConfigError(f"--db: unsupported database URL {redact(url)!r} (use sqlite:/// or postgresql://)")
    database_proxy.initialize(db)
    try:
        db.connect(reuse_if_open=True)
    except pw.OperationalError as exc:
        raise ConfigError(f"--db: cannot open {redact(url)}: {exc}") from None
    if create:
        migrate(db)
    return db


def migrate(db: pw.Database) -> None:
    with db.atomic():
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

from __future__ import annotations

import ast
import multiprocessing
import multiprocessing.synchronize
from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest

from rtdp import database
from rtdp.codec import Sample
from rtdp.database import SCHEMA_VERSION, SchemaVersion, open_database, redact
from rtdp.errors import ConfigError
from rtdp.models import ALL_MODELS, Axis, Point, Summary, User
from rtdp.store import create_axis, create_feed, summary, write_points
from tests.support import postgres
from tests.support.env import require


def test_schema_created_once_and_version_recorded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'rtdp.sqlite3'}"
    db = open_database(url)
    assert set(db.get_tables()) >= {m._meta.table_name for m in ALL_MODELS} | {"schema_version"}
    assert [r.version for r in SchemaVersion.select()] == [SCHEMA_VERSION]
    User.create(email="a@b.c", password_hash="x")
    db.close()
    db = open_database(url)  # reopening keeps the data and records the version once
    assert [r.version for r in SchemaVersion.select()] == [SCHEMA_VERSION]
    assert User.select().count() == 1
    assert "point_axis_id_x_y" not in {i.name for i in db.get_indexes("point")}
    db.close()


def test_sqlite_pragmas(sqlite_db: pw.Database) -> None:
    assert sqlite_db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert sqlite_db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    assert sqlite_db.execute_sql("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_sqlite_synchronous_full_syncs_every_commit(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'full.sqlite3'}", synchronous="full")
    try:
        assert db.execute_sql("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        db.close()


def test_migrations_bring_an_old_schema_up_to_date(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    db = open_database(url)
    # Make it look like version 2, before the covering point index came and went.
    SchemaVersion.update(version=2).execute()
    db.close()
    db = open_database(url)
    assert "point_axis_id_x_y" not in {i.name for i in db.get_indexes("point")}
    assert [r.version for r in SchemaVersion.select()] == [SCHEMA_VERSION]
    db.close()


def test_migration_summarises_existing_axes(tmp_path: Path) -> None:
    """Version 4 -> 5: the summary table appears, and an axis that already has enough points is
    summarised during the migration, not in the middle of some writer's batch."""
    url = f"sqlite:///{tmp_path / 'v4.sqlite3'}"
    db = open_database(url)
    owner = User.create(email="o@example.com", password_hash="x")
    axis = create_axis(create_feed("f", owner), "a")
    write_points([(axis.id, Sample(float(i), float(i % 13))) for i in range(summary.PLAN_AT + 10)])
    db.execute_sql("DROP TABLE point_summary")
    db.execute_sql("ALTER TABLE axis DROP COLUMN summary_level")
    SchemaVersion.update(version=4).execute()
    db.close()
    db = open_database(url)
    level = Axis.get_by_id(axis.id).summary_level
    assert level is not None and level != summary.OFF
    assert Summary.select().where(Summary.level == level).count() > 0
    assert [r.version for r in SchemaVersion.select()] == [SCHEMA_VERSION]
    db.close()


def test_newer_schema_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.sqlite3'}"
    open_database(url).close()
    db = open_database(url)
    SchemaVersion.update(version=SCHEMA_VERSION + 1).execute()
    db.close()
    with pytest.raises(ConfigError, match="--db: schema version"):
        open_database(url)


@pytest.mark.parametrize(
    "url",
    ["mysql://user@host/db", "http://example.com", "sqlite:///", "sqlite:////proc/no/such/dir/x.sqlite3",
     "postgresql://postgres@127.0.0.1:1/nothing"],
)
def test_bad_url_names_the_option(url: str) -> None:
    with pytest.raises(ConfigError, match="^--db: "):
        open_database(url)


def test_not_a_database_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(ConfigError, match="^--db: cannot open"):
        open_database(f"sqlite:///{path}")


def test_password_is_redacted() -> None:
    assert redact("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    with pytest.raises(ConfigError) as caught:
        open_database("postgresql://u:secret@127.0.0.1:1/db")
    assert "secret" not in str(caught.value)


def _open(url: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    barrier.wait()
    db = open_database(url)
    Point.select().count()
    db.close()


def _race_open(url: str, workers: int = 4) -> None:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(workers)
    processes = [context.Process(target=_open, args=(url, barrier)) for _ in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0] * workers


def test_processes_opening_a_new_sqlite_database_at_once(tmp_path: Path) -> None:
    for round_ in range(3):
        url = f"sqlite:///{tmp_path / f'race{round_}.sqlite3'}"
        _race_open(url)
        db = open_database(url)
        assert [r.version for r in SchemaVersion.select()] == [SCHEMA_VERSION]
        db.close()


@pytest.fixture
def empty_pg() -> Iterator[str]:
    reason = postgres.available()
    require(reason is None, f"PostgreSQL tests skipped: {reason}")
    with postgres.throwaway_database() as url:
        yield url


def test_processes_opening_a_new_postgres_database_at_once(empty_pg: str) -> None:
    _race_open(empty_pg)
    db = open_database(empty_pg)
    assert [r.version for r in SchemaVersion.select()] == [SCHEMA_VERSION]
    db.close()


def test_migration_steps_are_numbered() -> None:
    assert SCHEMA_VERSION == 1 + len(database.MIGRATIONS)


# Where a process is assembled: the one place in each that opens the database and hands it on.
ASSEMBLIES = {
    ("rtdp/cli.py", "_open"),  # the one-shot commands
    ("rtdp/serve.py", "serve"),
    ("bridge/service.py", "run"),
    ("broker/server.py", "run"),
    ("emulator/runner.py", "run"),
    ("viewer/app.py", "lifespan"),  # `rtdp viewer`; `rtdp serve` passes its database in
}
ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("rtdp", "bridge", "broker", "viewer", "emulator")


class _Uses(ast.NodeVisitor):
    """(file, innermost enclosing function) of every use of a name; imports are not uses."""

    def __init__(self, name: str, file: str) -> None:
        self.name, self.file = name, file
        self.functions: list[str] = []
        self.found: set[tuple[str, str]] = set()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == self.name:
            self.found.add((self.file, self.functions[-1] if self.functions else "<module>"))


def _uses(name: str) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            visitor = _Uses(name, str(path.relative_to(ROOT)))
            visitor.visit(ast.parse(path.read_text(), str(path)))
            found |= visitor.found
    return found


def test_the_database_is_opened_only_where_a_process_is_assembled() -> None:
    assert _uses("open_database") == ASSEMBLIES


def test_only_opening_binds_the_models() -> None:
    """Components use the database they are given; only open_database binds the models' proxy."""
    assert {file for file, _ in _uses("database_proxy")} <= {"rtdp/models.py", "rtdp/database.py"}


def test_migration_adds_token_use_and_expiry_and_the_rights_revision(tmp_path: Path) -> None:
    """Versions 7 -> 9: the rights revision table and Token.last_address and .expires appear."""
    url = f"sqlite:///{tmp_path / 'v7.sqlite3'}"
    db = open_database(url)
    db.execute_sql("DROP TABLE rights_revision")
    db.execute_sql("ALTER TABLE token DROP COLUMN last_address")
    db.execute_sql("ALTER TABLE token DROP COLUMN expires")
    SchemaVersion.update(version=7).execute()
    db.close()
    db = open_database(url)
    assert {"last_address", "expires"} <= {c.name for c in db.get_columns("token")}
    assert "rights_revision" in db.get_tables()
    assert [r.version for r in SchemaVersion.select()] == [SCHEMA_VERSION]
    db.close()


def test_migration_adds_axis_unit_and_label(tmp_path: Path) -> None:
    """Version 9 -> 10: Axis.unit and Axis.label appear, empty."""
    url = f"sqlite:///{tmp_path / 'v9.sqlite3'}"
    db = open_database(url)
    db.execute_sql("ALTER TABLE axis DROP COLUMN unit")
    db.execute_sql("ALTER TABLE axis DROP COLUMN label")
    SchemaVersion.update(version=9).execute()
    db.close()
    db = open_database(url)
    assert {"unit", "label"} <= {c.name for c in db.get_columns("axis")}
    assert [r.version for r in SchemaVersion.select()] == [SCHEMA_VERSION]
    db.close()


def test_migration_creates_the_broker_state(tmp_path: Path) -> None:
    """Version 13 -> 14 (after the alerts, the feed heads and the dashboards): the embedded broker's saved
    sessions and retained messages get their tables (broker.persistence)."""
    assert database.MIGRATIONS[-2] is database._create_broker_state
    url = f"sqlite:///{tmp_path / 'v13.sqlite3'}"
    db = open_database(url)
    tables = (
        "broker_pending", "broker_received", "broker_message", "broker_audience", "broker_subscription",
        "broker_session",
    )
    for table in (*tables, "retained_message"):
        db.execute_sql(f"DROP TABLE {table}")
    SchemaVersion.update(version=SCHEMA_VERSION - 2).execute()
    db.close()
    db = open_database(url)
    assert {*tables, "retained_message"} <= set(db.get_tables())
    assert [r.version for r in SchemaVersion.select()] == [SCHEMA_VERSION]
    db.close()


def test_migration_saves_each_queued_message_once(tmp_path: Path) -> None:
    """Version 14 -> 15: the messages queued for offline sessions, a whole copy per session in
    broker_queued, move to broker_message with a row per session waiting in broker_pending; sessions get
    their floor (new messages are queued by audience)."""
    assert database.MIGRATIONS[-1] is database._share_broker_messages
    url = f"sqlite:///{tmp_path / 'v14.sqlite3'}"
    db = open_database(url)
    for table in ("broker_pending", "broker_received", "broker_message", "broker_audience"):
        db.execute_sql(f"DROP TABLE {table}")
    db.execute_sql("ALTER TABLE broker_session DROP COLUMN floor")
    db.execute_sql(
        "CREATE TABLE broker_queued (id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, topic TEXT NOT NULL,"
        " payload BLOB NOT NULL, qos INTEGER NOT NULL)"
    )
    db.execute_sql("INSERT INTO broker_session (client_id, service) VALUES ('u1/a', 0)")
    db.execute_sql("INSERT INTO broker_queued VALUES (7, 'u1/a', 'feeds/f/x', x'31', 1)")
    SchemaVersion.update(version=SCHEMA_VERSION - 1).execute()
    db.close()
    db = open_database(url)
    assert "broker_queued" not in db.get_tables()
    assert db.execute_sql("SELECT id, topic, payload, qos FROM broker_message").fetchall() == [
        (7, "feeds/f/x", b"1", 1)
    ]
    assert db.execute_sql("SELECT session_id, message_id, packet_id FROM broker_pending").fetchall() == [
        ("u1/a", 7, None)
    ]
    assert db.execute_sql("SELECT floor FROM broker_session").fetchall() == [(0,)]
    db.close()



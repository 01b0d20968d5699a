"""The storage dialect: chosen once when the database opens, reached from it, and the only module
that knows which database it is."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import peewee as pw
import pytest

from rtdp.errors import ConfigError
from rtdp.models import database_proxy
from rtdp.store import dialect_of
from rtdp.store.dialect import POSTGRES, SCHEMES, SQLITE, Dialect

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("rtdp", "bridge", "broker", "viewer", "emulator")
# Asking which database it is: Peewee's database classes, or psycopg2/sqlite3 themselves.
ASKING = re.compile(r"SqliteDatabase|PostgresqlDatabase|import sqlite3|import psycopg2|_is_sqlite")


def test_sqlite_database_carries_its_dialect(sqlite_db: pw.Database) -> None:
    assert dialect_of(sqlite_db) is SQLITE
    assert dialect_of(database_proxy) is SQLITE  # the models reach it through their proxy


def test_postgres_database_carries_its_dialect(pg_db: pw.Database) -> None:
    assert dialect_of(pg_db) is POSTGRES
    assert dialect_of(database_proxy) is POSTGRES


def test_a_database_opened_elsewhere_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="open_database"):
        dialect_of(pw.SqliteDatabase(str(tmp_path / "other.sqlite3")))


def test_size_of_each_database(any_db: pw.Database) -> None:
    size = dialect_of(any_db).size(any_db)
    assert size is not None and size > 0


def test_every_scheme_has_a_complete_dialect() -> None:
    # Abstract methods left out would make the dialect impossible to instantiate.
    assert all(isinstance(dialect, Dialect) for dialect in SCHEMES.values())
    assert {SCHEMES["sqlite"], SCHEMES["postgresql"]} == {SQLITE, POSTGRES}


def test_no_module_but_the_dialect_asks_which_database_it_is() -> None:
    asking = {
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if ASKING.search(path.read_text())
    }
    assert asking == {"rtdp/store/dialect.py"}


def test_sqlite_tells_a_lock_held_elsewhere(tmp_path: Path) -> None:
    path = str(tmp_path / "held.sqlite3")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    other = pw.SqliteDatabase(path, timeout=0)
    try:
        with pytest.raises(pw.OperationalError) as caught:
            other.execute_sql("BEGIN IMMEDIATE")
        assert SQLITE.locked(caught.value)
        assert not SQLITE.locked(pw.OperationalError("no such table: nothing"))
    finally:
        other.close()
        holder.close()

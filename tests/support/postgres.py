"""A throwaway PostgreSQL database per test run (the machine's server, trust auth)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

PG_HOST = os.environ.get("RTDP_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("RTDP_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("RTDP_TEST_PG_USER", "postgres")


def available() -> str | None:
    """None if a server answers, else the reason it does not."""
    try:
        import psycopg2
    except ImportError:
        return "psycopg2 is not installed"
    try:
        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3)
    except psycopg2.OperationalError as exc:
        return f"no PostgreSQL at {PG_HOST}:{PG_PORT}: {str(exc).strip()[:120]}"
    conn.close()
    return None


@contextmanager
def throwaway_database() -> Iterator[str]:
    """Create a uniquely named database, yield its URL, drop it (forcibly) afterwards."""
    import psycopg2

    name = f"rtdp_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

"""What differs between the databases rtdp stores in: one `Dialect` per database, chosen once when
the database opens (`open_url`, called by rtdp.database.open_database) and reached from the open
database with `dialect_of(db)`. No other module asks which database it talks to.

SQL that every database runs alike stays with its user (rtdp.store.write, rtdp.store.summary); what
the databases do differently is here: opening a URL, DDL, locks, the shape of batch statements (a
VALUES list on SQLite, arrays for unnest() on PostgreSQL), downsampling from the points, the size.

Adding a database touches this module only: subclass `Dialect`, implement its abstract methods (each
says what it must do), and add its URL schemes to `SCHEMES`.

Synchronous (Peewee): call it from a thread, never from an event loop.
"""

from __future__ import annotations

import abc
import functools
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import peewee as pw
from playhouse.db_url import connect

from rtdp.errors import ConfigError
from rtdp.models import Axis, Point
from rtdp.private import private_dir, private_file

if TYPE_CHECKING:
    from rtdp.store.read import Buckets

# A point row as statements return it: (id, axis_id, x, y), the fields of rtdp.store.StoredPoint.
Row = tuple[int, int, float, float]
# A point to write: (axis_id, x, y).
NewPoint = tuple[int, float, float]

# SQLite allows 32,766 bound parameters per statement; rows have 4 columns.
INSERT_CHUNK = 5000
DELETE_CHUNK = 2000


def execute(db: pw.Database, sql: str, params: Sequence[object]) -> Any:
    """A parameterised statement through Peewee (its connection, transaction and error types)."""
    return db.execute_sql(sql, params)  # type: ignore[no-untyped-call]


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


# The SQL text depends only on the placeholder style and the row count; values are always bound
# parameters. Names come from the model (plain lower-case identifiers, so no quoting is needed).
TABLE = Point._meta.table_name
AXIS, X, Y, RECEIVED, ID = (f.column_name for f in (Point.axis, Point.x, Point.y, Point.received_at, Point.id))
AXIS_TABLE = Axis._meta.table_name
_AXIS_ID, _AXIS_FEED = Axis.id.column_name, Axis.feed.column_name


class Dialect(abc.ABC):
    """One database's way of doing what rtdp.store, rtdp.retention and rtdp.database need."""

    @abc.abstractmethod
    def create(self, url: str, *, synchronous: str = "normal") -> pw.Database:
        """An unconnected Peewee database for `url`; ConfigError (naming --db) when it cannot be.
        `synchronous` is SQLite's pragma (settings.sqlite_synchronous); a database that syncs every
        commit anyway ignores it."""

    @abc.abstractmethod
    def autoincrement(self, node: Any) -> Any:
        """The DDL of an auto id column that must never reuse a value (rtdp.models.MonotonicIdField)."""

    @abc.abstractmethod
    def write_transaction(self, db: pw.Database) -> Any:
        """A transaction that is going to write, started so that it cannot fail half-way because
        another writer committed first."""

    @abc.abstractmethod
    def serialise_migrations(self, db: pw.Database) -> None:
        """Inside write_transaction: make processes starting at once create the schema one by one."""

    @abc.abstractmethod
    def lock_for_write(self, db: pw.Database, rows: Sequence[NewPoint]) -> dict[int, int] | None:
        """Inside write_points' transaction, before its first write of `rows`: make writers of the
        same axes take turns, and writers of the same feed too, so that ids of a feed are committed
        in order (and its FeedHead moves in order). May return the feed id of each axis of `rows`
        when the locking learnt them (else write_points asks, after its first write)."""

    @abc.abstractmethod
    def lock_axis(self, db: pw.Database, axis_id: int) -> None:
        """Inside write_transaction, before deleting an axis's points outside write_points (the
        retention purge), so that it and a writer of the axis cannot deadlock."""

    @abc.abstractmethod
    def for_update(self, query: Any, *, share: bool = False) -> Any:
        """`query` (a select inside write_transaction, or after the transaction's first write) made to
        lock its rows until the commit, for writing (or, with `share`, against writers only): the
        processes judging alert rules take turns on the alert states' revision row (rtdp.alerting)."""

    @abc.abstractmethod
    def locked(self, exc: pw.OperationalError) -> bool:
        """Whether `exc` says another connection held a lock longer than this one waited: worth trying
        again (the retention purge, opening a brand-new database)."""

    @abc.abstractmethod
    def insert_points(self, db: pw.Database, rows: Sequence[NewPoint], received: float) -> list[Row]:
        """Insert the rows whose (axis, x) is free, taking ids in the order of `rows`; the rows stored."""

    @abc.abstractmethod
    def replace_points(
        self, db: pw.Database, rows: Sequence[NewPoint], received: float, replaced: dict[int, int]
    ) -> tuple[list[Row], Sequence[NewPoint]]:
        """Give stored points with these (axis, x) a new y and a new (higher) id, adding per axis to
        `replaced` how many went. Returns the rows already stored anew and those still to insert."""

    @abc.abstractmethod
    def extremes_from_points(
        self, db: pw.Database, axis_id: int, plan: Buckets, low: float, high: float
    ) -> list[tuple[int, float, float]]:
        """Downsampling without summaries: each bucket's lowest and highest point (id, x, y) among the
        axis's points with low <= x <= high (ties: smallest x)."""

    @abc.abstractmethod
    def size(self, db: pw.Database) -> int | None:
        """Bytes the database takes, or None when it cannot tell."""

    @abc.abstractmethod
    def free_bytes(self, db: pw.Database) -> int | None:
        """Bytes free for the database's files to grow into, or None when that is not ours to see (a server)."""


# -- SQLite -------------------------------------------------------------------------------------------

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    # NORMAL is durable across application crashes in WAL mode (only an OS crash or a power loss can lose
    # the commits since the last checkpoint); `create(url, synchronous="full")` also survives those.
    "synchronous": "normal",
    "foreign_keys": 1,
    "busy_timeout": 5000,
    "cache_size": -32000,
}


@functools.lru_cache(maxsize=64)
def _sqlite_insert(rows: int) -> str:
    values = ",".join(["(?,?,?,?)"] * rows)
    return (
        f"INSERT INTO {TABLE} ({AXIS}, {X}, {Y}, {RECEIVED}) VALUES {values}"
        f" ON CONFLICT ({AXIS}, {X}) DO NOTHING"
        # + 0.0: SQLite's RETURNING hands back integral REALs as ints; this way they come as floats
        # and each row can become a StoredPoint as it is.
        f" RETURNING {ID}, {AXIS}, {X} + 0.0, {Y} + 0.0"
    )


@functools.lru_cache(maxsize=64)
def _sqlite_delete(rows: int) -> str:
    pairs = ",".join(["(?,?)"] * rows)
    return f"DELETE FROM {TABLE} WHERE ({AXIS}, {X}) IN (VALUES {pairs}) RETURNING {AXIS}"


_RANGE_EXTREMES = f"SELECT {ID}, {X}, {Y}, MIN({Y}), MAX({Y}) FROM {TABLE} WHERE {AXIS} = ? AND {X} >= ? AND {X} {{}} ?"
_RANGE_FIND = (
    f"SELECT {ID}, {X}, {Y} FROM {TABLE} WHERE {AXIS} = ? AND {X} >= ? AND {X} {{}} ? AND {Y} = ? ORDER BY {X} LIMIT 1"
)


class Sqlite(Dialect):
    """One file in WAL mode; one writer at a time, so writers need no locks of their own."""

    def create(self, url: str, *, synchronous: str = "normal") -> pw.Database:
        path = url.split("sqlite:///", 1)[1] if url.startswith("sqlite:///") else url
        if not path:
            raise ConfigError(f"--db: no file in {url!r} (use sqlite:///PATH)")
        if path != ":memory:":
            try:
                private_dir(Path(path).parent)
                private_file(Path(path))
            except OSError as exc:
                raise ConfigError(f"--db: cannot create {path}: {exc.strerror}") from None
        return pw.SqliteDatabase(path, pragmas={**SQLITE_PRAGMAS, "synchronous": synchronous}, timeout=5)

    def autoincrement(self, node: Any) -> Any:
        # SQLite reuses max(rowid)+1 unless the column says AUTOINCREMENT; PostgreSQL sequences never reuse.
        return pw.NodeList((node, pw.SQL("AUTOINCREMENT")))

    def write_transaction(self, db: pw.Database) -> Any:
        # Take the write lock before reading: a deferred transaction that read first could fail with
        # "database is locked" when another writer committed in between.
        return db.atomic(lock_type="IMMEDIATE")

    def serialise_migrations(self, db: pw.Database) -> None:
        pass  # write_transaction holds the only write lock already

    def lock_for_write(self, db: pw.Database, rows: Sequence[NewPoint]) -> dict[int, int] | None:
        # The first write takes the database's only write lock. Nothing is read before it: a transaction
        # that read first fails ("database is locked", no busy wait) when another writer committed meanwhile.
        return None

    def lock_axis(self, db: pw.Database, axis_id: int) -> None:
        pass  # write_transaction holds the only write lock already

    def for_update(self, query: Any, *, share: bool = False) -> Any:
        return query  # one writer at a time: the transaction's first write (or BEGIN IMMEDIATE) holds the file

    def locked(self, exc: pw.OperationalError) -> bool:
        # "database is locked" (busy timeout over) or "database table is locked".
        return "locked" in str(exc)

    def insert_points(self, db: pw.Database, rows: Sequence[NewPoint], received: float) -> list[Row]:
        stored: list[Row] = []
        for start in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[start : start + INSERT_CHUNK]
            params: list[object] = []
            for axis_id, x, y in chunk:
                params += (axis_id, x, y, received)
            stored += execute(db, _sqlite_insert(len(chunk)), params).fetchall()
        return stored

    def replace_points(
        self, db: pw.Database, rows: Sequence[NewPoint], received: float, replaced: dict[int, int]
    ) -> tuple[list[Row], Sequence[NewPoint]]:
        # Delete, then the caller inserts them all again (new ids): SQLite holds its write lock
        # throughout, so nothing comes in between.
        for start in range(0, len(rows), DELETE_CHUNK):
            chunk = rows[start : start + DELETE_CHUNK]
            params: list[object] = []
            for axis_id, x, _ in chunk:
                params += (axis_id, x)
            for (axis_id,) in execute(db, _sqlite_delete(len(chunk)), params).fetchall():
                replaced[axis_id] += 1
        return [], rows

    def extremes_from_points(
        self, db: pw.Database, axis_id: int, plan: Buckets, low: float, high: float
    ) -> list[tuple[int, float, float]]:
        """One aggregate per bucket over its x range of the (axis, x) index.

        A GROUP BY on the bucket number sorts every row in a temporary B-tree (about 3x slower over a
        million points); ranges read the index in order and sort nothing. With MIN() and MAX() together
        SQLite takes the bare columns from the row of one of them; each extreme's first row (smallest x)
        is then looked up, which is quick in the index.
        """
        found: list[tuple[int, float, float]] = []
        cursor = db.cursor()  # type: ignore[no-untyped-call]
        first, last = plan.bucket_of(low), plan.bucket_of(high)
        for bucket in range(first, last + 1):
            lo, hi = plan.bounds(bucket)
            # Half-open buckets; the last one is closed so the newest point belongs to it.
            op = "<=" if bucket == last else "<"
            params = (axis_id, max(lo, low), high if bucket == last else hi)
            row = cursor.execute(_RANGE_EXTREMES.format(op), params).fetchone()
            if row is None or row[3] is None:
                continue  # empty bucket
            for y in {row[3], row[4]}:
                match = cursor.execute(_RANGE_FIND.format(op), (*params, y)).fetchone()
                found.append((int(match[0]), float(match[1]), float(match[2])))
        return found

    def size(self, db: pw.Database) -> int | None:
        path = getattr(db, "database", None)
        if not isinstance(path, str) or path in ("", ":memory:") or path.startswith("file:"):
            return None
        return sum(os.path.getsize(p) for p in (path, path + "-wal", path + "-shm") if os.path.exists(p))

    def free_bytes(self, db: pw.Database) -> int | None:
        path = getattr(db, "database", None)
        if not isinstance(path, str) or path in ("", ":memory:") or path.startswith("file:"):
            return None
        stat = os.statvfs(os.path.dirname(os.path.abspath(path)))
        return stat.f_bavail * stat.f_frsize


# -- PostgreSQL ---------------------------------------------------------------------------------------


def _pg_floats(values: Iterable[float]) -> str:
    """A PostgreSQL array literal of floats, bound as one text parameter and cast in the statement.

    psycopg2 interpolates every parameter into the SQL text in Python, and the server then parses a
    VALUES list of thousands of expressions: a batch's rows as a few arrays for unnest() are stored
    about twice as fast (bench/store_bench.py). float's repr is exact (the shortest string that reads
    back as the same double, as psycopg2 sends a float parameter); float() first, so an int or a float
    subclass (numpy's repr differs) prints the same way.
    """
    return "{" + ",".join(map(float.__repr__, map(float, values))) + "}"


def _pg_ints(values: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers (see _pg_floats)."""
    return "{" + ",".join(map(str, map(int, values))) + "}"


# The rows as one array per column. A function scan returns unnest()'s rows in array order, so ids
# are still taken in the order of the batch, as from a VALUES list.
_PG_INSERT = (
    f"INSERT INTO {TABLE} ({AXIS}, {X}, {Y}, {RECEIVED})"
    " SELECT axis, x, y, %s::float8 FROM unnest(%s::int8[], %s::float8[], %s::float8[]) AS new(axis, x, y)"
    f" ON CONFLICT ({AXIS}, {X}) DO NOTHING RETURNING {ID}, {AXIS}, {X}, {Y}"
)
# DEFAULT: the next id from the sequence. The planner probes the (axis, x) index once per row
# (checked with EXPLAIN on 2,000,000 points).
_PG_UPDATE = (
    f"UPDATE {TABLE} SET {ID} = DEFAULT, {Y} = new.y, {RECEIVED} = %s"
    " FROM unnest(%s::int8[], %s::float8[], %s::float8[]) AS new(axis, x, y)"
    f" WHERE {TABLE}.{AXIS} = new.axis AND {TABLE}.{X} = new.x"
    f" RETURNING {TABLE}.{ID}, {TABLE}.{AXIS}, {TABLE}.{X}, {TABLE}.{Y}"
)
# Advisory lock namespace (any constant) for writers of a feed's points.
_PG_WRITE_LOCK = 0x72747077
# Any constant: serialises schema creation between processes starting at once on one PostgreSQL.
_PG_MIGRATION_LOCK = 0x72746470
# Locks, in the order every writer takes them (see lock_for_write). The feeds' locks are taken as
# the rows come out of the sorted subquery.
_PG_LOCK_FEEDS = (
    f"SELECT pg_advisory_xact_lock(%s, feed) FROM (SELECT DISTINCT {_AXIS_FEED} AS feed FROM {AXIS_TABLE}"
    f" WHERE {_AXIS_ID} = ANY(%s::int8[]) ORDER BY feed) AS feeds"
)
_PG_LOCK_AXES = (
    f"SELECT {_AXIS_ID}, {_AXIS_FEED} FROM {AXIS_TABLE} WHERE {_AXIS_ID} = ANY(%s::int8[])"
    f" ORDER BY {_AXIS_ID} FOR NO KEY UPDATE"
)
_PG_WINDOW_EXTREMES = (
    f"WITH t AS (SELECT {ID} AS id, {X} AS x, {Y} AS y, FLOOR(FLOOR({X} / %s) / %s) AS b FROM {TABLE}"
    f" WHERE {AXIS} = %s AND {X} >= %s AND {X} <= %s),"
    " r AS (SELECT id, x, y, ROW_NUMBER() OVER (PARTITION BY b ORDER BY y, x) AS rank_low,"
    " ROW_NUMBER() OVER (PARTITION BY b ORDER BY y DESC, x) AS rank_high FROM t)"
    " SELECT id, x, y FROM r WHERE rank_low = 1 OR rank_high = 1 ORDER BY x"
)


class Postgres(Dialect):
    """Concurrent writers (bridges of a share group, the purge): they take locks in one order."""

    def create(self, url: str, *, synchronous: str = "normal") -> pw.Database:
        try:
            db: pw.Database = connect(url, autorollback=True)
            return db
        except (ImportError, RuntimeError) as exc:
            raise ConfigError(f"--db: PostgreSQL needs psycopg2 (pip install rtdp[postgres]): {exc}") from None

    def autoincrement(self, node: Any) -> Any:
        return node  # sequences never reuse a value

    def write_transaction(self, db: pw.Database) -> Any:
        return db.atomic()  # row locks, taken as needed, suffice

    def serialise_migrations(self, db: pw.Database) -> None:
        execute(db, "SELECT pg_advisory_xact_lock(%s)", (_PG_MIGRATION_LOCK,))

    def lock_for_write(self, db: pw.Database, rows: Sequence[NewPoint]) -> dict[int, int] | None:
        # Writers of the same axes take turns, in axis id order so they cannot deadlock; otherwise two
        # replacing the same points keep undoing each other. NO KEY: inserts elsewhere (their
        # foreign-key checks) are not blocked. First the feeds: ids come from one sequence as rows are
        # inserted, so without this a writer could commit a feed's point with id 100 after another
        # committed id 101 there, and an SSE client resuming from Last-Event-ID 101 would never get
        # 100. Feed by feed, writers now commit in the order they take ids. Advisory (not row) locks:
        # nothing else that touches the feed rows waits for them. Hand-written, one statement each:
        # with a message per batch, building these with Peewee and a round trip per feed cost a fifth
        # of the time.
        ids = _pg_ints(sorted({axis_id for axis_id, _, _ in rows}))
        execute(db, _PG_LOCK_FEEDS, (_PG_WRITE_LOCK, ids)).fetchall()
        return dict(execute(db, _PG_LOCK_AXES, (ids,)).fetchall())

    def lock_axis(self, db: pw.Database, axis_id: int) -> None:
        # The axis row, as lock_for_write takes it: a writer replacing points of this axis and the
        # purge wait for each other instead of deadlocking (each holding a row the other needs).
        execute(db, _PG_LOCK_AXES, (_pg_ints([axis_id]),)).fetchall()

    def for_update(self, query: Any, *, share: bool = False) -> Any:
        return query.for_update("FOR SHARE" if share else True)

    def locked(self, exc: pw.OperationalError) -> bool:
        return False  # lock waits block (no lock_timeout is set); they do not fail

    def insert_points(self, db: pw.Database, rows: Sequence[NewPoint], received: float) -> list[Row]:
        stored: list[Row] = []
        for start in range(0, len(rows), INSERT_CHUNK):
            axes, xs, ys = zip(*rows[start : start + INSERT_CHUNK], strict=True)
            params = (received, _pg_ints(axes), _pg_floats(xs), _pg_floats(ys))
            stored += execute(db, _PG_INSERT, params).fetchall()
        return stored

    def replace_points(
        self, db: pw.Database, rows: Sequence[NewPoint], received: float, replaced: dict[int, int]
    ) -> tuple[list[Row], Sequence[NewPoint]]:
        # Update the rows, id included: half the server's time of a delete and an insert. A point
        # deleted meanwhile (the purge) is not updated: it is left for the caller to insert.
        done: list[Row] = []
        for start in range(0, len(rows), INSERT_CHUNK):
            axes, xs, ys = zip(*rows[start : start + INSERT_CHUNK], strict=True)
            params = (received, _pg_ints(axes), _pg_floats(xs), _pg_floats(ys))
            done += execute(db, _PG_UPDATE, params).fetchall()
        for row in done:
            replaced[row[1]] += 1
        updated = {(row[1], row[2]) for row in done}
        return done, [row for row in rows if (row[0], row[1]) not in updated]

    def extremes_from_points(
        self, db: pw.Database, axis_id: int, plan: Buckets, low: float, high: float
    ) -> list[tuple[int, float, float]]:
        """One statement ranking each bucket's rows by y both ways."""
        cursor = execute(db, _PG_WINDOW_EXTREMES, (plan.block_width, plan.group, axis_id, low, high))
        return [(int(i), float(x), float(y)) for i, x, y in cursor.fetchall()]

    def size(self, db: pw.Database) -> int | None:
        row = execute(db, "SELECT pg_database_size(current_database())", ()).fetchone()
        return int(row[0]) if row else None

    def free_bytes(self, db: pw.Database) -> int | None:
        return None  # the server's disk: PostgreSQL refuses writes itself, and its host is watched apart


# -- choosing one -------------------------------------------------------------------------------------

SQLITE, POSTGRES = Sqlite(), Postgres()
# URL scheme -> dialect ("" is a plain file path).
SCHEMES: dict[str, Dialect] = {
    "": SQLITE,
    "sqlite": SQLITE,
    "postgres": POSTGRES,
    "postgresql": POSTGRES,
    "postgresext": POSTGRES,
}
# Where the open database keeps its dialect.
_ATTRIBUTE = "rtdp_dialect"


def open_url(url: str, *, synchronous: str = "normal") -> pw.Database:
    """An unconnected database for `url`, carrying its dialect (see dialect_of)."""
    dialect = SCHEMES.get(urlsplit(url).scheme)
    if dialect is None:
        raise ConfigError(f"--db: unsupported database URL {redact(url)!r} (use sqlite:/// or postgresql://)")
    db = dialect.create(url, synchronous=synchronous)
    setattr(db, _ATTRIBUTE, dialect)
    return db


def dialect_of(db: pw.Database | pw.DatabaseProxy) -> Dialect:
    """The dialect `db` was opened with; through the models' proxy, that of the database they are bound to."""
    dialect: Dialect | None = getattr(db, _ATTRIBUTE, None)
    if dialect is None:
        raise ConfigError("the database was not opened with rtdp.database.open_database")
    return dialect


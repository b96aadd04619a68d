"""The marketing database's engine (SQLite or PostgreSQL, from the Airflow connection's own
hook), its UTC timestamp type, and the stamps that mark the sync's own writes.

SQLite runs in WAL mode and writers issue ``BEGIN IMMEDIATE``, so parallel tasks queue
instead of failing on a lock upgrade; readers (:func:`reader`) never wait for a writer.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.sfsync.errors import ConfigError


class UtcDateTime(sa.types.TypeDecorator):
    """Aware UTC datetimes in Python; timestamptz on PostgreSQL, naive UTC text on SQLite."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.DateTime(timezone=False))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def id_column() -> sa.Column:
    """A table's own id: BIGINT on PostgreSQL, SQLite's INTEGER (its row id) there."""
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                     autoincrement=True)


def utcnow() -> datetime:
    return datetime.now(UTC)


_last_stamp = datetime.min.replace(tzinfo=UTC)


def fresh_stamp() -> datetime:
    """Now, strictly later than every earlier stamp of this process. Every sync write sets
    ``sfsync_updated_at`` to a new value (the synced tables' column default and onupdate):
    that is how the capture triggers tell the sync's own writes apart, so a second write to a
    row must never reuse the first one's stamp."""
    global _last_stamp
    now = utcnow()
    if now <= _last_stamp:
        now = _last_stamp + timedelta(microseconds=1)
    _last_stamp = now
    return now


def _on_sqlite_connect(dbapi_connection, _record):
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (see _on_begin)
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _on_begin(conn):
    # Writers take the write lock up front, so two writers queue (busy_timeout) instead of one
    # failing on a lock upgrade; readers (see ``reader``) never block behind a writer in WAL.
    read_only = conn.get_execution_options().get("sfsync_read_only")
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


# --- locks that hold across workers ----------------------------------------------------------
# PostgreSQL advisory locks, transaction-scoped: released at commit or rollback, and when a
# worker dies with its connection. SQLite needs none: a writer's transaction holds the whole
# database's write lock already (BEGIN IMMEDIATE, above), and every SQLite writer is on one
# machine. So two runs on different workers (an initial copy, an incremental cycle, a sync now)
# never evolve the schema at once, and never load one table or move its cursors at once.
SCHEMA_LOCK = 0x5F5C_4A9E  # one key: creating and evolving tables, triggers, the describes


def lock_schema(conn) -> None:
    """Hold the schema lock until ``conn``'s transaction ends (also ``capture.PG_LOCK``, the
    trigger installer's): whoever creates, evolves or describes tables re-reads what is there
    only after it holds the lock."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK})


def lock_table(conn, table: str) -> None:
    """Hold ``table``'s writer lock until ``conn``'s transaction ends: the loads of one synced
    table (a copy's chunk, an incremental load, a sync now's re-read) and the moves of its
    objects' cursors queue, whatever worker runs them. The same key as ``outbox.fold``'s per
    table (two-key form, ``hashtext``), so a load that folds its table's changes takes no
    second lock."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k, hashtext(:t))"),
                     {"k": SCHEMA_LOCK, "t": table})


def reader(engine: Engine) -> Engine:
    """The same database for reads only: on SQLite a read never waits for a writer."""
    return engine.execution_options(sfsync_read_only=True)


def _prepared(engine: Engine) -> Engine:
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _on_sqlite_connect)
        sa.event.listen(engine, "begin", _on_begin)
    return engine


def _engine_kwargs(dialect: str) -> dict:
    if dialect == "sqlite":
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}


def create_engine(url: str) -> Engine:
    """An engine for a SQLAlchemy URL (``sqlite:///...``, ``postgresql://...``)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return _prepared(sa.create_engine(url, **_engine_kwargs(url.split(":", 1)[0])))


_STATEMENT_TABLE = re.compile(r'\b(INTO|UPDATE|FROM|TABLE|ON)\s+"?([A-Za-z_][\w.]*)"?', re.I)
_CATALOGS = ("pg_catalog.", "information_schema.", "sqlite_", "pg_")


def database_problem(conn_id: str, url: str | None, exc: Exception) -> str:
    """One line on an error of the marketing database: its Airflow connection (and URL, no
    password), what the database said (its first line), and the statement's verb and table;
    never the statement's values (they may be personal data)."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines() or [type(orig).__name__]
    said = " ".join(lines[0].split()) if not isinstance(exc, sa.exc.NoSuchTableError) \
        else f"no such table: {exc}"
    statement = " ".join(str(getattr(exc, "statement", None) or "").split())
    found = _STATEMENT_TABLE.search(statement)
    where = (" (reading the tables' definitions)" if found and found[2].startswith(_CATALOGS)
             else f" ({statement.split(' ', 1)[0]} on table {found[2]})" if found
             else f" ({statement[:40]})" if statement else "")
    return (f"marketing database (Airflow connection {conn_id!r}{', ' + url if url else ''}): "
            f"{said}{where}")


def engine_for(conn_id: str) -> Engine:
    """The engine of an Airflow connection (``sqlite`` or ``postgres``).

    PostgreSQL: made by the connection's own hook (``PostgresHook``), so every form Airflow
    accepts works. SQLite: the database file is the connection's host (Airflow's form,
    ``{"conn_type": "sqlite", "host": "/path/marketing.db"}``) or its schema (SQLAlchemy's URI
    form, ``sqlite:////path/marketing.db``); the SQLite hook's own URI loses the second form
    (an in-memory database), and a connection with neither is refused.
    """
    from airflow.sdk import BaseHook  # Airflow's SDK: only where a connection is looked up

    conn = BaseHook.get_connection(conn_id)
    if conn.conn_type == "sqlite":
        path = conn.host or conn.schema
        if not path or path == ":memory:":
            raise ConfigError(f"connection {conn_id!r}: no SQLite database file; set its host to "
                              "the file's path (or use sqlite:////absolute/path/marketing.db)")
        return create_engine(f"sqlite:///{path}")
    if conn.conn_type not in {"postgres", "postgresql"}:
        raise ConfigError(f"connection {conn_id!r} has type {conn.conn_type!r}; sfsync supports "
                          "'sqlite' and 'postgres'")
    return _prepared(conn.get_hook().get_sqlalchemy_engine(
        engine_kwargs=_engine_kwargs("postgresql")))

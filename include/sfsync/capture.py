"""Change capture in the marketing database, for every writer (issue 4, requirement 1).

Triggers on the synced tables record which row changed and which columns, in ``sfsync_change``,
whoever wrote: psql, a BI tool, an ORM. Nobody has to call our Python API and no session state is
involved. The sync's own writes are told apart by a convention on the two bookkeeping columns
every synced table has:

* the sync sets ``sfsync_created_at`` in every INSERT and a **new** ``sfsync_updated_at`` in
  every UPDATE; other writers leave both alone;
* so an INSERT is captured only when ``sfsync_created_at`` is null, an UPDATE only when
  ``sfsync_updated_at`` did not change (``IS NOT DISTINCT FROM``), and only when some other
  column changed (an ORM rewriting equal values records nothing);
* a DELETE is always captured (the sync deletes synced rows only when it merges people).

``columns`` lists the changed columns, comma-separated, in alphabetical order, ``sfsync_*``
columns left out; for an insert, every column but ``id`` and ``sfsync_*``; null for a delete.

SQLite triggers name their columns, so :func:`install_triggers` regenerates them from the
table's current columns (call it again after columns were added). PostgreSQL uses one generic
plpgsql function that compares ``to_jsonb(NEW)`` with ``to_jsonb(OLD)``, so new columns are
covered at once. Both installs are idempotent and change nothing when nothing needs changing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.sfsync.mdb import BOOKKEEPING_PREFIX, UtcDateTime, utcnow

CHANGE_TABLE = "sfsync_change"
PG_FUNCTION = "sfsync_capture"
PG_TRIGGER = "sfsync_capture"
OPS = ("insert", "update", "delete")
_REQUIRED = ("id", "sfsync_created_at", "sfsync_updated_at")
_PG_LOCK = 0x5F5C_4A9E  # advisory lock key: one installer at a time


def change_table(metadata: sa.MetaData) -> sa.Table:
    """``sfsync_change``: one row per captured insert, update or delete."""
    if CHANGE_TABLE in metadata.tables:
        return metadata.tables[CHANGE_TABLE]
    t = sa.Table(
        CHANGE_TABLE, metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("table_name", sa.Text, nullable=False),
        sa.Column("row_id", sa.BigInteger, nullable=False),  # the synced table's id
        sa.Column("op", sa.Text, nullable=False),  # insert, update, delete
        sa.Column("columns", sa.Text),  # comma-separated; null for a delete
        sa.Column("changed_at", UtcDateTime, nullable=False),
        sa.Column("processed_at", UtcDateTime))
    sa.Index("ix_sfsync_change_pending", t.c.table_name, t.c.id,
             sqlite_where=t.c.processed_at.is_(None),
             postgresql_where=t.c.processed_at.is_(None))
    return t


_metadata = sa.MetaData()
change_t = change_table(_metadata)


@dataclass(frozen=True)
class Change:
    id: int
    table_name: str
    row_id: int
    op: str
    columns: tuple[str, ...]
    changed_at: datetime
    processed_at: datetime | None = None


# --- installing the triggers ------------------------------------------------------------------

def install_triggers(engine: Engine, tables: Iterable[sa.Table | str]) -> None:
    """Create ``sfsync_change`` if missing and (re)create the capture triggers of ``tables``.

    Safe to call every cycle and after columns were added: only what differs is rewritten.
    """
    names = [t if isinstance(t, str) else t.name for t in tables]
    change_t.create(engine, checkfirst=True)
    for index in change_t.indexes:
        index.create(engine, checkfirst=True)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
        inspector = sa.inspect(conn)
        current = {name: [c["name"] for c in inspector.get_columns(name)] for name in names}
        for name, columns in current.items():
            if name.startswith(BOOKKEEPING_PREFIX):
                raise ValueError(f"{name!r} is a bookkeeping table; it is never captured")
            missing = [c for c in _REQUIRED if c not in columns]
            if missing:
                raise ValueError(f"table {name!r} has no column {', '.join(missing)}")
        if conn.dialect.name == "sqlite":
            for name, columns in current.items():
                _install_sqlite(conn, name, columns)
        elif conn.dialect.name == "postgresql":
            schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
            _install_postgres_function(conn, schema)
            for name in names:
                _install_postgres_trigger(conn, schema, name)
        else:
            raise NotImplementedError(f"change capture on {conn.dialect.name}")


def remove_triggers(engine: Engine, tables: Iterable[sa.Table | str]) -> None:
    """Drop the capture triggers of ``tables`` (``sfsync_change`` and its rows stay)."""
    names = [t if isinstance(t, str) else t.name for t in tables]
    with engine.begin() as conn:
        for name in names:
            if conn.dialect.name == "sqlite":
                for op in OPS:
                    conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_q(_sqlite_trigger(name, op))}")
            else:
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {PG_TRIGGER} ON {_q(name)}")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _captured(columns: Sequence[str]) -> list[str]:
    return sorted(c for c in columns if not c.startswith(BOOKKEEPING_PREFIX))


# SQLite ----------------------------------------------------------------------------------------

# 'now' as the naive UTC text UtcDateTime stores (microseconds: six digits).
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"


def _sqlite_trigger(table: str, op: str) -> str:
    return f"sfsync_capture_{table}_{op}"


def sqlite_trigger_sql(table: str, columns: Sequence[str]) -> dict[str, str]:
    """The three triggers of ``table`` with the given columns: trigger name -> CREATE TRIGGER."""
    t, tn = _q(table), _lit(table)
    insert_cols = ",".join(c for c in _captured(columns) if c != "id")
    into = f"INSERT INTO {CHANGE_TABLE} (table_name, row_id, op, columns, changed_at)"
    diff = " || ".join(f"CASE WHEN NEW.{_q(c)} IS NOT OLD.{_q(c)} THEN {_lit(c + ',')} "
                       "ELSE '' END" for c in _captured(columns)) or "''"
    return {
        _sqlite_trigger(table, "insert"): (
            f"CREATE TRIGGER {_q(_sqlite_trigger(table, 'insert'))} AFTER INSERT ON {t} "
            "FOR EACH ROW WHEN NEW.sfsync_created_at IS NULL BEGIN "
            f"{into} VALUES ({tn}, NEW.id, 'insert', {_lit(insert_cols)}, {_SQLITE_NOW}); END"),
        _sqlite_trigger(table, "update"): (
            f"CREATE TRIGGER {_q(_sqlite_trigger(table, 'update'))} AFTER UPDATE ON {t} "
            "FOR EACH ROW WHEN NEW.sfsync_updated_at IS OLD.sfsync_updated_at BEGIN "
            f"{into} SELECT {tn}, NEW.id, 'update', rtrim(d.cols, ','), {_SQLITE_NOW} "
            f"FROM (SELECT {diff} AS cols) AS d WHERE d.cols <> ''; END"),
        _sqlite_trigger(table, "delete"): (
            f"CREATE TRIGGER {_q(_sqlite_trigger(table, 'delete'))} AFTER DELETE ON {t} "
            f"FOR EACH ROW BEGIN {into} VALUES ({tn}, OLD.id, 'delete', NULL, {_SQLITE_NOW}); "
            "END"),
    }


def _install_sqlite(conn, table: str, columns: Sequence[str]) -> None:
    wanted = sqlite_trigger_sql(table, columns)
    have = dict(conn.execute(sa.text(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"),
        {"t": table}).all())
    for name, sql in wanted.items():
        if have.get(name) == sql:
            continue  # unchanged: no schema change, no invalidated statements elsewhere
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_q(name)}")
        conn.exec_driver_sql(sql)


# PostgreSQL ------------------------------------------------------------------------------------

def _pg_function_body(schema: str) -> str:
    change = f"{_q(schema)}.{CHANGE_TABLE}"
    return f"""
DECLARE
    cols text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO {change} (table_name, row_id, op, columns, changed_at)
        VALUES (TG_TABLE_NAME, OLD.id, 'delete', NULL, now());
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.sfsync_created_at IS NOT NULL THEN
            RETURN NULL;  -- the sync's own insert
        END IF;
        SELECT string_agg(k, ',' ORDER BY k) INTO cols
        FROM jsonb_object_keys(to_jsonb(NEW)) AS k
        WHERE k <> 'id' AND left(k, 7) <> 'sfsync_';
        INSERT INTO {change} (table_name, row_id, op, columns, changed_at)
        VALUES (TG_TABLE_NAME, NEW.id, 'insert', coalesce(cols, ''), now());
        RETURN NULL;
    END IF;
    IF NEW.sfsync_updated_at IS DISTINCT FROM OLD.sfsync_updated_at THEN
        RETURN NULL;  -- the sync's own update
    END IF;
    SELECT string_agg(n.key, ',' ORDER BY n.key) INTO cols
    FROM jsonb_each(to_jsonb(NEW)) AS n
    LEFT JOIN jsonb_each(to_jsonb(OLD)) AS o ON o.key = n.key
    WHERE left(n.key, 7) <> 'sfsync_' AND n.value IS DISTINCT FROM o.value;
    IF cols IS NOT NULL THEN
        INSERT INTO {change} (table_name, row_id, op, columns, changed_at)
        VALUES (TG_TABLE_NAME, NEW.id, 'update', cols, now());
    END IF;
    RETURN NULL;
END
"""


def _install_postgres_function(conn, schema: str) -> None:
    body = _pg_function_body(schema)
    have = conn.execute(sa.text(
        "SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = :s AND p.proname = :f"), {"s": schema, "f": PG_FUNCTION}).scalar()
    if have == body:
        return
    # SECURITY DEFINER: other writers need no privilege on sfsync_change; a fixed search_path
    # (every name above is qualified) keeps their session settings out of the function.
    conn.exec_driver_sql(
        f"CREATE OR REPLACE FUNCTION {_q(schema)}.{PG_FUNCTION}() RETURNS trigger "
        "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp "
        f"AS {_dollar(body)}")


def _dollar(body: str) -> str:
    tag = "$sfsync$"
    assert tag not in body
    return f"{tag}{body}{tag}"


def _install_postgres_trigger(conn, schema: str, table: str) -> None:
    exists = conn.execute(sa.text(
        "SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :s AND c.relname = :t AND t.tgname = :g"),
        {"s": schema, "t": table, "g": PG_TRIGGER}).first()
    if exists:
        return  # generic: new columns need no new trigger (and no lock on the table)
    conn.exec_driver_sql(
        f"CREATE TRIGGER {PG_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON "
        f"{_q(schema)}.{_q(table)} FOR EACH ROW EXECUTE FUNCTION {_q(schema)}.{PG_FUNCTION}()")


# --- reading and acknowledging changes ---------------------------------------------------------

def pending_changes(engine: Engine, table_name: str, *, limit: int | None = None) -> list[Change]:
    """Unprocessed changes of one table, oldest first."""
    query = sa.select(change_t).where(change_t.c.table_name == table_name,
                                      change_t.c.processed_at.is_(None)).order_by(change_t.c.id)
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [Change(id=r.id, table_name=r.table_name, row_id=r.row_id, op=r.op,
                       columns=tuple(c for c in (r.columns or "").split(",") if c),
                       changed_at=r.changed_at, processed_at=r.processed_at)
                for r in conn.execute(query)]


def mark_processed(engine: Engine, ids: Iterable[int]) -> int:
    """Mark changes processed; returns how many were pending."""
    ids = sorted(set(ids))
    done, now = 0, utcnow()
    with engine.begin() as conn:
        for i in range(0, len(ids), 500):
            result = conn.execute(change_t.update().where(
                change_t.c.id.in_(ids[i:i + 500]), change_t.c.processed_at.is_(None))
                .values(processed_at=now))
            done += result.rowcount
    return done

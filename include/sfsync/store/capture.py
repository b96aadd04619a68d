"""Change capture in the marketing database, for every writer (issue 4, requirement 1).

Triggers on the synced tables record which row changed and which columns, in ``sfsync_change``,
whoever wrote: psql, a BI tool, an ORM. Nobody has to call our Python API and no session state is
involved. The sync's own writes are told apart by the two bookkeeping columns every synced table has:

* the sync sets ``sfsync_created_at`` in every INSERT and a **new** ``sfsync_updated_at`` in
  every UPDATE (the synced tables' column defaults do it: ``store.schema``); other writers
  leave both alone;
* so an INSERT is captured only when ``sfsync_created_at`` is null, an UPDATE only when
  ``sfsync_updated_at`` did not change (``IS NOT DISTINCT FROM``), and only when some other
  column changed (an ORM rewriting equal values records nothing);
* a DELETE is always captured (the sync deletes synced rows only when it merges people); the
  row's Salesforce ids also go to ``sfsync_tombstone`` with the ``SystemModstamp`` of the
  version the row held and the row's values as deleted (JSON), so that the pull's overlap
  re-read of an unchanged record does not bring the row back, nor the echo of the sync's own
  push (a newer version differing from those values in nothing the sync writes); a real
  change in Salesforce does.

``columns`` lists the changed columns, comma-separated, in alphabetical order, ``sfsync_*``
columns left out; for an insert, every column but ``id`` and ``sfsync_*``; null for a delete.
``old_values`` (JSON) holds, for an update, the changed columns' values before the change (the
base a conflict is judged against) and, for a delete, the row's ``sfdc_id``.

``store.outbox.fold`` moves captured changes into ``sfsync_outbox``, one row per changed synced
row: what the push has to send, with the base values, its state (pending, failed, quarantined)
and attempts. The pull reads the outbox to detect conflicts before it overwrites a local edit.

SQLite triggers name their columns, so :func:`install_triggers` regenerates them from the
table's current columns (call it again after columns were added). PostgreSQL uses one generic
plpgsql function that compares ``to_jsonb(NEW)`` with ``to_jsonb(OLD)``, so new columns are
covered at once. Both installs are idempotent and change nothing when nothing needs changing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from more_itertools import chunked
from sqlalchemy.engine import Engine

from include.sfsync.store.engine import SCHEMA_LOCK, utcnow
from include.sfsync.store.tables import (
    BOOKKEEPING_PREFIX,
    BOOKS,
    CHANGE_TABLE,
    TOMBSTONE_TABLE,
    ensure_bookkeeping,
)

PG_FUNCTION = "sfsync_capture"
PG_TRIGGER = "sfsync_capture"
OPS = ("insert", "update", "delete")
_REQUIRED = ("id", "sfsync_created_at", "sfsync_updated_at")
# A deleted row's Salesforce ids and the SystemModstamp of the version it held, for
# ``sfsync_tombstone``: a person holds a lead and a contact (its ``sfdc_id`` is one of them).
TOMBSTONE_KEYS = (("sfdc_lead_id", "sfdc_lead_system_modstamp"),
                  ("sfdc_contact_id", "sfdc_contact_system_modstamp"),
                  ("sfdc_id", "sfdc_system_modstamp"))
PG_LOCK = SCHEMA_LOCK  # advisory lock key: one installer (or folder, per table) at a time


# --- installing the triggers ------------------------------------------------------------------

def install_triggers(engine: Engine, tables: Iterable[sa.Table | str]) -> None:
    """Create ``sfsync_change`` if missing and (re)create the capture triggers of ``tables``.

    Safe to call every cycle and after columns were added: only what differs is rewritten.
    """
    names = [t if isinstance(t, str) else t.name for t in tables]
    ensure_bookkeeping(engine)  # sfsync_change and sfsync_outbox among them
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK})
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


def tombstone_keys(columns: Sequence[str]) -> list[tuple[str, str]]:
    """The (Salesforce id, SystemModstamp) column pairs a deleted row of a table with
    ``columns`` leaves in ``sfsync_tombstone``."""
    keys = [(i, s) for i, s in TOMBSTONE_KEYS if i in columns and s in columns]
    if any(i != "sfdc_id" for i, _s in keys):  # a person: its sfdc_id is its lead or contact
        keys = [k for k in keys if k[0] != "sfdc_id"]
    return keys


# SQLite ----------------------------------------------------------------------------------------

# 'now' as the naive UTC text UtcDateTime stores (microseconds: six digits).
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"


def _sqlite_trigger(table: str, op: str) -> str:
    return f"sfsync_capture_{table}_{op}"


def sqlite_trigger_sql(table: str, columns: Sequence[str]) -> dict[str, str]:
    """The three triggers of ``table`` with the given columns: trigger name -> CREATE TRIGGER."""
    t, tn = _q(table), _lit(table)
    insert_cols = ",".join(c for c in _captured(columns) if c != "id")
    into = f"INSERT INTO {CHANGE_TABLE} (table_name, row_id, op, columns, old_values, changed_at)"
    # One (name, old value) row per changed column. A compound SELECT has at most 500 terms in
    # SQLite, so wide tables are split into chunks that are unioned again.
    terms = [f"SELECT {_lit(c)} AS k, OLD.{_q(c)} AS v WHERE NEW.{_q(c)} IS NOT OLD.{_q(c)}"
             for c in _captured(columns)]
    chunks = [" UNION ALL ".join(part) for part in chunked(terms, 200)]
    changed = " UNION ALL ".join(f"SELECT k, v FROM ({chunk})" for chunk in chunks) \
        or "SELECT NULL AS k, NULL AS v WHERE 0"
    sfdc_id = "OLD.sfdc_id" if "sfdc_id" in columns else "NULL"
    # The row as deleted, for sfsync_tombstone.row_values (json_group_object keeps nulls)
    old_terms = [f"SELECT {_lit(c)} AS k, OLD.{_q(c)} AS v" for c in _captured(columns)]
    old_row = " UNION ALL ".join(
        f"SELECT k, v FROM ({' UNION ALL '.join(part)})" for part in chunked(old_terms, 200)) \
        or "SELECT NULL AS k, NULL AS v WHERE 0"
    return {
        _sqlite_trigger(table, "insert"): (
            f"CREATE TRIGGER {_q(_sqlite_trigger(table, 'insert'))} AFTER INSERT ON {t} "
            "FOR EACH ROW WHEN NEW.sfsync_created_at IS NULL BEGIN "
            f"{into} VALUES ({tn}, NEW.id, 'insert', {_lit(insert_cols)}, NULL, {_SQLITE_NOW}); "
            "END"),
        _sqlite_trigger(table, "update"): (
            f"CREATE TRIGGER {_q(_sqlite_trigger(table, 'update'))} AFTER UPDATE ON {t} "
            "FOR EACH ROW WHEN NEW.sfsync_updated_at IS OLD.sfsync_updated_at BEGIN "
            f"{into} SELECT {tn}, NEW.id, 'update', group_concat(d.k, ','), "
            f"json_group_object(d.k, d.v), {_SQLITE_NOW} FROM ({changed}) AS d "
            "HAVING count(*) > 0; END"),
        _sqlite_trigger(table, "delete"): (
            f"CREATE TRIGGER {_q(_sqlite_trigger(table, 'delete'))} AFTER DELETE ON {t} "
            f"FOR EACH ROW BEGIN {into} VALUES ({tn}, OLD.id, 'delete', NULL, "
            f"json_object('sfdc_id', {sfdc_id}), {_SQLITE_NOW}); "
            + "".join(
                f"INSERT OR REPLACE INTO {TOMBSTONE_TABLE} (table_name, sfdc_id, stamp, "
                f"deleted_at, row_values) SELECT {tn}, OLD.{_q(i)}, OLD.{_q(st)}, "
                f"{_SQLITE_NOW}, (SELECT json_group_object(o.k, o.v) FROM ({old_row}) AS o) "
                f"WHERE OLD.{_q(i)} IS NOT NULL; " for i, st in tombstone_keys(columns))
            + "END"),
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
    tombstone = f"{_q(schema)}.{TOMBSTONE_TABLE}"
    # (id column, stamp column, 1 for a person's lead and contact, 2 for sfdc_id): see
    # tombstone_keys, which the SQLite triggers apply to the table's columns
    keys = ", ".join(f"({_lit(i)}, {_lit(st)}, {1 if i != 'sfdc_id' else 2})"
                     for i, st in TOMBSTONE_KEYS)
    person = " OR ".join(f"old_row -> {_lit(st)} IS NOT NULL"
                         for i, st in TOMBSTONE_KEYS if i != "sfdc_id")
    return f"""
DECLARE
    cols text;
    old_json text;
    old_row jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        old_row := to_jsonb(OLD);
        INSERT INTO {change} (table_name, row_id, op, columns, old_values, changed_at)
        VALUES (TG_TABLE_NAME, OLD.id, 'delete', NULL,
                jsonb_build_object('sfdc_id', old_row -> 'sfdc_id')::text, now());
        INSERT INTO {tombstone} (table_name, sfdc_id, stamp, deleted_at, row_values)
        SELECT TG_TABLE_NAME, old_row ->> k.id_col, (old_row ->> k.stamp_col)::timestamptz,
               now(), old_row::text
        FROM (VALUES {keys}) AS k(id_col, stamp_col, kind)
        WHERE old_row -> k.stamp_col IS NOT NULL AND old_row ->> k.id_col IS NOT NULL
          AND (k.kind = 1 OR NOT ({person}))
        ON CONFLICT (table_name, sfdc_id)
        DO UPDATE SET stamp = EXCLUDED.stamp, deleted_at = EXCLUDED.deleted_at,
                      row_values = EXCLUDED.row_values;
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
    SELECT string_agg(n.key, ',' ORDER BY n.key), jsonb_object_agg(n.key, o.value)::text
    INTO cols, old_json
    FROM jsonb_each(to_jsonb(NEW)) AS n
    LEFT JOIN jsonb_each(to_jsonb(OLD)) AS o ON o.key = n.key
    WHERE left(n.key, 7) <> 'sfsync_' AND n.value IS DISTINCT FROM o.value;
    IF cols IS NOT NULL THEN
        INSERT INTO {change} (table_name, row_id, op, columns, old_values, changed_at)
        VALUES (TG_TABLE_NAME, NEW.id, 'update', cols, old_json, now());
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


# Tombstones -----------------------------------------------------------------------------------

class Tombstone(NamedTuple):
    stamp: datetime | None  # SystemModstamp of the version the row held (or re-buried at)
    deleted_at: datetime
    values: dict | None  # the row as deleted, column -> JSON value (None: an older tombstone)


def tombstones(conn, table_name: str, sfdc_ids: Iterable[str]) -> dict[str, Tombstone]:
    """Salesforce id -> tombstone of the ids of rows of ``table_name`` deleted in the
    marketing database (see ``TOMBSTONE_KEYS``)."""
    t = BOOKS["tombstone"]
    out: dict[str, Tombstone] = {}
    for part in chunked(sorted({i for i in sfdc_ids if i}), 500):
        for row in conn.execute(sa.select(t.c.sfdc_id, t.c.stamp, t.c.deleted_at,
                                          t.c.row_values).where(
                t.c.table_name == table_name, t.c.sfdc_id.in_(part))):
            values = json.loads(row.row_values) if row.row_values else None
            out[row.sfdc_id] = Tombstone(row.stamp, row.deleted_at,
                                         values if isinstance(values, dict) else None)
    return out


def buried(tombstone: Tombstone | None, stamp) -> bool:
    """A record version the local delete of its row covers: not newer than the version the row
    held (or, if the row held none, not made after the delete)."""
    if tombstone is None:
        return False
    held = tombstone.stamp
    return stamp <= (held if held is not None else tombstone.deleted_at)


def rebury(conn, table_name: str, graves: dict[str, tuple[datetime, dict]]) -> None:
    """Newer versions that are no change of Salesforce's (the echo of the sync's own push, a
    delete): Salesforce id -> (their stamp, the row's values as they stand for it). Later
    versions are weighed against these."""
    t = BOOKS["tombstone"]
    for sfdc_id, (stamp, values) in sorted(graves.items()):
        conn.execute(t.update().where(t.c.table_name == table_name, t.c.sfdc_id == sfdc_id)
                     .values(stamp=stamp, row_values=json.dumps(values, default=str)))


def unpushed_in_tombstones(conn, table_name: str, row_id: int, sfdc_id: str,
                           base: dict) -> None:
    """Row ``row_id`` was deleted with local changes not pushed yet: its tombstones keep, for
    those columns, the values Salesforce has (``base``, JSON values as the triggers write
    them), so that the echo of an earlier push is weighed against what the sync had written."""
    t = BOOKS["tombstone"]
    found = conn.execute(sa.select(t.c.row_values).where(
        t.c.table_name == table_name, t.c.sfdc_id == sfdc_id)).scalar()
    held = json.loads(found) if found else None
    if not isinstance(held, dict) or held.get("id") != row_id:
        return
    ids = sorted({held.get(i) for i, _s in TOMBSTONE_KEYS} - {None})
    for grave in conn.execute(sa.select(t.c.sfdc_id, t.c.row_values).where(
            t.c.table_name == table_name, t.c.sfdc_id.in_(ids))).all():
        values = json.loads(grave.row_values) if grave.row_values else None
        if isinstance(values, dict) and values.get("id") == row_id:
            conn.execute(t.update().where(t.c.table_name == table_name,
                                          t.c.sfdc_id == grave.sfdc_id)
                         .values(row_values=json.dumps({**values, **base}, default=str)))


def forget_tombstones(conn, table_name: str, sfdc_ids: Iterable[str]) -> None:
    """The records came back (Salesforce changed them since their rows were deleted)."""
    t = BOOKS["tombstone"]
    for part in chunked(sorted(set(sfdc_ids)), 500):
        conn.execute(t.delete().where(t.c.table_name == table_name, t.c.sfdc_id.in_(part)))


# Rows lost without a trace --------------------------------------------------------------------

def record_rows(conn, table_name: str) -> None:
    """Note how many rows ``table_name`` holds now (in the transaction of a load that inserted
    rows), with the last change captured: :func:`lost_rows` checks them at the next run. (Loads
    that insert nothing need not: the captured changes since keep the count exact.)"""
    t, change_t = BOOKS["table_rows"], BOOKS["change"]
    rows, last = conn.execute(sa.select(  # one statement, one snapshot of both
        sa.select(sa.func.count()).select_from(sa.table(table_name)).scalar_subquery(),
        sa.select(sa.func.coalesce(sa.func.max(change_t.c.id), 0)).scalar_subquery())).one()
    conn.execute(t.delete().where(t.c.table_name == table_name))
    conn.execute(t.insert().values(table_name=table_name, row_count=rows, change_id=last,
                                   counted_at=utcnow()))


def has_rows_record(conn, table_name: str) -> bool:
    t = BOOKS["table_rows"]
    return conn.execute(sa.select(t.c.row_count).where(t.c.table_name == table_name)).first() \
        is not None


def lost_rows(conn, table_name: str) -> tuple[int, int] | None:
    """(rows expected at least, rows found) when ``table_name`` holds fewer rows than the sync
    left there plus the inserts and minus the deletes captured since: rows gone without a
    trace (a TRUNCATE, a DELETE on a table without triggers, an older backup restored). The
    sync's own inserts are not captured, so they can only hide nothing. None when nothing is
    lost, or nothing was recorded."""
    t, change_t = BOOKS["table_rows"], BOOKS["change"]
    mark = conn.execute(sa.select(t).where(t.c.table_name == table_name)).first()
    if mark is None:
        return None
    since = [change_t.c.table_name == table_name, change_t.c.id > mark.change_id]

    def captured(op: str):
        return sa.select(sa.func.count()).where(*since, change_t.c.op == op).scalar_subquery()

    found, inserted, deleted = conn.execute(sa.select(
        sa.select(sa.func.count()).select_from(sa.table(table_name)).scalar_subquery(),
        captured("insert"), captured("delete"))).one()
    expected = mark.row_count + inserted - deleted
    return (expected, found) if found < expected else None


def forget_rows(conn, table_names: Iterable[str]) -> None:
    t = BOOKS["table_rows"]
    conn.execute(t.delete().where(t.c.table_name.in_(sorted(table_names))))

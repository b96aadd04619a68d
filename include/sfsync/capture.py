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
``old_values`` (JSON) holds, for an update, the changed columns' values before the change (the
base a conflict is judged against) and, for a delete, the row's ``sfdc_id``.

:func:`fold` moves captured changes into ``sfsync_outbox``, one row per changed synced row: what
the push has to send, with the base values, its state (pending, failed, quarantined) and
attempts. The pull reads the outbox to detect conflicts before it overwrites a local edit.

SQLite triggers name their columns, so :func:`install_triggers` regenerates them from the
table's current columns (call it again after columns were added). PostgreSQL uses one generic
plpgsql function that compares ``to_jsonb(NEW)`` with ``to_jsonb(OLD)``, so new columns are
covered at once. Both installs are idempotent and change nothing when nothing needs changing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.sfsync.mdb import BOOKKEEPING_PREFIX, UtcDateTime, create_tables, utcnow

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
        sa.Column("old_values", sa.Text),  # JSON: see the module docstring
        sa.Column("changed_at", UtcDateTime, nullable=False),
        sa.Column("processed_at", UtcDateTime))
    sa.Index("ix_sfsync_change_pending", t.c.table_name, t.c.id,
             sqlite_where=t.c.processed_at.is_(None),
             postgresql_where=t.c.processed_at.is_(None))
    return t


_metadata = sa.MetaData()
change_t = change_table(_metadata)


# --- installing the triggers ------------------------------------------------------------------

def install_triggers(engine: Engine, tables: Iterable[sa.Table | str]) -> None:
    """Create ``sfsync_change`` if missing and (re)create the capture triggers of ``tables``.

    Safe to call every cycle and after columns were added: only what differs is rewritten.
    """
    names = [t if isinstance(t, str) else t.name for t in tables]
    create_tables(engine, [change_t, outbox_t])
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
    into = f"INSERT INTO {CHANGE_TABLE} (table_name, row_id, op, columns, old_values, changed_at)"
    # One (name, old value) row per changed column. A compound SELECT has at most 500 terms in
    # SQLite, so wide tables are split into chunks that are unioned again.
    terms = [f"SELECT {_lit(c)} AS k, OLD.{_q(c)} AS v WHERE NEW.{_q(c)} IS NOT OLD.{_q(c)}"
             for c in _captured(columns)]
    chunks = [" UNION ALL ".join(terms[i:i + 200]) for i in range(0, len(terms), 200)]
    changed = " UNION ALL ".join(f"SELECT k, v FROM ({chunk})" for chunk in chunks) \
        or "SELECT NULL AS k, NULL AS v WHERE 0"
    sfdc_id = "OLD.sfdc_id" if "sfdc_id" in columns else "NULL"
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
            f"json_object('sfdc_id', {sfdc_id}), {_SQLITE_NOW}); END"),
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
    old_json text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO {change} (table_name, row_id, op, columns, old_values, changed_at)
        VALUES (TG_TABLE_NAME, OLD.id, 'delete', NULL,
                jsonb_build_object('sfdc_id', to_jsonb(OLD) -> 'sfdc_id')::text, now());
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


# --- the outbox: what the push has to send ----------------------------------------------------

OUTBOX_TABLE = "sfsync_outbox"
PENDING, FAILED, QUARANTINED = "pending", "failed", "quarantined"


def outbox_table(metadata: sa.MetaData) -> sa.Table:
    """``sfsync_outbox``: one row per synced row with local changes not yet in Salesforce."""
    if OUTBOX_TABLE in metadata.tables:
        return metadata.tables[OUTBOX_TABLE]
    return sa.Table(
        OUTBOX_TABLE, metadata,
        sa.Column("table_name", sa.Text, primary_key=True),
        sa.Column("row_id", sa.BigInteger, primary_key=True),
        sa.Column("op", sa.Text, nullable=False),  # upsert, delete
        sa.Column("created", sa.Boolean, nullable=False),  # inserted by another writer
        sa.Column("columns", sa.Text, nullable=False),  # JSON list of changed columns
        sa.Column("base", sa.Text, nullable=False),  # JSON: column -> value Salesforce has
        sa.Column("sfdc_id", sa.Text),  # of a deleted row
        sa.Column("status", sa.Text, nullable=False),  # pending, failed, quarantined
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        # bumped by every fold: a push that read an older version leaves newer changes alone
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("first_changed_at", UtcDateTime),
        sa.Column("changed_at", UtcDateTime),
        sa.Column("updated_at", UtcDateTime))


outbox_t = outbox_table(_metadata)


@dataclass
class OutboxEntry:
    table_name: str
    row_id: int
    op: str
    created: bool
    columns: list[str]
    base: dict
    sfdc_id: str | None
    status: str
    attempts: int = 0
    version: int = 0

    @classmethod
    def of(cls, row) -> OutboxEntry:
        return cls(row.table_name, row.row_id, row.op, bool(row.created), json.loads(row.columns),
                   json.loads(row.base), row.sfdc_id, row.status, row.attempts, row.version)


def fold(conn, table_names: Iterable[str]) -> int:
    """Move the captured, unprocessed changes of ``table_names`` into the outbox (in the
    caller's transaction). The first change of a column keeps its base value; a new change of
    a failed row makes it pending again. Returns how many changes were folded."""
    names = list(table_names)
    if conn.dialect.name == "postgresql":  # one folder per table at a time (SQLite: one writer)
        for name in sorted(names):
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k, hashtext(:t))"),
                         {"k": _PG_LOCK, "t": name})
    changes = conn.execute(sa.select(change_t).where(
        change_t.c.table_name.in_(names), change_t.c.processed_at.is_(None))
        .order_by(change_t.c.id)).all()
    if not changes:
        return 0
    keys = sorted({(c.table_name, c.row_id) for c in changes})
    entries: dict[tuple[str, int], OutboxEntry] = {}
    for name in names:
        row_ids = [k[1] for k in keys if k[0] == name]
        for i in range(0, len(row_ids), 500):
            for row in conn.execute(sa.select(outbox_t).where(
                    outbox_t.c.table_name == name, outbox_t.c.row_id.in_(row_ids[i:i + 500]))):
                entries[(name, row.row_id)] = OutboxEntry.of(row)
    known = set(entries)
    first_at: dict[tuple[str, int], datetime] = {}
    last_at: dict[tuple[str, int], datetime] = {}
    gone: set[tuple[str, int]] = set()
    for c in changes:
        key = (c.table_name, c.row_id)
        first_at.setdefault(key, c.changed_at)
        last_at[key] = c.changed_at
        entry = entries.get(key)
        columns = [x for x in (c.columns or "").split(",") if x]
        if c.op == "delete":
            sfdc_id = json.loads(c.old_values or "{}").get("sfdc_id")
            if entry is not None and entry.created and not sfdc_id:
                entries.pop(key)  # created and deleted before it ever reached Salesforce
                gone.add(key)
                continue
            entries[key] = OutboxEntry(c.table_name, c.row_id, "delete", False, [], {}, sfdc_id,
                                       PENDING, 0, entry.version if entry else 0)
            continue
        if entry is None or entry.op == "delete":
            entry = entries[key] = OutboxEntry(c.table_name, c.row_id, "upsert",
                                               c.op == "insert", [], {}, None, PENDING,
                                               entry.attempts if entry else 0,
                                               entry.version if entry else 0)
        old = json.loads(c.old_values or "{}")
        for col in columns:
            if col not in entry.columns:
                entry.columns.append(col)
                if c.op == "update" and not entry.created:
                    entry.base[col] = old.get(col)
        entry.columns.sort()
        if entry.status == FAILED:
            entry.status = PENDING  # the record changed again: worth another try
    now = utcnow()
    for key in gone & known:
        conn.execute(outbox_t.delete().where(outbox_t.c.table_name == key[0],
                                             outbox_t.c.row_id == key[1]))
    for key, entry in entries.items():
        if key not in first_at:
            continue
        values = {"op": entry.op, "created": entry.created, "columns": json.dumps(entry.columns),
                  "base": json.dumps(entry.base, default=str), "sfdc_id": entry.sfdc_id,
                  "status": entry.status, "attempts": entry.attempts,
                  "version": entry.version + 1, "changed_at": last_at[key],
                  "updated_at": now}
        where = (outbox_t.c.table_name == key[0], outbox_t.c.row_id == key[1])
        # the entry may have been dropped since it was read (a push finished): insert it again
        if key not in known or not conn.execute(outbox_t.update().where(*where).values(
                **values)).rowcount:
            conn.execute(outbox_t.insert().values(table_name=key[0], row_id=key[1],
                                                  first_changed_at=first_at[key], **values))
    ids = [c.id for c in changes]
    for i in range(0, len(ids), 500):
        conn.execute(change_t.update().where(change_t.c.id.in_(ids[i:i + 500]))
                     .values(processed_at=now))
    return len(changes)


def outbox_entries(conn, table_name: str, row_ids: Iterable[int] | None = None, *,
                   status: str | None = None) -> dict[int, OutboxEntry]:
    """Outbox rows of one table (of the given rows, or all), by row id."""
    query = sa.select(outbox_t).where(outbox_t.c.table_name == table_name)
    if status is not None:
        query = query.where(outbox_t.c.status == status)
    if row_ids is None:
        return {r.row_id: OutboxEntry.of(r) for r in conn.execute(query.order_by(
            outbox_t.c.first_changed_at, outbox_t.c.row_id))}
    out: dict[int, OutboxEntry] = {}
    ids = sorted(set(row_ids))
    for i in range(0, len(ids), 500):
        for r in conn.execute(query.where(outbox_t.c.row_id.in_(ids[i:i + 500]))):
            out[r.row_id] = OutboxEntry.of(r)
    return out


def _same_version(entry: OutboxEntry):
    return (outbox_t.c.table_name == entry.table_name, outbox_t.c.row_id == entry.row_id,
            outbox_t.c.version == entry.version)


def save_entry(conn, entry: OutboxEntry, **extra) -> bool:
    """Write back an entry's columns, base, status and attempts (and ``extra`` columns), unless
    a fold changed it since it was read (then the newer changes stand). True if written."""
    written = conn.execute(outbox_t.update().where(*_same_version(entry)).values(
        columns=json.dumps(sorted(entry.columns)), base=json.dumps(entry.base, default=str),
        status=entry.status, attempts=entry.attempts, version=entry.version + 1,
        updated_at=utcnow(), **extra)).rowcount == 1
    if written:
        entry.version += 1
    return written


def merge_rows(conn, table_name: str, loser_id: int, survivor_id: int, filled: dict) -> None:
    """The sync merged row ``loser_id`` into ``survivor_id`` and deleted it: the delete is not a
    change to push, the loser's outbox entry goes; ``filled`` (column -> the survivor's value
    before the merge, its base) become the survivor's changes to push."""
    conn.execute(change_t.update().where(
        change_t.c.table_name == table_name, change_t.c.row_id == loser_id,
        change_t.c.processed_at.is_(None)).values(processed_at=utcnow()))
    conn.execute(outbox_t.delete().where(outbox_t.c.table_name == table_name,
                                         outbox_t.c.row_id == loser_id))
    if not filled:
        return
    survivor = outbox_entries(conn, table_name, [survivor_id]).get(survivor_id)
    if survivor is None or survivor.op != "upsert":
        now = utcnow()
        conn.execute(outbox_t.delete().where(outbox_t.c.table_name == table_name,
                                             outbox_t.c.row_id == survivor_id))
        conn.execute(outbox_t.insert().values(
            table_name=table_name, row_id=survivor_id, op="upsert", created=False,
            columns=json.dumps(sorted(filled)), base=json.dumps(filled, default=str),
            status=PENDING, attempts=0, first_changed_at=now, changed_at=now, updated_at=now))
        return
    for col, before in filled.items():
        if col not in survivor.columns:
            survivor.columns.append(col)
            survivor.base[col] = before
    save_entry(conn, survivor)


def drop_entry(conn, entry: OutboxEntry) -> None:
    """Done with the entry, unless a fold added changes since it was read (they stay)."""
    conn.execute(outbox_t.delete().where(*_same_version(entry)))


def stored_value(column: sa.Column, value):
    """A value from ``old_values`` JSON as the column reads it (SQLite and PostgreSQL keep
    booleans and timestamps differently in JSON)."""
    if value is None:
        return None
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return bool(value)
    if isinstance(kind, (UtcDateTime, sa.DateTime)):
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00").replace(" ", "T"))
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if isinstance(kind, sa.Date):
        return date.fromisoformat(str(value)[:10])
    if isinstance(kind, (sa.Integer, sa.BigInteger)):
        return int(value)
    if isinstance(kind, (sa.Float, sa.Numeric)):
        return float(value)
    return value if isinstance(value, str) else str(value)

"""The synced tables of the marketing database, derived from the catalog, and their evolution.

A new Salesforce field becomes a new column at the next cycle; a field that disappears keeps
its column; a type change never destroys data (the column is widened to text when the new type
does not fit). Every synced table carries ``sfsync_created_at`` and ``sfsync_updated_at``,
stamped by the column definitions themselves (a default and an onupdate of
:func:`~include.sfsync.store.engine.fresh_stamp`): every insert and update the sync makes
through these tables is marked as its own, so the capture triggers never push a pull back.
The data dictionary (``sfsync_field``) records every field's mapping.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.sfsync.catalog import Catalog
from include.sfsync.store.capture import forget_rows, install_triggers, lost_rows
from include.sfsync.store.engine import (
    UtcDateTime,
    fresh_stamp,
    id_column,
    lock_schema,
    reader,
    utcnow,
)
from include.sfsync.store.tables import BOOKS, ensure_bookkeeping

PERSON_LINKED = {"campaign_member", "activity", "opportunity_contact_role"}
SQL_TYPES = {"text": sa.Text, "boolean": sa.Boolean, "integer": sa.BigInteger,
             "float": sa.Float, "date": sa.Date, "datetime": UtcDateTime}
MARKETING_ACTIVITY = "marketing_activity"


def _base_columns(table: str, *, two_way: bool) -> list[sa.Column]:
    # Two-way tables take rows that are not in Salesforce yet: no Salesforce id until pushed.
    cols = [id_column(),
            sa.Column("sfdc_id", sa.Text, unique=True, nullable=two_way),
            sa.Column("sfdc_system_modstamp", UtcDateTime),
            sa.Column("sfdc_is_deleted", sa.Boolean, nullable=False, server_default=sa.false())]
    if table == "person":
        cols += [sa.Column("sfdc_type", sa.Text),  # 'Lead', 'Contact', or null: not in Salesforce
                 sa.Column("sfdc_lead_id", sa.Text, unique=True),
                 sa.Column("sfdc_contact_id", sa.Text, unique=True),
                 sa.Column("sfdc_account_id", sa.Text, index=True),
                 sa.Column("email", sa.Text, index=True),
                 # push.create_leads: flagged: a new person becomes a Lead only when true
                 sa.Column("sync_to_salesforce", sa.Boolean, server_default=sa.false())]
    if table == "activity":
        cols.append(sa.Column("sfdc_object", sa.Text))  # 'Task' or 'Event'
    # The sync's own writes, marked by the table definition: see the module docstring.
    cols += [sa.Column("sfsync_created_at", UtcDateTime, default=fresh_stamp),
             sa.Column("sfsync_updated_at", UtcDateTime, default=fresh_stamp,
                       onupdate=fresh_stamp)]
    return cols


def person_linked(table: str, catalog: Catalog) -> bool:
    """Tables whose rows belong to a person (a ``person_id`` column, resolved by the loader)."""
    if table in PERSON_LINKED:
        return True
    for obj in catalog.objects.values():
        if obj.type.table == table and obj.type.custom:
            return any("Contact" in f.reference_to or "Lead" in f.reference_to
                       for f in obj.synced)
    return False


def build_tables(catalog: Catalog) -> dict[str, sa.Table]:
    """The synced tables the catalog calls for (not yet matched to the database)."""
    metadata = sa.MetaData()
    tables: dict[str, sa.Table] = {}
    two_way = set(catalog.two_way_tables())
    for name, columns in catalog.tables.items():
        cols = _base_columns(name, two_way=name in two_way)
        present = {c.name for c in cols}
        if person_linked(name, catalog):
            cols.append(sa.Column("person_id", sa.BigInteger, index=True))
            present.add("person_id")
        for col in columns.values():
            if col.name not in present:
                cols.append(sa.Column(col.name, SQL_TYPES[col.sql_type]()))
                present.add(col.name)
        # Two-way tables: SQLite must never reuse a deleted row's id (its delete may still be
        # waiting to reach Salesforce when another writer inserts a row).
        tables[name] = sa.Table(name, metadata, *cols, sqlite_autoincrement=name in two_way)
    for table in tables.values():
        for ref in ("sfdc_account_id", "sfdc_campaign_id", "sfdc_opportunity_id",
                    "sfdc_who_id", "sfdc_what_id", "sfdc_converted_contact_id",
                    "sfdc_contact_id", "sfdc_lead_id"):
            if ref in table.c and not (table.c[ref].index or table.c[ref].unique):
                sa.Index(f"ix_{table.name}_{ref}", table.c[ref])
    if "person" in tables:  # finding a person by e-mail whatever its capitals (the console)
        sa.Index("ix_person_email_lower", sa.func.lower(tables["person"].c.email))
    return tables


def forget_lost_tables(engine: Engine, catalog: Catalog) -> list[str]:
    """Objects whose synced table is gone (dropped by hand, a restore without it), or lost rows
    the sync wrote without a trace (a TRUNCATE, a DELETE on a one-way table, an older backup
    restored: see ``capture.lost_rows``), lose their cursor and copy windows, so this cycle
    copies them again instead of carrying on from the cursor. Returns warnings naming them."""
    books = ensure_bookkeeping(engine)
    mark_t, window_t = books["watermark"], books["copy_window"]
    with engine.begin() as conn:
        lock_schema(conn)
        existing = set(sa.inspect(conn).get_table_names())
        started = {o for (o,) in conn.execute(sa.select(mark_t.c.sf_object))}
        short = {name: found for name in catalog.tables
                 if name in existing and (found := lost_rows(conn, name))}
        why = {o.sf_object: (f"its table {o.type.table} is gone from the marketing database"
                             if o.type.table not in existing else
                             f"its table {o.type.table} lost rows the sync wrote without a trace "
                             f"(at least {short[o.type.table][0]} expected, "
                             f"{short[o.type.table][1]} found)")
               for o in catalog.objects.values() if o.sf_object in started
               and (o.type.table not in existing or o.type.table in short)}
        if why:
            conn.execute(mark_t.delete().where(mark_t.c.sf_object.in_(sorted(why))))
            conn.execute(window_t.delete().where(window_t.c.sf_object.in_(sorted(why))))
            forget_rows(conn, {catalog.object(name).type.table for name in why})
        if "person" in catalog.tables and ("person" not in existing or "person" in short):
            # the copied people get new ids: the rows pointing at the old ones are linked
            # again when the cycle ends (pull.people.link_people), stamped as the sync's write
            person = sa.table("person", sa.column("id"))
            for name, table in build_tables(catalog).items():
                if name in existing and "person_id" in table.c:
                    conn.execute(table.update().where(~sa.exists().where(
                        person.c.id == table.c.person_id)).values(person_id=None)
                        if "person" in existing else table.update().values(person_id=None))
    return [f"{name}: {reason}; copying the object again" for name, reason in sorted(why.items())]


def ensure_schema(engine: Engine, catalog: Catalog) -> dict[str, sa.Table]:
    """Create what is missing, add new columns, widen incompatible ones; record the data
    dictionary; install the capture triggers. Returns the synced tables as stored.

    One worker at a time (the schema lock), each reading what is there only once it holds it:
    two runs preparing at once (an initial copy and an incremental cycle) never both add a
    column. Indexes that exist are left alone: ``CREATE INDEX IF NOT EXISTS`` would still lock
    the table against writes while a load runs on another worker."""
    books = ensure_bookkeeping(engine)
    tables = build_tables(catalog)
    added: list[tuple[str, str]] = []
    with engine.begin() as conn:
        lock_schema(conn)
        for table in tables.values():  # no foreign keys between them: any order will do
            table.create(conn, checkfirst=True)
        inspector = sa.inspect(conn)
        indexes = _index_names(conn)
        for table in tables.values():
            existing = {c["name"]: c for c in inspector.get_columns(table.name)}
            for col in table.columns:
                if col.name == "sfdc_id" and col.nullable and existing.get(col.name, {}).get(
                        "nullable") is False and engine.dialect.name == "postgresql":
                    # made before the push existed (SQLite cannot drop NOT NULL in place)
                    conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ALTER COLUMN sfdc_id '
                                         "DROP NOT NULL")
                if col.name not in existing:
                    ddl_type = col.type.compile(dialect=engine.dialect)
                    conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN "{col.name}" '
                                         f"{ddl_type}")
                    added.append((table.name, col.name))
                elif _needs_widening(existing[col.name]["type"], col.type):
                    if engine.dialect.name == "postgresql":
                        conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ALTER COLUMN '
                                             f'"{col.name}" TYPE TEXT USING "{col.name}"::text')
                    col.type = sa.Text()  # keep what is stored: read and write it as text
            for name, info in existing.items():
                if name not in table.c:  # a field that stopped syncing keeps its column
                    table.append_column(sa.Column(name, info["type"]))
            for index in table.indexes:  # also on tables created before the index existed
                # IF NOT EXISTS: the dialects' index lookup misses expression indexes
                if index.name not in indexes:
                    conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
        _record_fields(conn, books["field"], catalog)
        field_t = books["field"]
        for table_name, column in added:  # a column dropped by hand: copied again, not left
            conn.execute(field_t.update().where(  # empty (new fields are flagged already)
                field_t.c.table_name == table_name, field_t.c.column_name == column,
                field_t.c.synced.is_(True)).values(needs_backfill=True))
    install_triggers(engine, [tables[name] for name in catalog.two_way_tables()])
    return tables


def _index_names(conn) -> set[str]:
    """The indexes the database has (PostgreSQL: those of the current schema, expression
    indexes included; SQLite: none listed, where ``IF NOT EXISTS`` costs nothing)."""
    if conn.dialect.name != "postgresql":
        return set()
    return set(conn.execute(sa.text(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")).scalars())


def _needs_widening(existing_type, wanted_type) -> bool:
    """True when the field's new values (``wanted_type``) may not fit the existing column:
    the column becomes text, which keeps every stored value (as text) and takes the new ones."""
    def family(t) -> str:
        if isinstance(t, (sa.Text, sa.String)):
            return "text"
        if isinstance(t, sa.Boolean):
            return "boolean"
        if isinstance(t, (sa.Integer, sa.BigInteger)):
            return "integer"
        if isinstance(t, (sa.Float, sa.Numeric)):
            return "float"
        if isinstance(t, (sa.DateTime, UtcDateTime)):
            return "datetime"
        if isinstance(t, sa.Date):
            return "date"
        return "other"

    have, want = family(existing_type), family(wanted_type)
    if have == want or have == "text":  # anything can be stored as its text
        return False
    return not (have == "float" and want == "integer")


def _record_fields(conn, field_table: sa.Table, catalog: Catalog) -> None:
    now = utcnow()
    current = {(r.sf_object, r.sf_field): r for r in conn.execute(sa.select(field_table))}
    seen = set()
    for obj in catalog.ordered():
        for f in obj.fields:
            key = (f.sf_object, f.sf_field)
            seen.add(key)
            before = current.get(key)
            row = {"sf_type": f.sf_type, "table_name": obj.type.table,
                   "column_name": f.column if f.synced else None,
                   "direction": obj.type.direction, "synced": f.synced, "reason": f.reason,
                   "updated_at": now}
            if before is None:
                # A field appearing on an object synced before has history to fetch.
                row["needs_backfill"] = f.synced and any(k[0] == f.sf_object for k in current)
                conn.execute(field_table.insert().values(sf_object=f.sf_object,
                                                         sf_field=f.sf_field, **row))
            elif (before.column_name, before.synced, before.reason, before.sf_type) != (
                    row["column_name"], row["synced"], row["reason"], row["sf_type"]):
                newly_mapped = f.synced and (not before.synced
                                             or before.column_name != row["column_name"])
                row["needs_backfill"] = bool(before.needs_backfill or newly_mapped)
                conn.execute(field_table.update().where(
                    field_table.c.sf_object == f.sf_object,
                    field_table.c.sf_field == f.sf_field).values(**row))
    for key, before in current.items():
        if key not in seen and before.synced:
            conn.execute(field_table.update().where(
                field_table.c.sf_object == key[0], field_table.c.sf_field == key[1]).values(
                synced=False, reason="no longer visible to the sync user (column kept)",
                updated_at=now))


def match_database(engine: Engine, tables: dict[str, sa.Table]) -> dict[str, sa.Table]:
    """Read columns the way they are stored (widened types, columns kept after drift)."""
    inspector = sa.inspect(reader(engine))
    for table in tables.values():
        if not inspector.has_table(table.name):
            continue
        for info in inspector.get_columns(table.name):
            if info["name"] not in table.c:
                table.append_column(sa.Column(info["name"], info["type"]))
            elif isinstance(info["type"], (sa.Text, sa.String)) and not isinstance(
                    table.c[info["name"]].type, (sa.Text, sa.String)):
                table.c[info["name"]].type = sa.Text()
    return tables


# --- the describes the schema was built from --------------------------------------------------

def store_describes(engine: Engine, describes: dict[str, dict]) -> None:
    describe_t = BOOKS["describe"]
    with engine.begin() as conn:
        lock_schema(conn)  # two runs storing theirs at once would both insert every object
        conn.execute(describe_t.delete())  # the last describe: objects gone from it go too
        for name, describe in describes.items():
            conn.execute(describe_t.insert().values(
                sf_object=name, describe=json.dumps(describe), fetched_at=utcnow()))


def described_objects(engine: Engine) -> set[str]:
    """The objects the last describe found (those the sync user can see)."""
    describe_t = BOOKS["describe"]
    with reader(engine).connect() as conn:
        return set(conn.execute(sa.select(describe_t.c.sf_object)).scalars())


def stored_describes(engine: Engine) -> dict[str, dict]:
    describe_t = BOOKS["describe"]
    with reader(engine).connect() as conn:
        return {r.sf_object: json.loads(r.describe) for r in conn.execute(sa.select(describe_t))}


# --- marketing activities (written by marketing tools, logged to Salesforce by the push) ------

def marketing_activity_table(metadata: sa.MetaData) -> sa.Table:
    t = sa.Table(
        MARKETING_ACTIVITY, metadata,
        id_column(),
        sa.Column("person_id", sa.BigInteger, nullable=False, index=True),
        sa.Column("activity_type", sa.Text, nullable=False),
        sa.Column("occurred_at", UtcDateTime, nullable=False,
                  server_default=sa.func.current_timestamp()),
        sa.Column("detail", sa.Text),  # the form's name, the clicked link, ...
        # Filled by the sync: null (pending), pushed, suppressed, ignored, failed.
        sa.Column("push_status", sa.Text),
        sa.Column("sfdc_task_id", sa.Text),
        sa.Column("pushed_at", UtcDateTime))
    sa.Index("ix_marketing_activity_pending", t.c.occurred_at, t.c.id,
             sqlite_where=t.c.push_status.is_(None), postgresql_where=t.c.push_status.is_(None))
    return t


activity_t = marketing_activity_table(sa.MetaData())


def ensure_activity_table(engine: Engine) -> sa.Table:
    with engine.begin() as conn:
        lock_schema(conn)
        activity_t.create(conn, checkfirst=True)
        for index in activity_t.indexes:
            index.create(conn, checkfirst=True)
    return activity_t

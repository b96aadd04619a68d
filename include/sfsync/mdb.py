"""The marketing database: engine, synced tables, bookkeeping tables, schema evolution.

Works on SQLite (WAL, ``BEGIN IMMEDIATE`` writes, so parallel tasks queue instead of failing) and
PostgreSQL, through SQLAlchemy Core. The tables are derived from the catalog: a new Salesforce
field becomes a new column at the next cycle; a field that disappears keeps its column; a type
change never destroys data (the column is widened to text when the new type does not fit).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.sfsync.catalog import Catalog

BOOKKEEPING_PREFIX = "sfsync_"
PERSON_LINKED = {"campaign_member", "activity", "opportunity_contact_role"}


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


def utcnow() -> datetime:
    return datetime.now(UTC)


_last_stamp = datetime.min.replace(tzinfo=UTC)


def fresh_stamp() -> datetime:
    """Now, strictly later than every earlier stamp of this process. Every sync write sets
    ``sfsync_updated_at`` to a new value: that is how the capture triggers tell the sync's own
    writes apart, so a second write to a row must never reuse the first one's stamp."""
    global _last_stamp
    now = utcnow()
    if now <= _last_stamp:
        now = _last_stamp + timedelta(microseconds=1)
    _last_stamp = now
    return now


SQL_TYPES = {"text": sa.Text, "boolean": sa.Boolean, "integer": sa.BigInteger,
             "float": sa.Float, "date": sa.Date, "datetime": UtcDateTime}


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


def reader(engine: Engine) -> Engine:
    """The same database for reads only: on SQLite a read never waits for a writer."""
    return engine.execution_options(sfsync_read_only=True)


def create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 60})
        sa.event.listen(engine, "connect", _on_sqlite_connect)
        sa.event.listen(engine, "begin", _on_begin)
        return engine
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return sa.create_engine(url, pool_pre_ping=True)


def engine_for(conn_id: str) -> Engine:
    """The engine of an Airflow connection (``sqlite`` or ``postgres``)."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    if conn.conn_type == "sqlite":
        return create_engine(f"sqlite:///{conn.host}")
    if conn.conn_type in {"postgres", "postgresql"}:
        return create_engine(conn.get_hook().get_uri())
    raise ValueError(f"connection {conn_id!r} has type {conn.conn_type!r}; sfsync supports "
                     "'sqlite' and 'postgres'")


# --- bookkeeping tables ---------------------------------------------------------------------

def create_tables(engine: Engine, tables) -> None:
    """Create bookkeeping ``tables`` that are missing and add the columns a newer sfsync added
    to existing ones (nullable or with a server default, so existing rows stay valid)."""
    tables = list(tables)
    for table in tables:
        table.create(engine, checkfirst=True)
    with engine.begin() as conn:
        inspector = sa.inspect(conn)
        for table in tables:
            have = {c["name"] for c in inspector.get_columns(table.name)}
            for col in table.columns:
                if col.name in have:
                    continue
                ddl = f'ALTER TABLE "{table.name}" ADD COLUMN "{col.name}" ' \
                      f"{col.type.compile(dialect=engine.dialect)}"
                if col.server_default is not None:
                    ddl += f" DEFAULT {col.server_default.arg}"
                    ddl += "" if col.nullable else " NOT NULL"
                conn.exec_driver_sql(ddl)
        for table in tables:
            for index in table.indexes:
                index.create(conn, checkfirst=True)


def bookkeeping(metadata: sa.MetaData) -> dict[str, sa.Table]:
    t = {}
    t["watermark"] = sa.Table(
        "sfsync_watermark", metadata,
        sa.Column("sf_object", sa.Text, primary_key=True),
        sa.Column("cursor_modstamp", UtcDateTime),  # highest SystemModstamp loaded
        sa.Column("cursor_id", sa.Text),
        sa.Column("covered_until", UtcDateTime),  # latestDateCovered of the last probe
        sa.Column("full_copy_done", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("formula_refreshed_at", UtcDateTime),
        sa.Column("reconciled_at", UtcDateTime),
        sa.Column("updated_at", UtcDateTime))
    t["run"] = sa.Table(
        "sfsync_run", metadata,
        sa.Column("run_key", sa.Text, primary_key=True),
        sa.Column("dag_id", sa.Text), sa.Column("kind", sa.Text),
        sa.Column("status", sa.Text, nullable=False),  # running, success, failed
        sa.Column("started_at", UtcDateTime), sa.Column("ended_at", UtcDateTime),
        sa.Column("api_calls", sa.Integer, nullable=False, server_default="0"),
        sa.Column("message", sa.Text),
        sa.Column("push_stopped", sa.Text))  # why the run's push stopped (request limit)
    t["count"] = sa.Table(
        "sfsync_count", metadata,
        sa.Column("run_key", sa.Text, primary_key=True),
        sa.Column("sf_object", sa.Text, primary_key=True),
        sa.Column("operation", sa.Text, primary_key=True),  # pull, pull_deletes, ...
        *[sa.Column(n, sa.Integer, nullable=False, server_default="0")
          for n in ("new", "updated", "deleted", "skipped", "failed")],
        sa.Column("api_calls", sa.Integer, nullable=False, server_default="0"),
        sa.Column("recorded_at", UtcDateTime))
    t["error"] = sa.Table(
        "sfsync_error", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_key", sa.Text), sa.Column("sf_object", sa.Text),
        sa.Column("direction", sa.Text), sa.Column("sfdc_id", sa.Text),
        sa.Column("field", sa.Text), sa.Column("error_code", sa.Text),
        sa.Column("message", sa.Text), sa.Column("record", sa.Text),
        sa.Column("created_at", UtcDateTime))
    t["org_lock"] = sa.Table(
        "sfsync_org_lock", metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("org_id", sa.Text, nullable=False),
        sa.Column("instance_url", sa.Text),
        sa.Column("locked_at", UtcDateTime))
    t["duplicate"] = sa.Table(
        "sfsync_duplicate", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("person_id", sa.BigInteger, nullable=False),
        sa.Column("duplicate_of_person_id", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("detected_at", UtcDateTime),
        sa.UniqueConstraint("rule", "person_id", "duplicate_of_person_id",
                            name="uq_sfsync_duplicate"))
    t["field"] = sa.Table(
        "sfsync_field", metadata,
        sa.Column("sf_object", sa.Text, primary_key=True),
        sa.Column("sf_field", sa.Text, primary_key=True),
        sa.Column("sf_type", sa.Text),
        sa.Column("table_name", sa.Text), sa.Column("column_name", sa.Text),
        sa.Column("direction", sa.Text),
        sa.Column("synced", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("needs_backfill", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated_at", UtcDateTime))
    t["stage"] = sa.Table(
        "sfsync_stage", metadata,
        sa.Column("run_key", sa.Text, primary_key=True),
        sa.Column("sf_object", sa.Text, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("record", sa.Text, nullable=False))
    t["extract"] = sa.Table(
        "sfsync_extract", metadata,
        sa.Column("run_key", sa.Text, primary_key=True),
        sa.Column("sf_object", sa.Text, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),  # probed, extracted, loaded
        sa.Column("mode", sa.Text),  # idle, rest, bulk, full
        sa.Column("next_url", sa.Text),
        sa.Column("rows", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cursor_from", UtcDateTime),
        sa.Column("covered_until", UtcDateTime),
        sa.Column("deleted_ids", sa.Text),  # JSON list from the deleted endpoint
        sa.Column("api_calls", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", UtcDateTime))
    t["copy_window"] = sa.Table(
        "sfsync_copy_window", metadata,
        sa.Column("sf_object", sa.Text, primary_key=True),
        sa.Column("window_start", UtcDateTime, primary_key=True),
        sa.Column("window_end", UtcDateTime, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),  # running, done
        sa.Column("copied", sa.Integer, nullable=False, server_default="0"),
        sa.Column("resume_created", UtcDateTime), sa.Column("resume_id", sa.Text),
        sa.Column("started_at", UtcDateTime), sa.Column("finished_at", UtcDateTime))
    t["merge"] = sa.Table(
        "sfsync_merge", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("loser_person_id", sa.BigInteger, nullable=False),
        sa.Column("survivor_person_id", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text), sa.Column("sfdc_id", sa.Text),
        sa.Column("merged_at", UtcDateTime))
    t["conflict"] = sa.Table(
        "sfsync_conflict", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_key", sa.Text), sa.Column("table_name", sa.Text, nullable=False),
        sa.Column("row_id", sa.BigInteger, nullable=False),
        sa.Column("sf_object", sa.Text), sa.Column("sfdc_id", sa.Text),
        sa.Column("column_name", sa.Text, nullable=False), sa.Column("sf_field", sa.Text),
        sa.Column("marketing_value", sa.Text), sa.Column("salesforce_value", sa.Text),
        sa.Column("base_value", sa.Text),  # both sides had this before they changed it
        sa.Column("winner", sa.Text, nullable=False),  # marketing, salesforce
        sa.Column("detected_at", UtcDateTime))
    t["describe"] = sa.Table(
        "sfsync_describe", metadata,
        sa.Column("sf_object", sa.Text, primary_key=True),
        sa.Column("describe", sa.Text, nullable=False),
        sa.Column("fetched_at", UtcDateTime))
    return t


# --- synced tables ----------------------------------------------------------------------------

def _base_columns(table: str, *, two_way: bool) -> list[sa.Column]:
    # Two-way tables take rows that are not in Salesforce yet: no Salesforce id until pushed.
    cols = [sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                      autoincrement=True),
            sa.Column("sfdc_id", sa.Text, unique=True, nullable=two_way),
            sa.Column("sfdc_system_modstamp", UtcDateTime),
            sa.Column("sfdc_is_deleted", sa.Boolean, nullable=False, server_default=sa.false())]
    if table == "person":
        cols += [sa.Column("sfdc_type", sa.Text),  # 'Lead', 'Contact', or null: not in Salesforce
                 sa.Column("sfdc_lead_id", sa.Text, unique=True),
                 sa.Column("sfdc_contact_id", sa.Text, unique=True),
                 sa.Column("sfdc_account_id", sa.Text, index=True),
                 sa.Column("email", sa.Text, index=True)]
    if table == "activity":
        cols.append(sa.Column("sfdc_object", sa.Text))  # 'Task' or 'Event'
    cols += [sa.Column("sfsync_created_at", UtcDateTime),
             sa.Column("sfsync_updated_at", UtcDateTime)]
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


def build_metadata(catalog: Catalog) -> tuple[sa.MetaData, dict[str, sa.Table], dict]:
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
    return metadata, tables, bookkeeping(metadata)


def ensure_schema(engine: Engine, catalog: Catalog) -> tuple[dict[str, sa.Table], dict]:
    """Create what is missing, add new columns, widen incompatible ones; record the data
    dictionary. Returns (synced tables, bookkeeping tables) matching the database."""
    metadata, tables, books = build_metadata(catalog)
    metadata.create_all(engine)
    with engine.begin() as conn:
        inspector = sa.inspect(conn)
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
                elif _needs_widening(existing[col.name]["type"], col.type):
                    if engine.dialect.name == "postgresql":
                        conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ALTER COLUMN '
                                             f'"{col.name}" TYPE TEXT USING "{col.name}"::text')
                    col.type = sa.Text()  # keep what is stored: read and write it as text
            for name, info in existing.items():
                if name not in table.c:  # a field that stopped syncing keeps its column
                    table.append_column(sa.Column(name, info["type"]))
            for index in table.indexes:  # also on tables created before the index existed
                index.create(conn, checkfirst=True)
        _record_fields(conn, books["field"], catalog)
    from include.sfsync.capture import install_triggers  # capture builds on this module

    install_triggers(engine, [tables[name] for name in catalog.two_way_tables()])
    return tables, books


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

"""The sync's bookkeeping tables (``sfsync_*``): one definition each, created and evolved in
place (a newer sfsync adds columns to existing tables, never drops any)."""

from __future__ import annotations

import weakref

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.sfsync.store.engine import UtcDateTime, id_column, lock_schema

BOOKKEEPING_PREFIX = "sfsync_"
CHANGE_TABLE = "sfsync_change"
OUTBOX_TABLE = "sfsync_outbox"
TOMBSTONE_TABLE = "sfsync_tombstone"


def create_tables(engine: Engine, tables) -> None:
    """Create bookkeeping ``tables`` that are missing and add the columns a newer sfsync added
    to existing ones (nullable or with a server default, so existing rows stay valid)."""
    tables = list(tables)
    with engine.begin() as conn:
        lock_schema(conn)  # another worker may be creating them right now
        for table in tables:
            table.create(conn, checkfirst=True)
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
    """Every bookkeeping table, by short name (``run`` is ``sfsync_run``), in ``metadata``."""
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
        sa.Column("push_stopped", sa.Text),  # why the run's push stopped (request limit)
        # the org's daily API requests as the run's latest answer reported them
        sa.Column("org_api_used", sa.Integer), sa.Column("org_api_max", sa.Integer),
        sa.Column("api_usage_at", UtcDateTime),
        # what waited for Salesforce as the run ended (pending counts captured changes too)
        sa.Column("backlog_pending", sa.Integer), sa.Column("backlog_failed", sa.Integer),
        sa.Column("backlog_quarantined", sa.Integer), sa.Column("backlog_oldest_at", UtcDateTime),
        sa.Index("ix_sfsync_run_started", "started_at"))
    t["count"] = sa.Table(
        "sfsync_count", metadata,
        sa.Column("run_key", sa.Text, primary_key=True),
        sa.Column("sf_object", sa.Text, primary_key=True),
        sa.Column("operation", sa.Text, primary_key=True),  # pull, pull_deletes, ...
        *[sa.Column(n, sa.Integer, nullable=False, server_default="0")
          for n in ("new", "updated", "deleted", "skipped", "failed")],
        sa.Column("api_calls", sa.Integer, nullable=False, server_default="0"),
        sa.Column("recorded_at", UtcDateTime),
        sa.Index("ix_sfsync_count_recorded", "recorded_at"))
    t["error"] = sa.Table(
        "sfsync_error", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_key", sa.Text), sa.Column("sf_object", sa.Text),
        sa.Column("direction", sa.Text), sa.Column("sfdc_id", sa.Text),
        sa.Column("field", sa.Text), sa.Column("error_code", sa.Text),
        sa.Column("message", sa.Text), sa.Column("record", sa.Text),
        sa.Column("created_at", UtcDateTime),
        sa.Index("ix_sfsync_error_record", "sfdc_id"),
        sa.Index("ix_sfsync_error_run", "run_key"),
        sa.Index("ix_sfsync_error_code", "error_code"),
        # the console's grouping (record, field, code) read from the index alone
        sa.Index("ix_sfsync_error_issue", "sf_object", "sfdc_id", "field", "error_code",
                 "created_at", "id"))
    t["org_lock"] = sa.Table(
        "sfsync_org_lock", metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("org_id", sa.Text, nullable=False),
        sa.Column("instance_url", sa.Text),
        sa.Column("locked_at", UtcDateTime),
        sa.Column("org_name", sa.Text), sa.Column("is_sandbox", sa.Boolean))
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
        sa.Column("updated_at", UtcDateTime),
        # Set when the change query skips what earlier loads read (pull/extract.py): it reads
        # SystemModstamp >= since, and of the overlap before it only these ids (a JSON list).
        sa.Column("since", UtcDateTime),
        sa.Column("late_ids", sa.Text))
    # The records (Id, SystemModstamp) the loads processed that are still inside the overlap
    # window: the probe's ids are checked against them (pull/extract.py).
    t["seen"] = sa.Table(
        "sfsync_seen", metadata,
        sa.Column("sf_object", sa.Text, primary_key=True),
        sa.Column("sfdc_id", sa.Text, primary_key=True),
        sa.Column("stamp", UtcDateTime, nullable=False))
    t["copy_window"] = sa.Table(
        "sfsync_copy_window", metadata,
        sa.Column("sf_object", sa.Text, primary_key=True),
        sa.Column("window_start", UtcDateTime, primary_key=True),
        sa.Column("window_end", UtcDateTime, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),  # running, done
        sa.Column("copied", sa.Integer, nullable=False, server_default="0"),
        sa.Column("expected", sa.Integer),  # records the window holds, counted as it started
        sa.Column("resume_created", UtcDateTime), sa.Column("resume_id", sa.Text),
        sa.Column("started_at", UtcDateTime), sa.Column("finished_at", UtcDateTime),
        # Set by the run's plan (initial.start_copies), taken by the copy when it starts: the
        # window's count and the Bulk query job created up front for it (none below the
        # threshold); a retried copy counts again and starts a new job.
        sa.Column("planned_count", sa.Integer), sa.Column("bulk_job", sa.Text))
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
    t["change"] = change_table(metadata)
    t["outbox"] = outbox_table(metadata)
    t["tombstone"] = tombstone_table(metadata)
    # Rows each synced table held when the sync last loaded into it, and the last change the
    # triggers had captured then: rows lost without a trace are told from captured deletes.
    t["table_rows"] = sa.Table(
        "sfsync_table_rows", metadata,
        sa.Column("table_name", sa.Text, primary_key=True),
        sa.Column("row_count", sa.BigInteger, nullable=False),
        sa.Column("change_id", sa.BigInteger, nullable=False),
        sa.Column("counted_at", UtcDateTime, nullable=False))
    return t


def change_table(metadata: sa.MetaData) -> sa.Table:
    """``sfsync_change``: one row per captured insert, update or delete."""
    t = sa.Table(
        CHANGE_TABLE, metadata,
        id_column(),
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


def tombstone_table(metadata: sa.MetaData) -> sa.Table:
    """``sfsync_tombstone``: the Salesforce ids of synced rows deleted in the marketing database
    (written by the capture triggers, ``store.capture``) and the ``SystemModstamp`` of the
    version each row held, with the row's values. The pull does not bring such a record back
    until Salesforce has a newer version of it that differs from those values in a field the
    sync writes (a newer version that does not is the echo of the sync's own push)."""
    return sa.Table(
        TOMBSTONE_TABLE, metadata,
        sa.Column("table_name", sa.Text, primary_key=True),
        sa.Column("sfdc_id", sa.Text, primary_key=True),
        sa.Column("stamp", UtcDateTime),  # null: the row held no version of this record
        sa.Column("deleted_at", UtcDateTime, nullable=False),
        # JSON: the row as deleted (null in tombstones older than this column)
        sa.Column("row_values", sa.Text))


def outbox_table(metadata: sa.MetaData) -> sa.Table:
    """``sfsync_outbox``: one row per synced row with local changes not yet in Salesforce."""
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
        # The create journal (push/base.py): written before a create is sent, cleared once its
        # outcome is known; set, it means "this row may be in Salesforce already".
        sa.Column("create_key", sa.Text),  # the row's identity in Salesforce's key field
        sa.Column("create_body", sa.Text),  # JSON: the fields sent
        sa.Column("create_sent_at", UtcDateTime),
        sa.Column("first_changed_at", UtcDateTime),
        sa.Column("changed_at", UtcDateTime),
        sa.Column("updated_at", UtcDateTime),
        # Set while the entry is pending and its first change is older than
        # retention.stale_after_hours (outbox.mark_stale): shown by admin status, still pushed.
        sa.Column("stale_at", UtcDateTime))


BOOKS = bookkeeping(sa.MetaData())
change_t, outbox_t = BOOKS["change"], BOOKS["outbox"]


_READY: weakref.WeakSet = weakref.WeakSet()  # engines whose bookkeeping is set up already


def ensure_bookkeeping(engine: Engine) -> dict[str, sa.Table]:
    """Create (or evolve) every bookkeeping table, once per engine; returns them by short name."""
    if engine not in _READY:
        create_tables(engine, BOOKS.values())
        _READY.add(engine)
    return BOOKS

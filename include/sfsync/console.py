"""What the sync console shows (the Airflow UI plugin, ``admin status``): read-only views of the
marketing database's bookkeeping. Nothing here calls Salesforce; every figure is one the cycles
recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.sfsync.store.engine import reader
from include.sfsync.store.ledger import COUNT_KEYS
from include.sfsync.store.outbox import PENDING, outbox_t, retry_rows
from include.sfsync.store.tables import ensure_bookkeeping

# Field-dictionary columns, in the order the CSV export and the page show them.
DICTIONARY_COLUMNS = ("sf_object", "sf_field", "sf_type", "table_name", "column_name",
                      "direction", "synced", "reason")
ERROR_COLUMNS = ("created_at", "run_key", "sf_object", "direction", "sfdc_id", "field",
                 "error_code", "message")
LABELS = {"sf_object": "Object", "sf_field": "Field", "sf_type": "Type", "table_name": "Table",
          "column_name": "Column", "created_at": "When", "run_key": "Run",
          "sfdc_id": "Salesforce id", "error_code": "Code"}


@dataclass
class SyncState:
    """The sync at a glance: *Last synced*, *Sync in progress* or *Failed*, and the latest run."""

    org_id: str | None = None
    instance_url: str | None = None
    status: str = "never"  # never, running, failed, success (the latest run's)
    run_key: str | None = None
    dag_id: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    message: str | None = None  # why the latest run failed
    last_synced_at: datetime | None = None  # the latest successful run's end
    last_synced_run: str | None = None
    api_calls: int | None = None  # the latest run's
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # object -> New, Updated...
    backlog: dict[tuple[str, str], int] = field(default_factory=dict)  # (table, state) -> rows

    @property
    def headline(self) -> str:
        if self.status == "running":
            return "Sync in progress"
        if self.status == "failed":
            return "Failed"
        if self.last_synced_at is not None:
            return f"Last synced {self.last_synced_at:%Y-%m-%d %H:%M:%S} UTC"
        return "Never synced"


def sync_state(engine: Engine) -> SyncState:
    books = ensure_bookkeeping(engine)
    run_t, count_t, lock_t = books["run"], books["count"], books["org_lock"]
    state = SyncState()
    with reader(engine).connect() as conn:  # read-only: never waits for a running sync
        lock = conn.execute(sa.select(lock_t)).first()
        last = conn.execute(sa.select(run_t).order_by(run_t.c.started_at.desc()).limit(1)).first()
        done = conn.execute(sa.select(run_t).where(run_t.c.status == "success")
                            .order_by(run_t.c.ended_at.desc()).limit(1)).first()
        if last is not None:
            state.counts = {
                r.sf_object + ("" if r.operation == "pull" else f" ({r.operation})"):
                    {k: getattr(r, k) for k in COUNT_KEYS}
                for r in conn.execute(sa.select(count_t).where(count_t.c.run_key == last.run_key)
                                      .order_by(count_t.c.operation, count_t.c.sf_object))}
        if sa.inspect(conn).has_table(outbox_t.name):
            state.backlog = {(table, status): n for table, status, n in conn.execute(
                sa.select(outbox_t.c.table_name, outbox_t.c.status, sa.func.count())
                .group_by(outbox_t.c.table_name, outbox_t.c.status))}
    if lock is not None:
        state.org_id, state.instance_url = lock.org_id, lock.instance_url
    if last is not None:
        state.status, state.run_key, state.dag_id = last.status, last.run_key, last.dag_id
        state.started_at, state.ended_at = last.started_at, last.ended_at
        state.message, state.api_calls = last.message, last.api_calls
    if done is not None:
        state.last_synced_at, state.last_synced_run = done.ended_at, done.run_key
    return state


def error_rows(engine: Engine, *, limit: int | None = None) -> list[dict]:
    """Record-level errors, newest first."""
    error_t = ensure_bookkeeping(engine)["error"]
    query = sa.select(*[error_t.c[c] for c in ERROR_COLUMNS], error_t.c.id).order_by(
        error_t.c.created_at.desc(), error_t.c.id.desc())
    if limit is not None:
        query = query.limit(limit)
    with reader(engine).connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


REJECTED_COLUMNS = ("table_name", "row_id", "sfdc_id", "status", "attempts", "last_error",
                    "changed_at")


def rejected_changes(engine: Engine) -> list[dict]:
    """Local changes Salesforce refused (``failed``: tried again when the row changes;
    ``quarantined``: left alone until released), oldest first."""
    with reader(engine).connect() as conn:
        if not sa.inspect(conn).has_table(outbox_t.name):
            return []
        rows = [dict(r._mapping) for r in conn.execute(
            sa.select(*[outbox_t.c[c] for c in REJECTED_COLUMNS])
            .where(outbox_t.c.status != PENDING)
            .order_by(outbox_t.c.changed_at, outbox_t.c.table_name, outbox_t.c.row_id))]
        for name in {r["table_name"] for r in rows}:  # the rows' Salesforce ids (not deleted)
            table = sa.table(name, sa.column("id"), sa.column("sfdc_id"))
            ids = dict(conn.execute(sa.select(table.c.id, table.c.sfdc_id).where(
                table.c.id.in_([r["row_id"] for r in rows if r["table_name"] == name]))).all())
            for r in rows:
                if r["table_name"] == name and r["sfdc_id"] is None:
                    r["sfdc_id"] = ids.get(r["row_id"])
        return rows


def release(engine: Engine, *, table: str | None = None, row_id: int | None = None) -> int:
    """Failed or quarantined changes (of one row, or all quarantined) become pending again: the
    next cycle pushes them (``admin release``, the console's Retry)."""
    with engine.begin() as conn:
        if table is not None:
            return retry_rows(conn, table, [row_id])
        return retry_rows(conn, None, quarantined_only=True)


def dictionary_rows(engine: Engine) -> list[dict]:
    """Every field the sync user can see, where it goes and why (``sfsync_field``)."""
    field_t = ensure_bookkeeping(engine)["field"]
    with reader(engine).connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            sa.select(*[field_t.c[c] for c in DICTIONARY_COLUMNS])
            .order_by(field_t.c.sf_object, field_t.c.sf_field))]

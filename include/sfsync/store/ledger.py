"""The run ledger in the marketing database: runs and their status, per-object counts, API
calls, record errors, the org lock and the watermarks' maintenance stamps."""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from include.sfsync.errors import OrgMismatchError
from include.sfsync.store.engine import lock_table, utcnow
from include.sfsync.store.tables import BOOKS, ensure_bookkeeping

log = logging.getLogger(__name__)

COUNT_KEYS = ("new", "updated", "deleted", "skipped", "failed")
run_t, count_t, error_t = BOOKS["run"], BOOKS["count"], BOOKS["error"]
lock_t, watermark_t = BOOKS["org_lock"], BOOKS["watermark"]


# --- runs -------------------------------------------------------------------------------------

def start_run(engine: Engine, run_key: str, dag_id: str, kind: str) -> None:
    with engine.begin() as conn:
        if conn.execute(sa.select(run_t.c.run_key).where(run_t.c.run_key == run_key)).first():
            conn.execute(run_t.update().where(run_t.c.run_key == run_key).values(
                status="running", ended_at=None))
        else:
            conn.execute(run_t.insert().values(run_key=run_key, dag_id=dag_id, kind=kind,
                                               status="running", started_at=utcnow()))


def add_api_calls(engine: Engine, run_key: str, calls: int,
                  usage: tuple[int, int] | None = None) -> None:
    """Add a step's API calls to its run, with the org's daily usage (used, max) that the
    step's latest answer reported (the console's API usage chart: no call of its own)."""
    values = {"api_calls": run_t.c.api_calls + calls} if calls else {}
    if usage is not None:
        values.update(org_api_used=usage[0], org_api_max=usage[1], api_usage_at=utcnow())
    if values:
        with engine.begin() as conn:
            conn.execute(run_t.update().where(run_t.c.run_key == run_key).values(**values))


def record_backlog(conn: Connection, run_key: str, backlog: dict) -> None:
    """What waits for Salesforce as the run ends (``outbox.backlog``): the backlog chart."""
    conn.execute(run_t.update().where(run_t.c.run_key == run_key).values(
        backlog_pending=backlog["pending"], backlog_failed=backlog["failed"],
        backlog_quarantined=backlog["quarantined"], backlog_oldest_at=backlog["oldest_at"]))


def end_run(conn: Connection, run_key: str, status: str, message: str | None = None) -> None:
    values = {"status": status, "ended_at": utcnow()}
    if message is not None:
        values["message"] = message[:2000]
    conn.execute(run_t.update().where(run_t.c.run_key == run_key).values(**values))


def mark_failed(engine: Engine, run_key: str, message: str) -> None:
    """Record a failed run (sync status "Failed"); a cause recorded before is kept."""
    ensure_bookkeeping(engine)
    with engine.begin() as conn:
        conn.execute(run_t.update().where(
            run_t.c.run_key == run_key,
            sa.or_(run_t.c.status != "failed", run_t.c.message.is_(None))).values(
            status="failed", ended_at=utcnow(), message=message[:2000]))


def run_api_calls(conn: Connection, run_key: str) -> int | None:
    return conn.execute(sa.select(run_t.c.api_calls).where(run_t.c.run_key == run_key)).scalar()


def push_stopped(conn: Connection, run_key: str) -> str | None:
    """Why this run's push stopped (an earlier step hit the request limit), or None."""
    return conn.execute(sa.select(run_t.c.push_stopped).where(run_t.c.run_key == run_key)
                        ).scalar()


def stop_push(engine: Engine, run_key: str, reason: str) -> None:
    with engine.begin() as conn:
        conn.execute(run_t.update().where(run_t.c.run_key == run_key).values(push_stopped=reason))


# --- counts and errors ------------------------------------------------------------------------

def _count_key(run_key: str, sf_object: str, operation: str):
    return (count_t.c.run_key == run_key, count_t.c.sf_object == sf_object,
            count_t.c.operation == operation)


def record_counts(conn: Connection, run_key: str, sf_object: str, operation: str,
                  counts: dict[str, int], api_calls: int = 0) -> None:
    """Set one object's counts of one operation (pull, copy, push, ...) for the run."""
    key = _count_key(run_key, sf_object, operation)
    values = {**{k: counts.get(k, 0) for k in COUNT_KEYS}, "api_calls": api_calls,
              "recorded_at": utcnow()}
    if conn.execute(sa.select(count_t.c.run_key).where(*key)).first():
        conn.execute(count_t.update().where(*key).values(**values))
    else:
        conn.execute(count_t.insert().values(run_key=run_key, sf_object=sf_object,
                                             operation=operation, **values))


def add_counts(conn: Connection, run_key: str, sf_object: str, operation: str,
               counts: Counter) -> None:
    """Add to one object's counts of one operation for the run."""
    key = _count_key(run_key, sf_object, operation)
    if conn.execute(sa.select(count_t.c.run_key).where(*key)).first() is None:
        record_counts(conn, run_key, sf_object, operation, dict(counts))
        return
    conn.execute(count_t.update().where(*key).values(
        **{k: count_t.c[k] + int(counts[k]) for k in COUNT_KEYS}, recorded_at=utcnow()))


def recorded_counts(conn: Connection, run_key: str, operation: str, sf_object: str | None = None
                    ) -> dict[str, dict[str, int]]:
    """{object: {new, updated, ...}} of one operation of the run (of one object)."""
    query = sa.select(count_t).where(count_t.c.run_key == run_key,
                                     count_t.c.operation == operation)
    if sf_object is not None:
        query = query.where(count_t.c.sf_object == sf_object)
    return {r.sf_object: {k: getattr(r, k) for k in COUNT_KEYS} for r in conn.execute(query)}


def record_error(conn: Connection, run_key: str, sf_object: str, outcome, *,
                 sfdc_id: str | None, record: dict | None, direction: str = "push") -> None:
    """An ``sfsync_error`` row for a record Salesforce rejected (``outcome``: code, message,
    fields)."""
    conn.execute(error_t.insert().values(
        run_key=run_key, sf_object=sf_object, direction=direction, sfdc_id=sfdc_id,
        field=",".join(outcome.fields) or None, error_code=outcome.code,
        message=(outcome.message or "")[:4000],
        record=json.dumps(record, default=str) if record is not None else None,
        created_at=utcnow()))


def rejections(conn: Connection, run_key: str) -> list[str]:
    """The run's record errors, one line each: object, record, Salesforce's code and message."""
    return [f"{r.sf_object} {r.sfdc_id or '(new)'}: {r.error_code}: {r.message}"
            for r in conn.execute(sa.select(error_t).where(error_t.c.run_key == run_key)
                                  .order_by(error_t.c.id))]


# --- the org lock -----------------------------------------------------------------------------

def check_org(engine: Engine, client) -> str:
    """Lock the marketing database to the first org it syncs with; refuse any other.
    ``client``: the Salesforce client (``organization()``, ``org_id_prefix``, ``instance_url``)."""
    with engine.begin() as conn:
        lock_table(conn, lock_t.name)  # the first runs, on two workers, lock it once
        lock = conn.execute(sa.select(lock_t).where(lock_t.c.id == 1)).first()
        if lock is None:
            org = client.organization()
            conn.execute(lock_t.insert().values(
                id=1, org_id=org["Id"], instance_url=client.instance_url, locked_at=utcnow(),
                org_name=org.get("Name"), is_sandbox=org.get("IsSandbox")))
            log.info("marketing database locked to Salesforce org %s", org["Id"])
            return org["Id"]
    if lock.org_id[:15] != client.org_id_prefix:
        raise OrgMismatchError(
            f"this marketing database belongs to Salesforce org {lock.org_id} "
            f"({lock.instance_url}), but connection points at org {client.org_id_prefix} "
            f"({client.instance_url}). Refusing to mix two orgs' data. To re-point it "
            "deliberately: python -m include.sfsync.admin repoint-org --org-id <new org id> --yes")
    if lock.org_name is None:  # locked by an older sfsync: name the org once
        org = client.organization()
        with engine.begin() as conn:
            conn.execute(lock_t.update().where(lock_t.c.id == 1).values(
                org_name=org.get("Name"), is_sandbox=org.get("IsSandbox")))
    return lock.org_id


def repoint_org(engine: Engine, org_id: str) -> None:
    """Deliberately attach this marketing database to another org (documented admin command)."""
    ensure_bookkeeping(engine)
    with engine.begin() as conn:
        conn.execute(lock_t.delete())
        conn.execute(lock_t.insert().values(id=1, org_id=org_id, locked_at=utcnow(),
                                            instance_url="(re-pointed by admin)"))
        conn.execute(watermark_t.delete())  # the new org's changes start from scratch
        conn.execute(BOOKS["seen"].delete())


# --- watermarks -------------------------------------------------------------------------------

def stamp_watermark(engine: Engine, sf_object: str, **values) -> None:
    """Set maintenance stamps (``formula_refreshed_at``, ``reconciled_at``) of one object."""
    with engine.begin() as conn:
        conn.execute(watermark_t.update().where(watermark_t.c.sf_object == sf_object)
                     .values(**values))


def note_seen(conn: Connection, sf_object: str, stamps: dict[str, datetime]) -> None:
    """Record in ``sfsync_seen`` that the pull processed these versions (Id -> SystemModstamp):
    loaded them, or left them out by a sync filter. Write it in (or after) the transaction
    that did so, never before: a version noted here is not read again in the overlap window."""
    seen_t = BOOKS["seen"]
    ids = sorted(stamps)
    for start in range(0, len(ids), 500):
        conn.execute(seen_t.delete().where(seen_t.c.sf_object == sf_object,
                                           seen_t.c.sfdc_id.in_(ids[start:start + 500])))
    if ids:
        conn.execute(seen_t.insert(), [{"sf_object": sf_object, "sfdc_id": i, "stamp": stamps[i]}
                                       for i in ids])

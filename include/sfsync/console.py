"""What the sync console shows (the Airflow UI plugin, ``admin status``): read-only views of the
marketing database's bookkeeping. Nothing here calls Salesforce; every figure is one the cycles
recorded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from itertools import pairwise

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.sfsync.store import outbox
from include.sfsync.store.engine import reader
from include.sfsync.store.ledger import COUNT_KEYS
from include.sfsync.store.outbox import PENDING, outbox_t, retry_rows
from include.sfsync.store.tables import BOOKS, ensure_bookkeeping

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
    org_name: str | None = None
    is_sandbox: bool | None = None
    status: str = "never"  # never, running, failed, success (the latest run's)
    run_key: str | None = None
    dag_id: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    message: str | None = None  # why the latest run failed
    last_synced_at: datetime | None = None  # the latest successful run's end
    last_synced_run: str | None = None
    api_calls: int | None = None  # the latest run's
    rejected: int = 0  # changes Salesforce rejected in the latest run
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # object -> New, Updated...
    backlog: dict[tuple[str, str], int] = field(default_factory=dict)  # (table, state) -> rows
    # pending changes flagged stale (retention.stale_after_hours), and the oldest of them
    stale: int = 0
    stale_entries: list[dict] = field(default_factory=list)

    @property
    def headline(self) -> str:
        if self.status == "running":
            return "Sync in progress"
        if self.status == "failed":
            return "Failed"
        if self.last_synced_at is not None:
            return f"Last synced {self.last_synced_at:%Y-%m-%d %H:%M:%S} UTC"
        return "Never synced"


def sync_state(engine: Engine, *, stale_shown: int = 10) -> SyncState:
    """The sync at a glance (``stale_shown``: how many stale pending changes to name)."""
    books = ensure_bookkeeping(engine)
    run_t, count_t, lock_t = books["run"], books["count"], books["org_lock"]
    error_t = books["error"]
    state = SyncState()
    with reader(engine).connect() as conn:  # read-only: never waits for a running sync
        lock = conn.execute(sa.select(lock_t)).first()
        last = conn.execute(sa.select(run_t).order_by(run_t.c.started_at.desc()).limit(1)).first()
        done = conn.execute(sa.select(run_t).where(run_t.c.status == "success")
                            .order_by(run_t.c.ended_at.desc()).limit(1)).first()
        if last is not None:
            state.rejected = conn.execute(sa.select(sa.func.count()).where(
                error_t.c.run_key == last.run_key)).scalar()
            state.counts = {
                r.sf_object + ("" if r.operation == "pull" else f" ({r.operation})"):
                    {k: getattr(r, k) for k in COUNT_KEYS}
                for r in conn.execute(sa.select(count_t).where(count_t.c.run_key == last.run_key)
                                      .order_by(count_t.c.operation, count_t.c.sf_object))}
        if sa.inspect(conn).has_table(outbox_t.name):
            state.backlog = {(table, status): n for table, status, n in conn.execute(
                sa.select(outbox_t.c.table_name, outbox_t.c.status, sa.func.count())
                .group_by(outbox_t.c.table_name, outbox_t.c.status))}
            state.stale, rows = outbox.stale_entries(conn, limit=stale_shown)
            state.stale_entries = [dict(r._mapping) for r in rows]
    if lock is not None:
        state.org_id, state.instance_url = lock.org_id, lock.instance_url
        state.org_name, state.is_sandbox = lock.org_name, lock.is_sandbox
    if last is not None:
        state.status, state.run_key, state.dag_id = last.status, last.run_key, last.dag_id
        state.started_at, state.ended_at = last.started_at, last.ended_at
        state.message, state.api_calls = last.message, last.api_calls
    if done is not None:
        state.last_synced_at, state.last_synced_run = done.ended_at, done.run_key
    return state


def error_export(engine: Engine, batch: int = 5000) -> Iterator[list[tuple]]:
    """Every record error (``ERROR_COLUMNS``), newest first, in batches: the CSV export
    streams them (a server-side cursor on PostgreSQL) rather than build 100,000 dicts."""
    error_t = ensure_bookkeeping(engine)["error"]
    with reader(engine).connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch).execute(
            sa.select(*[error_t.c[c] for c in ERROR_COLUMNS])
            .order_by(error_t.c.created_at.desc(), error_t.c.id.desc()))
        for rows in result.partitions():
            yield [tuple(r) for r in rows]


REJECTED_COLUMNS = ("table_name", "row_id", "sfdc_id", "status", "attempts", "last_error",
                    "changed_at")


def rejected_changes(engine: Engine, *, limit: int | None = None) -> list[dict]:
    """Local changes Salesforce refused (``failed``: tried again when the row changes;
    ``quarantined``: left alone until released), oldest first (the first ``limit``)."""
    with reader(engine).connect() as conn:
        if not sa.inspect(conn).has_table(outbox_t.name):
            return []
        rows = [dict(r._mapping) for r in conn.execute(
            sa.select(*[outbox_t.c[c] for c in REJECTED_COLUMNS])
            .where(outbox_t.c.status != PENDING)
            .order_by(outbox_t.c.changed_at, outbox_t.c.table_name, outbox_t.c.row_id)
            .limit(limit))]
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


# --- API usage, objects, backlog and throughput ----------------------------------------------

def _runs_since(conn, since: datetime, *columns) -> pd.DataFrame:
    run_t = BOOKS["run"]
    rows = conn.execute(sa.select(*columns).where(run_t.c.started_at >= since)).all()
    return pd.DataFrame(rows, columns=[c.name for c in columns])


def api_usage(engine: Engine, *, days: int = 7, now: datetime | None = None) -> dict:
    """The org's daily API requests as the latest answer reported them (used, max, when), and
    per day of the last ``days``: the sync's own calls and the org's highest usage seen."""
    run_t = BOOKS["run"]
    now = now or datetime.now(UTC)
    first = datetime.combine(now.date() - timedelta(days=days - 1), time(), UTC)
    with reader(engine).connect() as conn:
        latest = conn.execute(sa.select(run_t.c.org_api_used, run_t.c.org_api_max,
                                        run_t.c.api_usage_at)
                              .where(run_t.c.api_usage_at.is_not(None))
                              .order_by(run_t.c.api_usage_at.desc()).limit(1)).first()
        runs = _runs_since(conn, first, run_t.c.started_at, run_t.c.api_calls,
                           run_t.c.org_api_used)
    per_day = pd.DataFrame({"sync_calls": 0, "org_peak": pd.NA},
                           index=pd.date_range(first.date(), now.date(), freq="D").date)
    if not runs.empty:
        runs["day"] = pd.to_datetime(runs["started_at"], utc=True).dt.date
        grouped = runs.groupby("day").agg(sync_calls=("api_calls", "sum"),
                                          org_peak=("org_api_used", "max"))
        per_day.update(grouped)
    days_out = [{"day": day, "sync_calls": int(r.sync_calls),
                 "org_peak": None if pd.isna(r.org_peak) else int(r.org_peak)}
                for day, r in per_day.iterrows()]
    return {"used": latest.org_api_used if latest else None,
            "max": latest.org_api_max if latest else None,
            "at": latest.api_usage_at if latest else None,
            "today_sync_calls": days_out[-1]["sync_calls"], "days": days_out}


def object_rows(engine: Engine, *, days: int = 5, now: datetime | None = None) -> list[dict]:
    """Per synced object: records in the marketing database, the last change loaded, how far
    behind Salesforce it is, and New/Updated/Deleted/Skipped/Failed per day (last ``days``)."""
    books = ensure_bookkeeping(engine)
    field_t, mark_t, count_t = books["field"], books["watermark"], books["count"]
    now = now or datetime.now(UTC)
    first = datetime.combine(now.date() - timedelta(days=days - 1), time(), UTC)
    with reader(engine).connect() as conn:
        tables = dict(conn.execute(sa.select(field_t.c.sf_object, sa.func.min(field_t.c.table_name))
                                   .where(field_t.c.synced).group_by(field_t.c.sf_object)).all())
        marks = {r.sf_object: r for r in conn.execute(sa.select(mark_t))}
        counts = pd.DataFrame(conn.execute(
            sa.select(count_t.c.sf_object, count_t.c.recorded_at,
                      *[count_t.c[k] for k in COUNT_KEYS])
            .where(count_t.c.recorded_at >= first)).all(),
            columns=["sf_object", "recorded_at", *COUNT_KEYS])
        existing = set(sa.inspect(conn).get_table_names())
        sizes = {}
        for table in sorted(set(tables.values()) & existing):
            sizes[table] = conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))
                                        ).scalar()
    day_index = list(pd.date_range(first.date(), now.date(), freq="D").date)
    per_day: dict[str, pd.DataFrame] = {}
    if not counts.empty:
        counts["day"] = pd.to_datetime(counts["recorded_at"], utc=True).dt.date
        for name, group in counts.groupby("sf_object"):
            per_day[name] = group.groupby("day")[list(COUNT_KEYS)].sum().reindex(
                day_index, fill_value=0)
    rows = []
    for sf_object in sorted(set(tables) | set(marks)):
        mark = marks.get(sf_object)
        covered = mark.covered_until if mark is not None else None
        frame = per_day.get(sf_object)
        rows.append({
            "sf_object": sf_object, "table": tables.get(sf_object),
            "records": sizes.get(tables.get(sf_object)),
            "last_change": mark.cursor_modstamp if mark is not None else None,
            "lag_seconds": (now - covered).total_seconds() if covered else None,
            "days": [{"day": d, **({k: int(frame.at[d, k]) for k in COUNT_KEYS}
                                   if frame is not None else dict.fromkeys(COUNT_KEYS, 0))}
                     for d in day_index]})
    return rows


@dataclass
class Throughput:
    """The push backlog and the records moved, per incremental cycle and per hour."""

    cycles: pd.DataFrame  # started_at, pending, failed, quarantined, pulled, pushed
    hours: pd.DataFrame  # hour, pulled, pushed
    now: dict  # outbox.backlog now, plus pull_waiting (extracted, not loaded yet)
    growing: bool  # the pending backlog grew over each of the last GROWING_CYCLES cycles
    eta_seconds: float | None  # to drain the pending backlog at the last hour's push rate


GROWING_CYCLES = 3


def throughput(engine: Engine, *, hours: int = 24, now: datetime | None = None) -> Throughput:
    books = ensure_bookkeeping(engine)
    run_t, count_t, extract_t = books["run"], books["count"], books["extract"]
    now = now or datetime.now(UTC)
    since = now - timedelta(hours=hours)
    moved = count_t.c.new + count_t.c.updated + count_t.c.deleted
    pulled = sa.func.sum(sa.case((count_t.c.operation.like("pull%"), moved), else_=0))
    pushed = sa.func.sum(sa.case((count_t.c.operation.like("pull%"), 0),
                                 (count_t.c.operation == "copy", 0), else_=moved))
    with reader(engine).connect() as conn:
        cycles = pd.DataFrame(conn.execute(
            sa.select(run_t.c.started_at, run_t.c.backlog_pending, run_t.c.backlog_failed,
                      run_t.c.backlog_quarantined, sa.func.coalesce(pulled, 0),
                      sa.func.coalesce(pushed, 0))
            .select_from(run_t.outerjoin(count_t, count_t.c.run_key == run_t.c.run_key))
            .where(run_t.c.started_at >= since, run_t.c.kind == "incremental",
                   run_t.c.status != "running")
            .group_by(run_t.c.run_key, run_t.c.started_at, run_t.c.backlog_pending,
                      run_t.c.backlog_failed, run_t.c.backlog_quarantined)
            .order_by(run_t.c.started_at)).all(),
            columns=["started_at", "pending", "failed", "quarantined", "pulled", "pushed"])
        current = outbox.backlog(conn) if sa.inspect(conn).has_table(outbox_t.name) else {
            "pending": 0, "failed": 0, "quarantined": 0, "oldest_at": None}
        current["pull_waiting"] = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(extract_t.c.rows), 0))
            .where(extract_t.c.status != "loaded")).scalar()
    cycles["started_at"] = pd.to_datetime(cycles["started_at"], utc=True)
    hourly = (cycles.set_index("started_at")[["pulled", "pushed"]].resample("h").sum()
              .reset_index().rename(columns={"started_at": "hour"})) if not cycles.empty \
        else pd.DataFrame(columns=["hour", "pulled", "pushed"])
    pending = cycles["pending"].dropna().tolist()
    recent = pending[-(GROWING_CYCLES + 1):]
    growing = len(recent) == GROWING_CYCLES + 1 and all(b > a for a, b in pairwise(recent))
    last_hour = cycles[cycles["started_at"] >= now - timedelta(hours=1)]
    rate = last_hour["pushed"].sum() / 3600.0  # records per second
    eta = current["pending"] / rate if rate > 0 and current["pending"] else None
    return Throughput(cycles, hourly, current, growing, eta)


# --- conflicts, duplicates, failed runs -------------------------------------------------------

CONFLICT_COLUMNS = ("detected_at", "sf_object", "sfdc_id", "column_name", "marketing_value",
                    "salesforce_value", "base_value", "winner")


def conflict_rows(engine: Engine, *, limit: int = 1000, row_id: int | None = None) -> list[dict]:
    conflict_t = ensure_bookkeeping(engine)["conflict"]
    query = sa.select(conflict_t).order_by(conflict_t.c.detected_at.desc(),
                                           conflict_t.c.id.desc()).limit(limit)
    if row_id is not None:
        query = query.where(conflict_t.c.table_name == "person", conflict_t.c.row_id == row_id)
    with reader(engine).connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def duplicate_rows(engine: Engine, *, limit: int = 1000) -> list[dict]:
    """Duplicate people the dedupe rules found, with both people's e-mail and Salesforce ids."""
    duplicate_t = ensure_bookkeeping(engine)["duplicate"]
    with reader(engine).connect() as conn:
        if not sa.inspect(conn).has_table("person"):
            return []
        person = sa.table("person", sa.column("id"), sa.column("email"),
                          sa.column("sfdc_type"), sa.column("sfdc_lead_id"),
                          sa.column("sfdc_contact_id"))
        one, other = person.alias("one"), person.alias("other")
        rows = conn.execute(
            sa.select(duplicate_t, one.c.email, one.c.sfdc_type,
                      sa.func.coalesce(one.c.sfdc_contact_id, one.c.sfdc_lead_id).label("sfdc_id"),
                      other.c.email.label("duplicate_of_email"),
                      sa.func.coalesce(other.c.sfdc_contact_id, other.c.sfdc_lead_id)
                      .label("duplicate_of_sfdc_id"))
            .outerjoin(one, one.c.id == duplicate_t.c.person_id)
            .outerjoin(other, other.c.id == duplicate_t.c.duplicate_of_person_id)
            .order_by(duplicate_t.c.detected_at.desc(), duplicate_t.c.id.desc()).limit(limit))
        return [dict(r._mapping) for r in rows]


def failed_runs(engine: Engine, *, limit: int = 200) -> list[dict]:
    """Job-level failures: runs that failed, newest first, with their cause."""
    run_t = ensure_bookkeeping(engine)["run"]
    with reader(engine).connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            sa.select(run_t.c.run_key, run_t.c.dag_id, run_t.c.started_at, run_t.c.ended_at,
                      run_t.c.message).where(run_t.c.status == "failed")
            .order_by(run_t.c.started_at.desc()).limit(limit))]


# --- record errors, grouped ------------------------------------------------------------------

ISSUE_COLUMNS = ("sf_object", "sfdc_id", "email", "field", "error_code", "message",
                 "first_seen", "last_seen", "attempts", "status")


def error_issues(engine: Engine, *, sf_object: str = "", code: str = "", q: str = "",
                 sfdc_ids: list[str] | None = None, limit: int = 500) -> list[dict]:
    """Record errors, one row per record, field and code: Salesforce's latest message, first
    and last seen, attempts, the person's e-mail and whether the change still waits
    (``failed``/``quarantined``) or no longer does (``cleared``). Newest first."""
    error_t = ensure_bookkeeping(engine)["error"]
    where = []
    if sf_object:
        where.append(error_t.c.sf_object == sf_object)
    if code:
        where.append(error_t.c.error_code == code)
    if q:
        where.append(sa.or_(error_t.c.sfdc_id == q, error_t.c.message.contains(q),
                            error_t.c.record.contains(q)))
    if sfdc_ids is not None:
        where.append(error_t.c.sfdc_id.in_(sfdc_ids))
    key = (error_t.c.sf_object, error_t.c.sfdc_id, error_t.c.field, error_t.c.error_code)
    grouped = (sa.select(*key, sa.func.min(error_t.c.created_at).label("first_seen"),
                         sa.func.max(error_t.c.created_at).label("last_seen"),
                         sa.func.count().label("attempts"), sa.func.max(error_t.c.id).label("latest"))
               .where(*where).group_by(*key).order_by(sa.desc("last_seen")).limit(limit))
    with reader(engine).connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(grouped)]
        latest = {r.id: r for r in conn.execute(
            sa.select(error_t.c.id, error_t.c.message, error_t.c.record)
            .where(error_t.c.id.in_([r["latest"] for r in rows])))} if rows else {}
        emails = _emails(conn, {r["sfdc_id"] for r in rows if r["sfdc_id"]})
    waiting = {r["sfdc_id"]: r["status"] for r in rejected_changes(engine) if r["sfdc_id"]}
    for r in rows:
        last = latest.get(r.pop("latest"))
        r["message"] = last.message if last is not None else None
        r["email"] = emails.get(r["sfdc_id"]) or _record_email(last.record if last else None)
        r["status"] = waiting.get(r["sfdc_id"], "cleared" if r["sfdc_id"] else "failed")
    return rows


def error_filters(engine: Engine) -> dict[str, list[str]]:
    """The objects and codes the record errors have (the Errors page's filter choices)."""
    error_t = ensure_bookkeeping(engine)["error"]
    with reader(engine).connect() as conn:
        return {name: [v for (v,) in conn.execute(sa.select(col).distinct().order_by(col))
                       if v is not None]
                for name, col in (("objects", error_t.c.sf_object),
                                  ("codes", error_t.c.error_code))}


def _emails(conn, sfdc_ids: set[str]) -> dict[str, str]:
    if not sfdc_ids or not sa.inspect(conn).has_table("person"):
        return {}
    person = sa.table("person", sa.column("email"), sa.column("sfdc_lead_id"),
                      sa.column("sfdc_contact_id"))
    found = {}
    for col in (person.c.sfdc_lead_id, person.c.sfdc_contact_id):
        found.update(conn.execute(sa.select(col, person.c.email)
                                  .where(col.in_(sorted(sfdc_ids)))).all())
    return found


def _record_email(record: str | None) -> str | None:
    try:
        return (json.loads(record) or {}).get("Email") if record else None
    except (ValueError, AttributeError):
        return None


# --- people ----------------------------------------------------------------------------------

PERSON_FIELDS = ("id", "email", "first_name", "last_name", "company", "sfdc_type",
                 "sfdc_lead_id", "sfdc_contact_id", "sfdc_account_id", "sfdc_is_deleted",
                 "sfdc_system_modstamp", "sfsync_updated_at")


def _stored_table(conn, name: str) -> sa.TableClause:
    """A synced table with the columns it has in the database (they vary with the org)."""
    return sa.table(name, *[sa.column(c["name"], c["type"])
                            for c in sa.inspect(conn).get_columns(name)])


def find_people(engine: Engine, q: str, *, limit: int = 20) -> list[dict]:
    """People by e-mail (exact, then case-insensitive), marketing id or Salesforce id."""
    q = q.strip()
    with reader(engine).connect() as conn:
        if not q or not sa.inspect(conn).has_table("person"):
            return []
        person = _stored_table(conn, "person")
        columns = [person.c[c] for c in PERSON_FIELDS if c in person.c]
        tries = [person.c.email == q, person.c.sfdc_lead_id == q, person.c.sfdc_contact_id == q]
        if q.isdigit():
            tries.insert(0, person.c.id == int(q))
        if "@" in q:
            tries.append(sa.func.lower(person.c.email) == q.lower())  # a scan: the last resort
        for where in tries:
            rows = conn.execute(sa.select(*columns).where(where).order_by(person.c.id)
                                .limit(limit)).all()
            if rows:
                return [dict(r._mapping) for r in rows]
    return []


def person_details(engine: Engine, person: dict) -> dict:
    """What the People page shows about one person: pending changes, errors, conflicts and
    campaign memberships."""
    ids = {person.get("sfdc_lead_id"), person.get("sfdc_contact_id")} - {None}
    with reader(engine).connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
        pending = [dict(r._mapping) for r in conn.execute(
            sa.select(outbox_t.c.status, outbox_t.c.op, outbox_t.c.columns, outbox_t.c.attempts,
                      outbox_t.c.last_error, outbox_t.c.changed_at)
            .where(outbox_t.c.table_name == "person", outbox_t.c.row_id == person["id"]))] \
            if outbox_t.name in names else []
        change_t = BOOKS["change"]
        if change_t.name in names:  # captured, not folded into the outbox yet
            pending += [{"status": PENDING, "op": r.op, "columns": r.columns, "attempts": 0,
                         "last_error": None, "changed_at": r.changed_at}
                        for r in conn.execute(sa.select(change_t).where(
                            change_t.c.table_name == "person",
                            change_t.c.row_id == person["id"],
                            change_t.c.processed_at.is_(None)).order_by(change_t.c.id))]
        memberships = []
        if "campaign_member" in names:
            member = _stored_table(conn, "campaign_member")
            query = sa.select(member).where(member.c.person_id == person["id"])
            if "campaign" in names and "sfdc_campaign_id" in member.c:
                campaign = _stored_table(conn, "campaign")
                if "name" in campaign.c:
                    query = sa.select(member, campaign.c.name.label("campaign_name")).outerjoin(
                        campaign, campaign.c.sfdc_id == member.c.sfdc_campaign_id).where(
                        member.c.person_id == person["id"])
            memberships = [dict(r._mapping) for r in conn.execute(query.limit(200))]
    errors = error_issues(engine, sfdc_ids=sorted(ids), limit=100) if ids else []
    return {"pending": pending, "errors": errors,
            "conflicts": conflict_rows(engine, row_id=person["id"], limit=50),
            "memberships": memberships}


def run_errors(engine: Engine, run_key: str) -> list[dict]:
    """The record errors of one run (a sync-now run's outcome)."""
    error_t = ensure_bookkeeping(engine)["error"]
    with reader(engine).connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            sa.select(*[error_t.c[c] for c in ERROR_COLUMNS])
            .where(error_t.c.run_key == run_key).order_by(error_t.c.id))]


# --- initial copy coverage --------------------------------------------------------------------

def _month(value: datetime) -> datetime:
    return datetime(value.year, value.month, 1, tzinfo=UTC)


def _next_month(value: datetime) -> datetime:
    return datetime(value.year + value.month // 12, value.month % 12 + 1, 1, tzinfo=UTC)


@dataclass
class Coverage:
    months: list[datetime]
    objects: dict[str, dict]  # object -> {"complete": bool, "months": {month: (status, n)}}
    running: list[dict]  # running windows: object, window, copied, expected, rate, eta
    # the complete months missing, first and last (a backfill's inclusive logical dates)
    missing_from: datetime | None = None
    missing_until: datetime | None = None


def copy_coverage(engine: Engine, *, months: int = 12, now: datetime | None = None) -> Coverage:
    """Which months of each object's history the initial copy holds (done, running or
    missing), the running copies' rate and ETA, and the missing range to backfill."""
    books = ensure_bookkeeping(engine)
    window_t, mark_t, field_t = books["copy_window"], books["watermark"], books["field"]
    now = now or datetime.now(UTC)
    with reader(engine).connect() as conn:
        windows = conn.execute(sa.select(window_t).order_by(window_t.c.window_start)).all()
        complete = {r.sf_object for r in conn.execute(
            sa.select(mark_t.c.sf_object).where(mark_t.c.cursor_modstamp.is_not(None)))}
        objects = sorted({o for (o,) in conn.execute(
            sa.select(field_t.c.sf_object).where(field_t.c.synced).distinct())}
            | {w.sf_object for w in windows})
    bounded = [w.window_start for w in windows if w.window_start.year > 1970]
    start = _month(min([now - timedelta(days=31 * (months - 1)), *bounded]))
    grid = []
    while start <= now:
        grid.append(start)
        start = _next_month(start)
    coverage = Coverage(grid, {}, [])
    for sf_object in objects:
        mine = [w for w in windows if w.sf_object == sf_object]
        cells = {}
        for month in grid:
            end = _next_month(month)
            status = "done" if sf_object in complete else "missing"
            copied = sum(w.copied for w in mine if w.window_start == month and w.window_end == end)
            for w in mine:
                if w.window_start <= month and w.window_end >= end and w.status == "done":
                    status = "done"
                elif w.window_start < end and w.window_end > month and w.status == "running" \
                        and status != "done":
                    status = "running"
            cells[month] = (status, copied)
            if status == "missing" and end <= now:
                coverage.missing_from = min(coverage.missing_from or month, month)
                coverage.missing_until = max(coverage.missing_until or month, month)
        coverage.objects[sf_object] = {"complete": sf_object in complete, "months": cells}
        for w in mine:
            if w.status != "running":
                continue
            elapsed = (now - w.started_at).total_seconds() if w.started_at else 0
            rate = w.copied / elapsed if elapsed > 0 else 0.0
            left = max((w.expected or 0) - w.copied, 0)
            coverage.running.append({
                "sf_object": sf_object, "window_start": w.window_start,
                "window_end": w.window_end, "copied": w.copied, "expected": w.expected,
                "rate": rate, "eta_seconds": left / rate if rate > 0 and w.expected else None})
    return coverage

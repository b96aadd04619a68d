"""The initial full copy, by CreatedDate windows.

Each (object, window) copy is resumable: rows are committed in chunks in (CreatedDate, Id) order
and the window remembers the last key it committed, so a retry continues where the failure hit
instead of starting over. Above ``bulk_threshold`` records a window is read with Bulk API 2.0,
below with REST pages. Progress (records done of total, rate, ETA) goes to the log.

A copy never moves an object's incremental cursor backwards and never overwrites a newer version
(a backfill may run while incremental cycles run). The cursor is set once the copies cover the
object's whole CreatedDate range (see ``close_coverage``), so the incremental DAG never skips
history.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from include.sfsync.context import SyncContext
from include.sfsync.pull.copyload import CopyLoader, CopyPlan
from include.sfsync.pull.extract import changes_soql, count_soql
from include.sfsync.pull.load import Counts
from include.sfsync.salesforce import reads, soql
from include.sfsync.salesforce.soql import soql_datetime
from include.sfsync.store.capture import record_rows
from include.sfsync.store.engine import lock_table, reader, utcnow
from include.sfsync.store.ledger import COUNT_KEYS, add_api_calls, record_counts
from include.sfsync.values import parse_sf_datetime

log = logging.getLogger(__name__)
CHUNK = 10_000  # records per transaction (the first ones smaller: see _chunks)
FIRST_CHUNK = 2_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FOREVER = datetime(9999, 1, 1, tzinfo=UTC)


class Progress:
    """Logs "done of total, rate, ETA" at most every ``every`` seconds (to the task log, where
    Airflow users read it: a progress-bar library would draw for a terminal)."""

    def __init__(self, label: str, total: int, every: float = 10.0):
        self.label, self.total, self.every = label, total, every
        self.started = self.last = time.monotonic()
        self.done = 0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every or self.done >= self.total:
            self.last = now
            log.info("%s", self.line())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done / elapsed
        remaining = max(self.total - self.done, 0)
        eta = f"{remaining / rate:,.0f} s" if rate > 0 and remaining else "-"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.label}: {self.done:,} of {self.total:,} records ({pct:.1f}%), "
                f"{rate:,.0f} records/s, ETA {eta}")


def copy_window(ctx: SyncContext, run_key: str, sf_object: str,
                created_from: datetime | None, created_to: datetime | None) -> dict:
    """Copy the records of ``sf_object`` created in [created_from, created_to).

    Returns the counts; a window already copied returns its counts without calling Salesforce.
    """
    window_t, count_t = ctx.books["copy_window"], ctx.books["count"]
    start, end = created_from or EPOCH, created_to or FOREVER
    key = _window_key(window_t, sf_object, created_from, created_to)
    with ctx.engine.begin() as conn:
        window = _open_window(conn, ctx, sf_object, created_from, created_to)
        if window.planned_count is not None:  # taken: a retry counts again, with a new job
            conn.execute(window_t.update().where(*key).values(planned_count=None, bulk_job=None))
    if window.status == "done":
        with reader(ctx.engine).connect() as conn:
            row = conn.execute(sa.select(count_t).where(
                count_t.c.run_key == run_key, count_t.c.sf_object == sf_object,
                count_t.c.operation == "copy")).first()
        return {k: getattr(row, k) for k in COUNT_KEYS} if row else {"copied": window.copied}
    if _history_complete(ctx, sf_object):
        # Everything the org holds is stored and the incremental cycles keep it current: a
        # later window (the monthly scheduled run) has nothing to add and costs no API call.
        with ctx.engine.begin() as conn:
            conn.execute(window_t.update().where(*key).values(status="done",
                                                              finished_at=utcnow()))
            _record(conn, count_t, run_key, sf_object, Counts(), 0)
        log.info("%s created %s..%s: nothing to copy, its whole history is stored already",
                 sf_object, _day(start), _day(end))
        return Counts().as_dict()
    client = ctx.salesforce()
    calls_before = client.api_calls
    obj = ctx.catalog.object(sf_object)
    resume = (window.resume_created, window.resume_id) if window.resume_id else None
    bounds = _bounds(obj, created_from, created_to, resume)
    query = changes_soql(obj, None, **bounds)
    if window.planned_count is not None and not resume:  # counted, and its job started, by plan
        total, bulk_job = window.planned_count, window.bulk_job
    else:
        total, bulk_job = reads.count(client, count_soql(sf_object, **bounds),
                                      include_deleted=True), None
        with ctx.engine.begin() as conn:  # the console's rate and ETA of a running copy
            conn.execute(window_t.update().where(*key).values(expected=window.copied + total))
    label = f"{sf_object} created {_day(start)}..{_day(end)}"
    progress = Progress(label, total)
    log.info("%s: copying %s records with %s", label, f"{total:,}",
             "Bulk API 2.0" if total > ctx.config.bulk_threshold else "REST")
    counts = Counts()
    copied = window.copied
    records = reads.records(client, sf_object, query, total=total,
                            bulk_threshold=ctx.config.bulk_threshold, include_deleted=True,
                            describe_fields=obj.describe_fields, bulk_job=bulk_job)
    plan = CopyPlan(ctx.tables, obj, ctx.engine.dialect,  # how new records become rows
                    blocked=set(ctx.catalog.config.block_updates.get(obj.type.table, [])))

    def write(chunk: list[dict]) -> None:
        """One transaction: the chunk's rows, the window's resume key after them, the counts."""
        nonlocal copied
        last = chunk[-1]
        with ctx.engine.begin() as conn:
            CopyLoader(conn, ctx.tables, ctx.catalog, obj, counts, run_key=run_key,
                       plan=plan).copy(chunk)
            copied += len(chunk)
            conn.execute(window_t.update().where(*key).values(
                resume_created=parse_sf_datetime(last["CreatedDate"]), resume_id=last["Id"],
                copied=copied))
            _record(conn, count_t, run_key, sf_object, counts, client.api_calls - calls_before)
        progress.advance(len(chunk))

    for chunk in _chunks(records):  # the next Bulk page downloads meanwhile (reads.records)
        write(chunk)
    if ctx.engine.dialect.name == "postgresql":  # fresh statistics for the objects copied next
        with ctx.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'ANALYZE "{obj.type.table}"')
    with ctx.engine.begin() as conn:
        conn.execute(window_t.update().where(*key).values(status="done", finished_at=utcnow()))
        record_rows(conn, obj.type.table)  # the next run checks none vanish without a trace
        _record(conn, count_t, run_key, sf_object, counts, client.api_calls - calls_before)
    add_api_calls(ctx.engine, run_key, client.api_calls - calls_before, client.api_usage)
    log.info("%s: done. %s", label, progress.line())
    return counts.as_dict()


def start_copies(ctx: SyncContext, run_key: str, objects: list[str],
                 created_from: datetime | None, created_to: datetime | None) -> None:
    """Before any copy of the run starts: count every object's window (the counts share
    /composite calls) and create the Bulk query job of each one above ``bulk_threshold``, so
    that Salesforce prepares all of them in parallel while the copies run a few at a time (and
    the copies wait for no job). Windows already done, resuming, or of objects whose history is
    complete are left alone; each copy takes its count and job when it starts (``copy_window``).
    """
    todo = []
    with ctx.engine.begin() as conn:
        for name in objects:
            if _history_complete(ctx, name):
                continue
            window = _open_window(conn, ctx, name, created_from, created_to)
            if window.status != "done" and not window.resume_id:
                todo.append(ctx.catalog.object(name))
    if not todo:
        return
    client = ctx.salesforce()
    before = client.api_calls
    bounds = [_bounds(obj, created_from, created_to, None) for obj in todo]
    totals = reads.counts(client, [count_soql(obj.sf_object, **b) for obj, b in
                                   zip(todo, bounds, strict=True)], include_deleted=True)
    window_t = ctx.books["copy_window"]
    planned = {}
    for obj, b, total in zip(todo, bounds, totals, strict=True):
        job = None
        if total > ctx.config.bulk_threshold:
            job = client.start_bulk_query(obj.sf_object, changes_soql(obj, None, **b),
                                          include_deleted=True)
        planned[obj.sf_object] = (total, job)
    with ctx.engine.begin() as conn:
        for name, (total, job) in planned.items():
            conn.execute(window_t.update().where(
                *_window_key(window_t, name, created_from, created_to)).values(
                planned_count=total, bulk_job=job, expected=total))
    add_api_calls(ctx.engine, run_key, client.api_calls - before, client.api_usage)
    log.info("counted %s windows, %s Bulk query jobs started up front: %s", len(planned),
             sum(1 for _, job in planned.values() if job),
             ", ".join(f"{name} {total:,}" for name, (total, _) in planned.items()))


def _window_key(window_t, sf_object: str, created_from, created_to) -> tuple:
    return (window_t.c.sf_object == sf_object,
            window_t.c.window_start == (created_from or EPOCH),
            window_t.c.window_end == (created_to or FOREVER))


def _open_window(conn, ctx: SyncContext, sf_object: str, created_from, created_to):
    """The (object, window) row, created (status running) when missing, under the table's
    writer lock: two runs over one window share one row."""
    window_t = ctx.books["copy_window"]
    key = _window_key(window_t, sf_object, created_from, created_to)
    lock_table(conn, ctx.catalog.object(sf_object).type.table)
    window = conn.execute(sa.select(window_t).where(*key)).first()
    if window is None:
        conn.execute(window_t.insert().values(sf_object=sf_object,
                                              window_start=created_from or EPOCH,
                                              window_end=created_to or FOREVER,
                                              status="running", started_at=utcnow()))
        window = conn.execute(sa.select(window_t).where(*key)).first()
    return window


def _bounds(obj, created_from, created_to, resume) -> dict:
    # queryAll, recycle bin left out: a plain query misses archived activities (closed tasks
    # and events older than a year). User has no IsDeleted.
    return {"created_from": created_from, "created_to": created_to, "resume": resume,
            "live_only": "IsDeleted" in obj.describe_fields}


def _chunks(records):
    """The records in transactions of FIRST_CHUNK, then doubling up to CHUNK: the first rows
    are written as soon as the first (small) page is read, while the next pages download."""
    size, batch = FIRST_CHUNK, []
    for rec in records:
        batch.append(rec)
        if len(batch) >= size:
            yield batch
            batch, size = [], min(size * 2, CHUNK)
    if batch:
        yield batch


def _history_complete(ctx: SyncContext, sf_object: str) -> bool:
    """The object's incremental cursor has started: its whole history was copied."""
    mark_t = ctx.books["watermark"]
    with reader(ctx.engine).connect() as conn:
        return conn.execute(sa.select(mark_t.c.cursor_modstamp).where(
            mark_t.c.sf_object == sf_object)).scalar() is not None


def _record(conn, count_t, run_key: str, sf_object: str, counts: Counts, calls: int) -> None:
    record_counts(conn, run_key, sf_object, "copy", counts.as_dict(), calls)


def _day(value: datetime) -> str:
    if value in (EPOCH, FOREVER):
        return "*"
    return value.strftime("%Y-%m-%d")


def close_coverage(ctx: SyncContext, sf_object: str) -> bool:
    """Start the incremental cursor once the copies cover everything the org holds.

    Covered means the finished windows, merged, span from the object's oldest CreatedDate to the
    moment the earliest of them started. The cursor is that moment minus the overlap: changes made
    while copying are read again by the incremental cycles. Returns True when the cursor is set.
    """
    window_t, mark_t = ctx.books["copy_window"], ctx.books["watermark"]
    if _history_complete(ctx, sf_object):
        return True
    with reader(ctx.engine).connect() as conn:
        windows = conn.execute(sa.select(window_t).where(
            window_t.c.sf_object == sf_object, window_t.c.status == "done")
            .order_by(window_t.c.window_start)).all()
    if not windows:
        return False
    started = min(w.started_at for w in windows)
    oldest = EPOCH
    if windows[0].window_start > EPOCH:
        live = [soql.where("IsDeleted", "=", False)] if "IsDeleted" in ctx.catalog.object(
            sf_object).describe_fields else []
        first = ctx.salesforce().sf.query(  # queryAll: archived activities count too
            soql.select(sf_object, ["CreatedDate"], conditions=live,
                        order_by=["CreatedDate ASC"], limit=1), include_deleted=True)["records"]
        if first:
            oldest = parse_sf_datetime(first[0]["CreatedDate"])
    reach = oldest
    for w in windows:
        if w.window_start > reach:
            return False  # a gap: some history is not copied yet
        reach = max(reach, w.window_end)
    if reach < started:
        return False
    cursor = started - timedelta(seconds=ctx.config.overlap_seconds)
    with ctx.engine.begin() as conn:
        # An incremental cycle on another worker may have started the cursor meanwhile (its
        # own full copy): it is never moved back.
        lock_table(conn, ctx.catalog.object(sf_object).type.table)
        mark = conn.execute(sa.select(mark_t).where(mark_t.c.sf_object == sf_object)).first()
        if mark is not None and mark.cursor_modstamp is not None:
            return True
        if mark is None:
            conn.execute(mark_t.insert().values(sf_object=sf_object, cursor_modstamp=cursor,
                                                full_copy_done=True, updated_at=utcnow()))
        else:
            conn.execute(mark_t.update().where(mark_t.c.sf_object == sf_object).values(
                cursor_modstamp=cursor, full_copy_done=True, updated_at=utcnow()))
    log.info("%s: initial copy complete; incremental cycles continue from %s", sf_object,
             soql_datetime(cursor))
    return True

"""Change capture: find what changed in Salesforce and stage it durably.

One cycle:

1. ``probe``: the replication API says, for every object, which ids were updated since the
   cursor, which were updated within the overlap window before it, and which were deleted since
   the window's start (three sub-requests per object, sent along with the describes: two
   ``/composite`` calls for up to 12 objects). Ids of the overlap window that earlier loads
   already processed (``sfsync_seen``: Id and SystemModstamp of what they read there) are not
   news; an object with no other id is idle and costs nothing more. For the others, the change
   queries (``SELECT ... WHERE SystemModstamp >= cursor OR Id IN (the overlap's unknown ids)
   ORDER BY SystemModstamp, Id`` through ``queryAll``, so deletes and merges come along; the
   whole overlap, ``SystemModstamp >= cursor - overlap``, when the probe could not narrow it)
   share further composite calls, five per call; their first pages are staged right away.
2. ``extract``: per object, the remaining pages (``queryMore``) or a Bulk API 2.0 job when the
   change set is large, also staged.

Staging lives in the marketing database (``sfsync_stage``), visible to every worker, so a retry
of filtering or loading reads it again instead of calling Salesforce; ``sfsync_extract`` records
how far each object got. A retry of a finished extract makes no API call.

The cursor never advances past the probe's ``latestDateCovered``: Salesforce holds that back to
the start of any long-running transaction, so late commits are read on a later cycle. The
overlap window guards against a coverage that was not held back: a record committed late with
a stamp behind the cursor is an id of the overlap window that no load processed, and is read.
What it cannot tell, the replication API answering with ids only, is a second version of a
record a load read in the window, both stamped behind the cursor (the second committed late
while Salesforce's coverage passed it): that one is read with the record's next change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from more_itertools import chunked
from sqlalchemy.engine import Engine

from include.sfsync.catalog import Catalog, ObjectCatalog
from include.sfsync.errors import NotPreparedError, SalesforceCallError
from include.sfsync.salesforce import reads, soql
from include.sfsync.salesforce.client import SalesforceClient
from include.sfsync.salesforce.soql import soql_datetime, where
from include.sfsync.store.engine import lock_table, reader, utcnow
from include.sfsync.store.ledger import note_seen
from include.sfsync.values import parse_sf_datetime

REPLICATION_WINDOW = timedelta(days=29)  # getUpdated/getDeleted accept 30 days back
PROBE_HORIZON = timedelta(days=1)  # the probe window's end, past any clock skew
MIN_OVERLAP_WINDOW = timedelta(minutes=2)  # Salesforce wants more than a minute between start/end
LATE_IDS_BUDGET = 4000  # URL-encoded characters of the late ids' IN list (about 150 ids)
STAGE_CHUNK = 2000


@dataclass
class ObjectPlan:
    sf_object: str
    mode: str  # idle, changes, full
    cursor_from: datetime | None = None
    covered_until: datetime | None = None
    updated_ids: int = 0
    deleted: list[tuple[str, str]] = field(default_factory=list)
    # Narrowed (not None): the query reads SystemModstamp >= since, and of the overlap window
    # before it only these ids, the ones no load processed yet.
    since: datetime | None = None
    late_ids: list[str] | None = None


def changes_soql(obj: ObjectCatalog, cursor_from: datetime | None, *,
                 created_from: datetime | None = None, created_to: datetime | None = None,
                 resume: tuple[datetime, str] | None = None, live_only: bool = False,
                 since: datetime | None = None, late_ids: list[str] | None = None) -> str:
    """The extract query: changes since a cursor (keyset order), or a CreatedDate window.
    ``since`` and ``late_ids`` narrow the overlap (``ObjectPlan``).

    Run it through ``queryAll``: only that returns archived activities (closed tasks and events
    older than a year); ``live_only`` leaves the recycle bin out (a full copy)."""
    keyed = created_from is not None or created_to is not None or resume is not None
    return soql.select(obj.sf_object, obj.soql_fields,
                       conditions=_conditions(cursor_from, created_from, created_to, resume,
                                              live_only, since, late_ids),
                       order_by=("CreatedDate", "Id") if keyed else ("SystemModstamp", "Id"))


def count_soql(sf_object: str, cursor_from: datetime | None = None, *,
               created_from: datetime | None = None, created_to: datetime | None = None,
               resume: tuple[datetime, str] | None = None, live_only: bool = False,
               since: datetime | None = None, late_ids: list[str] | None = None) -> str:
    """``SELECT COUNT()`` over exactly the rows ``changes_soql`` reads."""
    return soql.count(sf_object, conditions=_conditions(cursor_from, created_from, created_to,
                                                        resume, live_only, since, late_ids))


def _conditions(cursor_from, created_from, created_to, resume, live_only, since=None,
                late_ids=None) -> list[str]:
    conditions = []
    if cursor_from is not None and since is not None:
        recent = where("SystemModstamp", ">=", since)
        conditions.append(soql.any_of(recent, where("Id", "IN", late_ids)) if late_ids
                          else recent)
    elif cursor_from is not None:
        conditions.append(where("SystemModstamp", ">=", cursor_from))
    if created_from is not None:
        conditions.append(where("CreatedDate", ">=", created_from))
    if created_to is not None:
        conditions.append(where("CreatedDate", "<", created_to))
    if resume is not None:  # continue a copy after the last (CreatedDate, Id) it loaded
        stamp, last_id = resume
        conditions.append(soql.any_of(where("CreatedDate", ">", stamp), soql.all_of(
            where("CreatedDate", "=", stamp), where("Id", ">", last_id))))
    if live_only:
        conditions.append(where("IsDeleted", "=", False))
    return conditions


def _floor_minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


def window_start(cursor: datetime, overlap: timedelta) -> datetime:
    """Where the probe's overlap window behind ``cursor`` starts (whole minutes, as Salesforce
    cuts them): what ``sfsync_seen`` must still hold."""
    return _floor_minute(cursor - max(overlap, MIN_OVERLAP_WINDOW))


@dataclass
class ProbeWindows:
    """The replication API's sub-requests of one probe (``requests``: three per object of
    ``asked``, in order), built before the describes answer so that one composite call can carry
    both."""

    now: datetime
    overlap: timedelta
    marks: dict
    requests: list[dict] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)


def probe_windows(client: SalesforceClient, engine: Engine, books: dict, overlap_seconds: int,
                  names: list[str]) -> ProbeWindows:
    """Per object with a cursor: ids updated in the overlap window ``[start, cursor)``, ids
    updated since the cursor, ids deleted since ``start``."""
    with reader(engine).connect() as conn:
        marks = {r.sf_object: r for r in conn.execute(sa.select(books["watermark"]))}
    # Windows are judged by Salesforce's clock (its latest Date header), not ours.
    windows = ProbeWindows(client.server_now(), timedelta(seconds=overlap_seconds), marks)
    for name in names:
        mark = marks.get(name)
        if mark is None or mark.cursor_modstamp is None:
            continue  # a full read
        cursor = mark.cursor_modstamp
        # The window reaches back over the overlap, not just to the previous latestDateCovered:
        # a transaction committing late (stamped before that coverage) must still make the
        # object non-idle, or the change query that would read it never runs.
        start = window_start(cursor, windows.overlap)
        if windows.now - start > REPLICATION_WINDOW:
            continue  # outside what the replication API answers: just query
        # "Now" is Salesforce's, not this worker's: the window ends well ahead of either clock
        # and Salesforce caps latestDateCovered at its own time (a worker clock behind
        # Salesforce's would otherwise cap the coverage and keep re-reading the same changes).
        end = max(windows.now, cursor) + PROBE_HORIZON
        at = {t: soql_datetime(t) for t in (start, cursor, end)}
        windows.requests += [
            {"url": f"/sobjects/{name}/updated/?start={at[start]}&end={at[cursor]}"},
            {"url": f"/sobjects/{name}/updated/?start={at[cursor]}&end={at[end]}"},
            {"url": f"/sobjects/{name}/deleted/?start={at[start]}&end={at[end]}"}]
        windows.asked.append(name)
    return windows


def probe(client: SalesforceClient, engine: Engine, books: dict, catalog: Catalog,
          run_key: str, *, windows: ProbeWindows | None = None,
          answers: list[dict] | None = None) -> dict[str, ObjectPlan]:
    """Decide, per object, what this run extracts, and stage the first pages of changes.
    ``windows`` and ``answers``: the caller already asked (:func:`probe_windows`)."""
    extract_t = books["extract"]
    with reader(engine).connect() as conn:
        done = {r.sf_object: r for r in conn.execute(
            sa.select(extract_t).where(extract_t.c.run_key == run_key))}
    if done and len(done) == len(catalog.objects):  # a retry: the probe already ran
        return {name: ObjectPlan(name, r.mode, r.cursor_from, r.covered_until, since=r.since,
                                 late_ids=None if r.late_ids is None else json.loads(r.late_ids))
                for name, r in done.items()}
    if windows is None:
        windows = probe_windows(client, engine, books, catalog.config.overlap_seconds,
                                [obj.sf_object for obj in catalog.ordered()])
        answers = client.composite(windows.requests) if windows.requests else []
    with reader(engine).connect() as conn:  # again: the schema sync may have dropped cursors
        marks = {r.sf_object: r for r in conn.execute(sa.select(books["watermark"]))}
    now, overlap = windows.now, windows.overlap
    # The windows' answers hold for the cursors they were asked from, no other.
    answered = {name: answers[3 * i:3 * i + 3] for i, name in enumerate(windows.asked)
                if name in marks and marks[name].cursor_modstamp
                == windows.marks[name].cursor_modstamp}
    seen = _seen(engine, books, {name: window_start(marks[name].cursor_modstamp, overlap)
                                 for name in answered})
    plans: dict[str, ObjectPlan] = {}
    for obj in catalog.ordered():
        mark = marks.get(obj.sf_object)
        if mark is None or mark.cursor_modstamp is None:
            # The full read runs after this moment; the overlap covers open transactions.
            plans[obj.sf_object] = ObjectPlan(obj.sf_object, "full", covered_until=now - overlap)
            continue
        plan = ObjectPlan(obj.sf_object, "changes", mark.cursor_modstamp - overlap)
        plans[obj.sf_object] = plan
        if obj.sf_object in answered:
            _plan_from(plan, mark.cursor_modstamp, answered[obj.sf_object],
                       seen.get(obj.sf_object, {}))
    # Objects the replication API did not cover (a first copy, a cursor older than its window,
    # an object that is not replicateable) are read by queries that run after this probe, so
    # they cover at least what every probed object covers: Salesforce's own time, held back for
    # open transactions. Without it such a cursor would stay at its newest record for ever and
    # the object would be queried on every cycle.
    covered = [p.covered_until for p in plans.values() if p.covered_until is not None]
    if covered:
        for plan in plans.values():
            if plan.covered_until is None:
                plan.covered_until = min(covered)
    _first_pages(client, engine, books, catalog, run_key, plans)
    return plans


def _plan_from(plan: ObjectPlan, cursor: datetime, answers: list[dict],
               seen: dict[str, datetime]) -> None:
    """Idle, or what the change query must read, from the three windows' answers."""
    overlap, recent, deleted = answers
    if any(a["status"] != 200 for a in answers):
        return  # e.g. not replicateable: the change query decides, over the whole overlap
    deletes = [(d["id"], d["deletedDate"]) for d in deleted["body"]["deletedRecords"]]
    plan.covered_until = min(parse_sf_datetime(recent["body"]["latestDateCovered"]),
                             parse_sf_datetime(deleted["body"]["latestDateCovered"]))
    # News: whatever changed since the cursor; in the overlap window, the ids no load processed
    # (a transaction that committed late, stamped behind the cursor) and the deletes not
    # processed yet.
    fresh = recent["body"]["ids"]
    late = [i for i in overlap["body"]["ids"] if i not in seen]
    late_deletes = [(i, when) for i, when in deletes
                    if i not in seen or seen[i] < _second(parse_sf_datetime(when))]
    plan.updated_ids = len(fresh) + len(late)
    plan.deleted = late_deletes
    if not fresh and not late and not late_deletes:
        plan.mode = "idle"
        return
    ids = sorted(set(late) | {i for i, _when in late_deletes})
    if len(soql.in_lists(ids, budget=LATE_IDS_BUDGET)) <= 1:
        plan.since, plan.late_ids = cursor, ids
    else:  # too many to name: the whole overlap again, every delete with it
        plan.updated_ids, plan.deleted = len(fresh) + len(overlap["body"]["ids"]), deletes


def _second(value: datetime) -> datetime:
    return value.replace(microsecond=0)


def _seen(engine: Engine, books: dict, starts: dict[str, datetime]
          ) -> dict[str, dict[str, datetime]]:
    """Per object, the records loads processed from ``starts[object]`` on: Id -> stamp."""
    seen_t = books["seen"]
    out: dict[str, dict[str, datetime]] = {name: {} for name in starts}
    if not starts:
        return out
    with reader(engine).connect() as conn:
        for name, start in starts.items():
            for row in conn.execute(sa.select(seen_t.c.sfdc_id, seen_t.c.stamp).where(
                    seen_t.c.sf_object == name, seen_t.c.stamp >= start)):
                out[name][row.sfdc_id] = _second(row.stamp)
    return out


def _first_pages(client: SalesforceClient, engine: Engine, books: dict, catalog: Catalog,
                 run_key: str, plans: dict[str, ObjectPlan]) -> None:
    """Run the small change queries together in composite calls and stage their first page."""
    batched = [p for p in plans.values()
               if p.mode == "changes" and p.updated_ids + len(p.deleted) <= catalog.config.bulk_threshold]
    calls_before = client.api_calls
    results = client.composite([
        {"url": client.query_url(changes_soql(catalog.object(p.sf_object), p.cursor_from,
                                              since=p.since, late_ids=p.late_ids),
                                 include_deleted=True)} for p in batched]) if batched else []
    share = (client.api_calls - calls_before) / max(1, len(batched))
    pages = dict(zip((p.sf_object for p in batched), results, strict=True))
    with engine.begin() as conn:
        conn.execute(books["stage"].delete().where(books["stage"].c.run_key == run_key))
        conn.execute(books["extract"].delete().where(books["extract"].c.run_key == run_key))
        for plan in plans.values():
            row = {"run_key": run_key, "sf_object": plan.sf_object, "mode": plan.mode,
                   "cursor_from": plan.cursor_from, "covered_until": plan.covered_until,
                   "deleted_ids": json.dumps(plan.deleted), "status": "probed", "rows": 0,
                   "api_calls": 0, "updated_at": utcnow(), "since": plan.since,
                   "late_ids": None if plan.late_ids is None else json.dumps(plan.late_ids)}
            page = pages.get(plan.sf_object)
            if plan.mode == "idle":
                row["status"] = "extracted"
            elif page is not None:
                if page["status"] != 200:
                    raise SalesforceCallError(f"query {plan.sf_object}", page)
                body = page["body"]
                row["rows"] = _stage(conn, books, run_key, plan.sf_object, body["records"], 0)
                row["api_calls"] = round(share)
                row["mode"] = "rest"
                if body.get("done", True):
                    row["status"] = "extracted"
                else:
                    row["next_url"] = body["nextRecordsUrl"]
            conn.execute(books["extract"].insert().values(**row))


def _stage(conn, books: dict, run_key: str, sf_object: str, records: list[dict], seq: int) -> int:
    rows = []
    for i, rec in enumerate(records):
        rec = {k: v for k, v in rec.items() if k != "attributes"}
        rows.append({"run_key": run_key, "sf_object": sf_object, "seq": seq + i,
                     "record": json.dumps(rec, separators=(",", ":"))})
    if rows:
        conn.execute(books["stage"].insert(), rows)
    return len(rows)


@dataclass
class ExtractResult:
    sf_object: str
    mode: str
    rows: int
    api_calls: int
    skipped_calls: bool = False  # a retry: already extracted, Salesforce was not called


def extract(client: SalesforceClient | None, engine: Engine, books: dict, catalog: Catalog,
            run_key: str, sf_object: str, *, client_factory=None) -> ExtractResult:
    """Stage everything the probe planned for ``sf_object`` that is not staged yet."""
    extract_t = books["extract"]
    with reader(engine).connect() as conn:
        state = conn.execute(sa.select(extract_t).where(
            extract_t.c.run_key == run_key, extract_t.c.sf_object == sf_object)).first()
    if state is None:
        raise NotPreparedError(f"{sf_object}: no probe for run {run_key}; run the probe first")
    if state.status != "probed":
        return ExtractResult(sf_object, state.mode, state.rows, state.api_calls, True)
    client = client or client_factory()
    obj = catalog.object(sf_object)
    before = client.api_calls
    mode = state.mode
    with engine.begin() as conn:
        if state.next_url:  # more REST pages after the composite's first one
            rows = state.rows
            for chunk in chunked(reads.follow(client, client.query_more(state.next_url)),
                                 STAGE_CHUNK):
                rows += _stage(conn, books, run_key, sf_object, chunk, rows)
        else:
            conn.execute(books["stage"].delete().where(books["stage"].c.run_key == run_key,
                                                       books["stage"].c.sf_object == sf_object))
            # queryAll either way: a plain query misses archived activities; a full copy leaves
            # the recycle bin out.
            full = state.mode == "full"
            live_only = full and "IsDeleted" in obj.describe_fields  # User has no recycle bin
            narrow = {"since": state.since,
                      "late_ids": None if state.late_ids is None else json.loads(state.late_ids)}
            total = reads.count(client, count_soql(sf_object, None if full else state.cursor_from,
                                                   live_only=live_only, **narrow),
                                include_deleted=True)
            threshold = catalog.config.bulk_threshold
            if total:
                mode = "bulk" if total > threshold else "rest"
            rows = 0
            for chunk in chunked(reads.records(
                    client, sf_object, changes_soql(obj, state.cursor_from, live_only=live_only,
                                                    **narrow),
                    total=total, bulk_threshold=threshold, include_deleted=True,
                    describe_fields=obj.describe_fields), STAGE_CHUNK):
                rows += _stage(conn, books, run_key, sf_object, chunk, rows)
        calls = state.api_calls + client.api_calls - before
        conn.execute(extract_t.update().where(
            extract_t.c.run_key == run_key, extract_t.c.sf_object == sf_object).values(
            status="extracted", rows=rows, api_calls=calls, next_url=None, mode=mode,
            updated_at=utcnow()))
    return ExtractResult(sf_object, mode, rows, calls)


def staged(engine: Engine, books: dict, run_key: str, sf_object: str,
           chunk: int = STAGE_CHUNK):
    """The staged records of one object, in extract order, ``chunk`` at a time."""
    stage = books["stage"]
    last = -1
    while True:
        with reader(engine).connect() as conn:
            rows = conn.execute(sa.select(stage.c.seq, stage.c.record).where(
                stage.c.run_key == run_key, stage.c.sf_object == sf_object,
                stage.c.seq > last).order_by(stage.c.seq).limit(chunk)).all()
        if not rows:
            return
        last = rows[-1].seq
        yield [json.loads(r.record) for r in rows]


class ReadLog:
    """What a load goes through: the (Id, SystemModstamp) of the staged records stamped from
    ``keep_from`` on (older ones leave the probe's window before it asks again), and the
    deletes the probe reported."""

    def __init__(self, keep_from: datetime | None, deleted: list[tuple[str, str]]):
        self.keep_from, self.deleted = keep_from, deleted
        self._day = keep_from.strftime("%Y-%m-%d") if keep_from is not None else ""
        self.stamps: dict[str, datetime] = {}

    def watch(self, batches):
        """``batches``, unchanged, noting what they hold."""
        for batch in batches:
            for rec in batch:
                value = rec.get("SystemModstamp")
                if isinstance(value, str):
                    if value[:10] < self._day:  # cheap: most of a full read is older
                        continue
                    value = parse_sf_datetime(value)
                if isinstance(value, datetime) and (self.keep_from is None
                                                    or value >= self.keep_from):
                    self.stamps[rec["Id"]] = value
            yield batch


def read_log(engine: Engine, books: dict, run_key: str, sf_object: str,
             overlap_seconds: int) -> ReadLog:
    """A :class:`ReadLog` for the load of ``sf_object`` in this run."""
    extract_t = books["extract"]
    with reader(engine).connect() as conn:
        state = conn.execute(sa.select(extract_t).where(
            extract_t.c.run_key == run_key, extract_t.c.sf_object == sf_object)).first()
    if state is None:
        return ReadLog(None, [])
    overlap = timedelta(seconds=overlap_seconds)
    # The load moves the cursor to at least the coverage (else to the newest record read, past
    # the old cursor): the next probe's window starts no earlier than this.
    bound = state.covered_until or (state.cursor_from + overlap if state.cursor_from else None)
    return ReadLog(window_start(bound, overlap) if bound is not None else None,
                   [tuple(d) for d in json.loads(state.deleted_ids or "[]")])


def remember_reads(engine: Engine, books: dict, sf_object: str, table: str, log: ReadLog,
                   overlap_seconds: int) -> int:
    """Once a load committed: record in ``sfsync_seen`` what it processed inside the window
    the next probe asks about, and forget what left that window. Returns the rows recorded.

    Only after the load: a record noted here is one the marketing database has taken in (or
    left out on purpose), so a crash in between costs a re-read, never a change."""
    seen_t, mark_t = books["seen"], books["watermark"]
    with engine.begin() as conn:
        lock_table(conn, table)  # the loads of this table and their cursors queue the same way
        cursor = conn.execute(sa.select(mark_t.c.cursor_modstamp).where(
            mark_t.c.sf_object == sf_object)).scalar()
        if cursor is None:
            return 0
        keep_from = window_start(cursor, timedelta(seconds=overlap_seconds))
        conn.execute(seen_t.delete().where(seen_t.c.sf_object == sf_object,
                                           seen_t.c.stamp < keep_from))
        stamps = {i: s for i, s in log.stamps.items() if s >= keep_from}
        for record_id, when in log.deleted:  # purged ones too: the load flagged them
            stamp = parse_sf_datetime(when)
            if stamp >= keep_from:
                stamps[record_id] = max(stamp, stamps.get(record_id, stamp))
        note_seen(conn, sf_object, stamps)
    return len(stamps)


def cleanup(engine: Engine, books: dict, run_key: str) -> None:
    with engine.begin() as conn:
        conn.execute(books["stage"].delete().where(books["stage"].c.run_key == run_key))

"""Change capture: find what changed in Salesforce and stage it durably.

One cycle:

1. ``probe``: a single ``/composite`` call asks the replication API, for every object, which ids
   were updated or deleted since the object's cursor minus the overlap window. Objects with
   nothing to report are idle and cost nothing more. For the others, the change queries
   (``SELECT ... WHERE SystemModstamp >= cursor - overlap ORDER BY SystemModstamp, Id`` through
   ``queryAll``, so deletes and merges come along) share further composite calls, five per call;
   their first pages are staged right away.
2. ``extract``: per object, the remaining pages (``queryMore``) or a Bulk API 2.0 job when the
   change set is large, also staged.

Staging lives in the marketing database (``sfsync_stage``), visible to every worker, so a retry
of filtering or loading reads it again instead of calling Salesforce; ``sfsync_extract`` records
how far each object got. A retry of a finished extract makes no API call.

The cursor never advances past the probe's ``latestDateCovered``: Salesforce holds that back to
the start of any long-running transaction, so late commits are read on a later cycle.
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
from include.sfsync.store.engine import reader, utcnow
from include.sfsync.values import parse_sf_datetime

REPLICATION_WINDOW = timedelta(days=29)  # getUpdated/getDeleted accept 30 days back
PROBE_HORIZON = timedelta(days=1)  # the probe window's end, past any clock skew
STAGE_CHUNK = 2000


@dataclass
class ObjectPlan:
    sf_object: str
    mode: str  # idle, changes, full
    cursor_from: datetime | None = None
    covered_until: datetime | None = None
    updated_ids: int = 0
    deleted: list[tuple[str, str]] = field(default_factory=list)


def changes_soql(obj: ObjectCatalog, cursor_from: datetime | None, *,
                 created_from: datetime | None = None, created_to: datetime | None = None,
                 resume: tuple[datetime, str] | None = None, live_only: bool = False) -> str:
    """The extract query: changes since a cursor (keyset order), or a CreatedDate window.

    Run it through ``queryAll``: only that returns archived activities (closed tasks and events
    older than a year); ``live_only`` leaves the recycle bin out (a full copy)."""
    keyed = created_from is not None or created_to is not None or resume is not None
    return soql.select(obj.sf_object, obj.soql_fields,
                       conditions=_conditions(cursor_from, created_from, created_to, resume,
                                              live_only),
                       order_by=("CreatedDate", "Id") if keyed else ("SystemModstamp", "Id"))


def count_soql(sf_object: str, cursor_from: datetime | None = None, *,
               created_from: datetime | None = None, created_to: datetime | None = None,
               resume: tuple[datetime, str] | None = None, live_only: bool = False) -> str:
    """``SELECT COUNT()`` over exactly the rows ``changes_soql`` reads."""
    return soql.count(sf_object, conditions=_conditions(cursor_from, created_from, created_to,
                                                        resume, live_only))


def _conditions(cursor_from, created_from, created_to, resume, live_only) -> list[str]:
    conditions = []
    if cursor_from is not None:
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


def probe(client: SalesforceClient, engine: Engine, books: dict, catalog: Catalog,
          run_key: str) -> dict[str, ObjectPlan]:
    """Decide, per object, what this run extracts, and stage the first pages of changes."""
    extract_t = books["extract"]
    with reader(engine).connect() as conn:
        done = {r.sf_object: r for r in conn.execute(
            sa.select(extract_t).where(extract_t.c.run_key == run_key))}
        marks = {r.sf_object: r for r in conn.execute(sa.select(books["watermark"]))}
    if done and len(done) == len(catalog.objects):  # a retry: the probe already ran
        return {name: ObjectPlan(name, r.mode, r.cursor_from, r.covered_until)
                for name, r in done.items()}
    now = client.server_now()  # windows are judged by Salesforce's clock, not ours
    overlap = timedelta(seconds=catalog.config.overlap_seconds)
    plans: dict[str, ObjectPlan] = {}
    subrequests, asked = [], []
    for obj in catalog.ordered():
        mark = marks.get(obj.sf_object)
        if mark is None or mark.cursor_modstamp is None:
            # The full read runs after this moment; the overlap covers open transactions.
            plans[obj.sf_object] = ObjectPlan(obj.sf_object, "full", covered_until=now - overlap)
            continue
        cursor_from = mark.cursor_modstamp - overlap
        plan = ObjectPlan(obj.sf_object, "changes", cursor_from)
        plans[obj.sf_object] = plan
        # The window reaches back over the overlap, not just to the previous latestDateCovered:
        # a transaction committing late (stamped before that coverage) must still make the
        # object non-idle, or the change query that would read it never runs.
        start = _floor_minute(cursor_from)
        if now - start > REPLICATION_WINDOW:
            continue  # outside what the replication API answers: just query
        # "Now" is Salesforce's, not this worker's: the window ends well ahead of either clock
        # and Salesforce caps latestDateCovered at its own time (a worker clock behind
        # Salesforce's would otherwise cap the coverage and keep re-reading the same changes).
        end = max(now, start) + PROBE_HORIZON
        window = f"?start={soql_datetime(start)}&end={soql_datetime(end)}"
        subrequests += [{"url": f"/sobjects/{obj.sf_object}/updated/{window}"},
                        {"url": f"/sobjects/{obj.sf_object}/deleted/{window}"}]
        asked.append(obj.sf_object)
    results = client.composite(subrequests) if subrequests else []
    for i, name in enumerate(asked):
        updated, deleted = results[2 * i], results[2 * i + 1]
        plan = plans[name]
        if updated["status"] != 200 or deleted["status"] != 200:
            continue  # e.g. not replicateable: the change query decides
        plan.updated_ids = len(updated["body"]["ids"])
        plan.deleted = [(d["id"], d["deletedDate"]) for d in deleted["body"]["deletedRecords"]]
        plan.covered_until = min(parse_sf_datetime(updated["body"]["latestDateCovered"]),
                                 parse_sf_datetime(deleted["body"]["latestDateCovered"]))
        if not plan.updated_ids and not plan.deleted:
            plan.mode = "idle"
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


def _first_pages(client: SalesforceClient, engine: Engine, books: dict, catalog: Catalog,
                 run_key: str, plans: dict[str, ObjectPlan]) -> None:
    """Run the small change queries together in composite calls and stage their first page."""
    batched = [p for p in plans.values()
               if p.mode == "changes" and p.updated_ids + len(p.deleted) <= catalog.config.bulk_threshold]
    calls_before = client.api_calls
    results = client.composite([
        {"url": client.query_url(changes_soql(catalog.object(p.sf_object), p.cursor_from),
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
                   "api_calls": 0, "updated_at": utcnow()}
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
            total = reads.count(client, count_soql(sf_object, None if full else state.cursor_from,
                                                   live_only=live_only), include_deleted=True)
            threshold = catalog.config.bulk_threshold
            if total:
                mode = "bulk" if total > threshold else "rest"
            rows = 0
            for chunk in chunked(reads.records(
                    client, sf_object, changes_soql(obj, state.cursor_from, live_only=live_only),
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


def cleanup(engine: Engine, books: dict, run_key: str) -> None:
    with engine.begin() as conn:
        conn.execute(books["stage"].delete().where(books["stage"].c.run_key == run_key))

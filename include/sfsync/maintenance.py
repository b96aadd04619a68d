"""Work a cycle does only when it is due, so idle cycles stay at two API calls:

* **field re-copy**: a field newly mapped (a mapping changed in the config, or a field that
  appeared in Salesforce) has history the incremental cursor will never bring back; its values
  are read for every record (``SELECT Id, Field ...``) and written to just that column;
* **formula refresh**: formula fields opted in with ``formula_fields.include`` change without
  ``SystemModstamp``; they are re-read every ``formula_fields.refresh_minutes`` (and so are
  campaign-member copies of person fields, when mapped);
* **Id-set reconciliation**: every ``reconcile_hours``, the ids Salesforce still has are compared
  with the marketing database; rows whose record is gone (purged, hard-deleted beyond the deleted
  endpoint's window) are flagged deleted;
* **retention** (every cycle, no API call): bookkeeping older than ``retention.days`` (counts:
  ``retention.count_days``) is pruned in batches (``store.retention``), and pending changes
  older than ``retention.stale_after_hours`` are flagged stale (``outbox.mark_stale``), which
  ``admin status`` lists; they are still pushed every cycle. Nothing old: a few indexed reads.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa
from more_itertools import chunked

from include.sfsync.catalog import PERSON_COPIES
from include.sfsync.context import SyncContext
from include.sfsync.salesforce import reads, soql
from include.sfsync.store import outbox, retention
from include.sfsync.store.engine import reader, utcnow
from include.sfsync.store.ledger import add_api_calls, stamp_watermark
from include.sfsync.values import parse_value

log = logging.getLogger(__name__)
PEOPLE_KEYS = {"Lead": "sfdc_lead_id", "Contact": "sfdc_contact_id"}


def _key_column(sf_object: str) -> str:
    return PEOPLE_KEYS.get(sf_object, "sfdc_id")


def _read_all(ctx: SyncContext, sf_object: str, fields: list[str]):
    """Every live record's ``fields`` (REST pages, or Bulk above the threshold), through
    ``queryAll``: a plain query leaves archived activities out."""
    client = ctx.salesforce()
    obj = ctx.catalog.object(sf_object)
    live = [soql.where("IsDeleted", "=", False)] if "IsDeleted" in obj.describe_fields else []
    fields = ["Id", *[f for f in fields if f != "Id"]]  # Id is read anyway: once only
    return reads.records(client, sf_object, soql.select(sf_object, fields,
                                                        conditions=live, order_by=["Id"]),
                         total=reads.count(client, soql.count(sf_object, conditions=live),
                                           include_deleted=True),
                         bulk_threshold=ctx.config.bulk_threshold, include_deleted=True,
                         describe_fields=obj.describe_fields)


def refresh_columns(ctx: SyncContext, sf_object: str, fields: list[str]) -> int:
    """Re-read ``fields`` of every record and write just their columns; returns rows changed."""
    obj = ctx.catalog.object(sf_object)
    maps = [f for f in obj.synced if f.sf_field in fields]
    if not maps:
        return 0
    table = ctx.tables[obj.type.table]
    key = table.c[_key_column(sf_object)]
    changed = 0
    for batch in chunked(_read_all(ctx, sf_object, [m.sf_field for m in maps]), 2000):
        with ctx.engine.begin() as conn:
            for rec in batch:
                values = {m.column: parse_value(m.sf_type, rec.get(m.sf_field)) for m in maps}
                differs = sa.or_(*[table.c[c].is_distinct_from(v) for c, v in values.items()])
                result = conn.execute(table.update().where(key == rec["Id"], differs)
                                      .values(**values))
                changed += result.rowcount
    return changed


def recopy_new_fields(ctx: SyncContext) -> dict[str, int]:
    """Fill the columns of fields flagged ``needs_backfill`` in the data dictionary."""
    field_t = ctx.books["field"]
    with reader(ctx.engine).connect() as conn:
        pending = conn.execute(sa.select(field_t.c.sf_object, field_t.c.sf_field).where(
            field_t.c.needs_backfill.is_(True), field_t.c.synced.is_(True))).all()
    by_object: dict[str, list[str]] = {}
    for row in pending:
        if row.sf_object in ctx.catalog.objects:
            by_object.setdefault(row.sf_object, []).append(row.sf_field)
    done = {}
    for sf_object, fields in by_object.items():
        done[sf_object] = refresh_columns(ctx, sf_object, fields)
        with ctx.engine.begin() as conn:
            conn.execute(field_t.update().where(field_t.c.sf_object == sf_object,
                                                field_t.c.sf_field.in_(fields))
                         .values(needs_backfill=False, updated_at=utcnow()))
        log.info("%s: re-copied %s (%d rows changed)", sf_object, ", ".join(fields),
                 done[sf_object])
    return done


def refresh_formulas(ctx: SyncContext, *, force: bool = False) -> dict[str, int]:
    """Re-read opted-in formula fields when their refresh interval has passed, and the mapped
    campaign-member copies of person fields (``catalog.PERSON_COPIES``), which change without
    SystemModstamp too (the pull takes most of them from the person's record as it loads; not,
    for instance, a contact member's account name)."""
    mark_t = ctx.books["watermark"]
    every = timedelta(minutes=ctx.config.formula_fields.refresh_minutes)
    wanted: dict[str, list[str]] = {}
    for key in ctx.config.formula_fields.include:
        sf_object, field = key.split(".", 1)
        if sf_object in ctx.catalog.objects:  # else: not in this org (a catalog warning)
            wanted.setdefault(sf_object, []).append(field)
    for sf_object, fields in PERSON_COPIES.items():
        if sf_object in ctx.catalog.objects:
            copies = [f.sf_field for f in ctx.catalog.object(sf_object).synced
                      if f.sf_field in fields]
            if copies:
                wanted.setdefault(sf_object, []).extend(copies)
    done = {}
    for sf_object, fields in wanted.items():
        with reader(ctx.engine).connect() as conn:
            last = conn.execute(sa.select(mark_t.c.formula_refreshed_at).where(
                mark_t.c.sf_object == sf_object)).scalar()
        if not force and last is not None and utcnow() - last < every:
            continue
        done[sf_object] = refresh_columns(ctx, sf_object, fields)
        stamp_watermark(ctx.engine, sf_object, formula_refreshed_at=utcnow())
    return done


def reconcile(ctx: SyncContext, *, force: bool = False) -> dict[str, int]:
    """Flag rows whose Salesforce record no longer exists (beyond the deleted endpoint)."""
    mark_t = ctx.books["watermark"]
    every = timedelta(hours=ctx.config.reconcile_hours)
    flagged = {}
    for obj in ctx.catalog.ordered():
        with reader(ctx.engine).connect() as conn:
            mark = conn.execute(sa.select(mark_t).where(mark_t.c.sf_object == obj.sf_object)
                                ).first()
        if mark is None or mark.cursor_modstamp is None:
            continue  # not copied yet
        if mark.reconciled_at is None:  # start counting from the first copy
            stamp_watermark(ctx.engine, obj.sf_object, reconciled_at=utcnow())
            if not force:
                continue
        elif not force and utcnow() - mark.reconciled_at < every:
            continue
        alive = {rec["Id"] for rec in _read_all(ctx, obj.sf_object, [])}
        table = ctx.tables[obj.type.table]
        key = table.c[_key_column(obj.sf_object)]
        where = [key.is_not(None), table.c.sfdc_is_deleted.is_(False)]
        if "sfdc_object" in table.c:  # tasks and events share the activity table
            where.append(table.c.sfdc_object == obj.sf_object)
        if obj.sf_object == "Lead":  # a converted lead's person lives on as the contact
            where.append(table.c.sfdc_contact_id.is_(None))
        with ctx.engine.begin() as conn:
            stored = [r[0] for r in conn.execute(sa.select(key).where(*where))]
            gone = [i for i in stored if i not in alive]
            for part in chunked(gone, 500):
                conn.execute(table.update().where(key.in_(part)).values(sfdc_is_deleted=True))
        stamp_watermark(ctx.engine, obj.sf_object, reconciled_at=utcnow())
        flagged[obj.sf_object] = len(gone)
        if gone:
            log.info("%s: %d rows whose record no longer exists in Salesforce flagged deleted",
                     obj.sf_object, len(gone))
    return flagged


def keep_books(ctx: SyncContext) -> dict:
    """Retention: prune the bookkeeping past its age, flag stale pending changes. Never calls
    Salesforce. Returns ``pruned`` (rows deleted per table) and ``stale`` (pending changes
    flagged stale now)."""
    settings = ctx.config.retention
    pruned = retention.prune(ctx.engine, settings)
    if any(pruned.values()):
        log.info("retention: pruned %s", ", ".join(f"{n:,} {t}" for t, n in pruned.items() if n))
    with ctx.engine.begin() as conn:
        stale = outbox.mark_stale(conn, utcnow() - timedelta(hours=settings.stale_after_hours))
    if stale:
        log.warning("%d pending change(s) have waited for Salesforce more than %d h (stale; "
                    "still pushed every cycle): python -m include.sfsync.admin status", stale,
                    settings.stale_after_hours)
    return {"pruned": pruned, "stale": stale}


def maintain(run_key: str, ctx: SyncContext) -> dict:
    """The due maintenance of one cycle (usually nothing, and no API call), then retention."""
    client_calls = ctx.client.api_calls if ctx.client else 0
    result = {"recopied": recopy_new_fields(ctx), "formulas": refresh_formulas(ctx),
              "reconciled": reconcile(ctx)}
    calls = (ctx.client.api_calls if ctx.client else 0) - client_calls
    add_api_calls(ctx.engine, run_key, calls, ctx.client.api_usage if ctx.client else None)
    result["api_calls"] = calls
    return {**result, **keep_books(ctx)}

"""Work a cycle does only when it is due, so idle cycles stay at two API calls:

* **field re-copy**: a field newly mapped (a mapping changed in the config, or a field that
  appeared in Salesforce) has history the incremental cursor will never bring back; its values
  are read for every record (``SELECT Id, Field ...``) and written to just that column;
* **formula refresh**: formula fields opted in with ``formula_fields.include`` change without
  ``SystemModstamp``; they are re-read every ``formula_fields.refresh_minutes``;
* **Id-set reconciliation**: every ``reconcile_hours``, the ids Salesforce still has are compared
  with the marketing database; rows whose record is gone (purged, hard-deleted beyond the deleted
  endpoint's window) are flagged deleted.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa

from include.sfsync.mdb import fresh_stamp, reader, utcnow
from include.sfsync.pipeline import SyncContext, add_api_calls
from include.sfsync.salesforce import parse_value

log = logging.getLogger(__name__)
PEOPLE_KEYS = {"Lead": "sfdc_lead_id", "Contact": "sfdc_contact_id"}


def _key_column(sf_object: str) -> str:
    return PEOPLE_KEYS.get(sf_object, "sfdc_id")


def _read_all(ctx: SyncContext, sf_object: str, fields: list[str]):
    """Every live record's ``fields`` (REST pages, or Bulk above the threshold)."""
    client = ctx.salesforce()
    obj = ctx.catalog.object(sf_object)
    soql = f"SELECT {', '.join(['Id', *fields])} FROM {sf_object} ORDER BY Id"
    total = client.sf.query(f"SELECT COUNT() FROM {sf_object}")["totalSize"]
    if total > ctx.config.bulk_threshold:
        yield from client.bulk_query(sf_object, soql, include_deleted=False,
                                     describe_fields=obj.describe_fields)
        return
    if not total:
        return
    body = client.sf.query(soql)
    while True:
        yield from body["records"]
        if body.get("done", True):
            return
        body = client.query_more(body["nextRecordsUrl"])


def refresh_columns(ctx: SyncContext, sf_object: str, fields: list[str]) -> int:
    """Re-read ``fields`` of every record and write just their columns; returns rows changed."""
    obj = ctx.catalog.object(sf_object)
    maps = [f for f in obj.synced if f.sf_field in fields]
    if not maps:
        return 0
    table = ctx.tables[obj.type.table]
    key = table.c[_key_column(sf_object)]
    changed = 0
    batch: list[dict] = []

    def flush():
        nonlocal changed
        if not batch:
            return
        with ctx.engine.begin() as conn:
            for rec in batch:
                values = {m.column: parse_value(m.sf_type, rec.get(m.sf_field)) for m in maps}
                differs = sa.or_(*[table.c[c].is_distinct_from(v) for c, v in values.items()])
                result = conn.execute(table.update().where(key == rec["Id"], differs)
                                      .values(**values, sfsync_updated_at=fresh_stamp()))
                changed += result.rowcount
        batch.clear()

    for rec in _read_all(ctx, sf_object, [m.sf_field for m in maps]):
        batch.append(rec)
        if len(batch) == 2000:
            flush()
    flush()
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
    """Re-read opted-in formula fields when their refresh interval has passed."""
    mark_t = ctx.books["watermark"]
    every = timedelta(minutes=ctx.config.formula_fields.refresh_minutes)
    wanted: dict[str, list[str]] = {}
    for key in ctx.config.formula_fields.include:
        sf_object, field = key.split(".", 1)
        wanted.setdefault(sf_object, []).append(field)
    done = {}
    for sf_object, fields in wanted.items():
        with reader(ctx.engine).connect() as conn:
            last = conn.execute(sa.select(mark_t.c.formula_refreshed_at).where(
                mark_t.c.sf_object == sf_object)).scalar()
        if not force and last is not None and utcnow() - last < every:
            continue
        done[sf_object] = refresh_columns(ctx, sf_object, fields)
        _stamp(ctx, sf_object, formula_refreshed_at=utcnow())
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
            _stamp(ctx, obj.sf_object, reconciled_at=utcnow())
            if not force:
                continue
        elif not force and utcnow() - mark.reconciled_at < every:
            continue
        alive = {rec["Id"] for rec in _read_all(ctx, obj.sf_object, [])}
        table = ctx.tables[obj.type.table]
        key = table.c[_key_column(obj.sf_object)]
        where = [key.is_not(None), table.c.sfdc_is_deleted.is_(False)]
        if obj.sf_object == "Lead":  # a converted lead's person lives on as the contact
            where.append(table.c.sfdc_contact_id.is_(None))
        with ctx.engine.begin() as conn:
            stored = [r[0] for r in conn.execute(sa.select(key).where(*where))]
            gone = [i for i in stored if i not in alive]
            for i in range(0, len(gone), 500):
                conn.execute(table.update().where(key.in_(gone[i:i + 500])).values(
                    sfdc_is_deleted=True, sfsync_updated_at=fresh_stamp()))
        _stamp(ctx, obj.sf_object, reconciled_at=utcnow())
        flagged[obj.sf_object] = len(gone)
        if gone:
            log.info("%s: %d rows whose record no longer exists in Salesforce flagged deleted",
                     obj.sf_object, len(gone))
    return flagged


def _stamp(ctx: SyncContext, sf_object: str, **values) -> None:
    mark_t = ctx.books["watermark"]
    with ctx.engine.begin() as conn:
        conn.execute(mark_t.update().where(mark_t.c.sf_object == sf_object).values(**values))


def maintain(run_key: str, ctx: SyncContext) -> dict:
    """The due maintenance of one cycle (usually nothing, and no API call)."""
    client_calls = ctx.client.api_calls if ctx.client else 0
    result = {"recopied": recopy_new_fields(ctx), "formulas": refresh_formulas(ctx),
              "reconciled": reconcile(ctx)}
    calls = (ctx.client.api_calls if ctx.client else 0) - client_calls
    add_api_calls(ctx.engine, ctx.books, run_key, calls)
    result["api_calls"] = calls
    return result

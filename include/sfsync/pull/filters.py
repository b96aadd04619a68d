"""Field filters, applied to staged records between extract and load.

* record-level sync filters (``sync_filters``, e.g. "Do not sync to marketing"): such records are
  dropped and counted as Skipped; a person already in the marketing database keeps its row; a
  filter that cannot be applied fails the step (closed: nothing it meant to keep out is loaded);
* hidden and formula fields: their values are dropped from the record (they never reach the
  marketing database even if selected for processing);
* "block updates" columns are enforced at load time, where the stored value is known.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.sfsync.catalog import Catalog, ObjectCatalog, processing_fields
from include.sfsync.errors import ConfigError, NotPreparedError
from include.sfsync.store.engine import utcnow
from include.sfsync.store.ledger import note_seen, record_counts
from include.sfsync.store.tables import BOOKS
from include.sfsync.values import parse_sf_datetime


def keep_fields(obj: ObjectCatalog) -> set[str]:
    """What loading needs of a record: its synced fields, and those the sync reads itself."""
    return {f.sf_field for f in obj.synced} | set(processing_fields(obj.sf_object)) | (
        {obj.create_key} if obj.create_key else set())


def skip_reason(obj: ObjectCatalog, record: dict) -> str | None:
    """Why a record stays out of the marketing database, or None to keep it."""
    for flt in obj.filters:
        if flt.field not in record:  # a filter added after this run's extract read the records
            raise ConfigError(f"sync_filters: {obj.sf_object}.{flt.field} was not read by this "
                              "run's extract (the configuration changed during the run): the "
                              "next run applies it")
        if record[flt.field] == flt.skip_when:
            return f"sync filter: {flt.field} = {flt.skip_when!r}"
    return None


def filter_records(obj: ObjectCatalog, records: list[dict]) -> tuple[list[dict], list[str]]:
    """(records to load with only their synced and processing fields, ids skipped by a filter)."""
    wanted = keep_fields(obj)
    kept, skipped = [], []
    for rec in records:
        if skip_reason(obj, rec):
            skipped.append(rec["Id"])
            continue
        kept.append({k: v for k, v in rec.items() if k in wanted})
    return kept, skipped


def filter_staged(engine: Engine, catalog: Catalog, run_key: str, sf_object: str) -> dict:
    """Apply sync filters and drop unsynced fields in staging; record the Skipped count.
    Idempotent: a run already filtered returns what it recorded."""
    extract_t, stage_t, count_t = BOOKS["extract"], BOOKS["stage"], BOOKS["count"]
    obj = catalog.object(sf_object)
    with engine.begin() as conn:
        state = conn.execute(sa.select(extract_t).where(
            extract_t.c.run_key == run_key, extract_t.c.sf_object == sf_object)).first()
        if state is None or state.status == "probed":
            raise NotPreparedError(f"{sf_object}: not extracted yet for run {run_key}")
        if state.status in {"filtered", "loaded"}:
            skipped = conn.execute(sa.select(count_t.c.skipped).where(
                count_t.c.run_key == run_key, count_t.c.sf_object == sf_object)).scalar()
            return {"object": sf_object, "skipped": skipped or 0, "kept": state.rows}
        stage_rows = conn.execute(sa.select(stage_t.c.seq, stage_t.c.record).where(
            stage_t.c.run_key == run_key, stage_t.c.sf_object == sf_object)).all()
        records = [json.loads(r.record) for r in stage_rows]
        kept, skipped = filter_records(obj, records)
        # The versions a filter leaves out are done with: the overlap need not read them again
        # (a full read's are older than the window, but for its last minutes).
        left_out = set(skipped) if state.cursor_from is not None else set()
        note_seen(conn, sf_object, {r["Id"]: parse_sf_datetime(r["SystemModstamp"])
                                    for r in records
                                    if r["Id"] in left_out and r.get("SystemModstamp")})
        kept_by_id = {rec["Id"]: rec for rec in kept}
        for row in stage_rows:
            where = (stage_t.c.run_key == run_key, stage_t.c.sf_object == sf_object,
                     stage_t.c.seq == row.seq)
            rec_id = json.loads(row.record)["Id"]
            if rec_id in kept_by_id:
                conn.execute(stage_t.update().where(*where).values(
                    record=json.dumps(kept_by_id[rec_id], separators=(",", ":"))))
            else:
                conn.execute(stage_t.delete().where(*where))
        record_counts(conn, run_key, sf_object, "pull", {"skipped": len(skipped)},
                      state.api_calls)
        conn.execute(extract_t.update().where(
            extract_t.c.run_key == run_key, extract_t.c.sf_object == sf_object).values(
            status="filtered", rows=len(kept), updated_at=utcnow()))
    return {"object": sf_object, "skipped": len(skipped), "kept": len(kept)}

"""Field filters, applied to staged records between extract and load.

* record-level sync filters (``sync_filters``, e.g. "Do not sync to marketing"): such records are
  dropped and counted as Skipped; a person already in the marketing database keeps its row;
* hidden and formula fields: their values are dropped from the record (they never reach the
  marketing database even if selected for processing);
* "block updates" columns are enforced at load time, where the stored value is known.
"""

from __future__ import annotations

from include.sfsync.catalog import PROCESSING_FIELDS, ObjectCatalog


def keep_fields(obj: ObjectCatalog) -> set[str]:
    processing = set(PROCESSING_FIELDS["*"]) | set(PROCESSING_FIELDS.get(obj.sf_object, ()))
    return {f.sf_field for f in obj.synced} | processing


def skip_reason(obj: ObjectCatalog, record: dict) -> str | None:
    """Why a record stays out of the marketing database, or None to keep it."""
    for flt in obj.filters:
        if flt.field in record and record[flt.field] == flt.skip_when:
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

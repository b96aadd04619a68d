"""REST API handlers: versions, limits, describe, query, records, collections, composite,
replication (updated/deleted)."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

from . import records as R
from . import soql
from . import values as V
from .errors import ApiError, not_found
from .http import Request, Response, error_response, json_response, no_content
from .ids import normalize_id, try_normalize_id
from .storage import quote
from .store import Org

COLLECTION_LIMIT = 200
VERSION_LABELS = {59: "Winter '24", 60: "Spring '24", 61: "Summer '24", 62: "Winter '25",
                  63: "Spring '25", 64: "Summer '25", 65: "Winter '26", 66: "Spring '26"}


def versions(org: Org, req: Request) -> Response:
    out = []
    for v in range(31, 67):
        season = VERSION_LABELS.get(v, f"Version {v}")
        out.append({"label": season, "url": f"/services/data/v{v}.0", "version": f"{v}.0"})
    return json_response(200, out)


def resources(org: Org, req: Request) -> Response:
    base = f"/services/data/v{req.version}"
    names = ["sobjects", "query", "queryAll", "limits", "composite", "jobs"]
    return json_response(200, {n: f"{base}/{n}" for n in names})


def limits(org: Org, req: Request) -> Response:
    s = org.settings
    remaining = max(0, s.api_max - org.api_used)
    query_jobs = sum(1 for j in org.jobs.values() if j["kind"] == "query")
    return json_response(200, {
        "DailyApiRequests": {"Max": s.api_max, "Remaining": remaining},
        "DailyAsyncApexExecutions": {"Max": 250000, "Remaining": 250000},
        "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
        "DailyBulkV2QueryFileStorageMB": {"Max": 976562, "Remaining": 976562},
        "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000 - query_jobs},
        "DataStorageMB": {"Max": 1024, "Remaining": 1024},
        "FileStorageMB": {"Max": 20480, "Remaining": 20480},
        "HourlyTimeBasedWorkflow": {"Max": 50, "Remaining": 50},
        "SingleEmail": {"Max": 5000, "Remaining": 5000},
    })


def record_count(org: Org, req: Request) -> Response:
    names = [n for n in (req.query.get("sObjects") or "").split(",") if n]
    objs = [org.schema.get(n) for n in names] if names else org.schema.visible_objects()
    out = []
    for obj in objs:
        if obj is None:
            continue
        n = org.db.execute(f'SELECT COUNT(*) FROM {quote(obj.name)} WHERE "IsDeleted" = 0'
                           ).fetchone()[0]
        if n:
            out.append({"count": n, "name": obj.name})
    return json_response(200, {"sObjects": out})


# --- describe ----------------------------------------------------------------------------------

def describe_global(org: Org, req: Request) -> Response:
    return json_response(200, {"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": [
        o.global_entry(req.version) for o in sorted(org.schema.visible_objects(),
                                                     key=lambda o: o.name)]})


def describe(org: Org, req: Request) -> Response:
    obj = _obj(org, req)
    return json_response(200, org.schema.describe(obj.name, req.version))


def basic_info(org: Org, req: Request) -> Response:
    obj = _obj(org, req)
    return json_response(200, {"objectDescribe": obj.global_entry(req.version), "recentItems": []})


def _obj(org: Org, req: Request):
    obj = org.schema.get(req.params["o"])
    if obj is None:
        raise not_found()
    return obj


# --- query -------------------------------------------------------------------------------------

def query(org: Org, req: Request) -> Response:
    return _start_query(org, req, include_deleted=False)


def query_all(org: Org, req: Request) -> Response:
    return _start_query(org, req, include_deleted=True)


def _start_query(org: Org, req: Request, *, include_deleted: bool) -> Response:
    text = req.query.get("q")
    if text is None:
        raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
    if org.take_fault("queryAll" if include_deleted else "query", {"query_timeout"}):
        raise ApiError(400, "QUERY_TIMEOUT", "Your query request was running for too long.")
    prepared = soql.prepare(text, org.schema, now=org.now(), include_deleted=include_deleted)
    if prepared.count_only:
        return json_response(200, {"totalSize": prepared.total(org.db), "done": True,
                                   "records": []})
    if prepared.is_aggregate:
        rows = prepared.aggregate_records(org.db)
        if len(rows) > 2000:
            raise ApiError(400, "EXCEEDED_ID_LIMIT", "Aggregate query does not support "
                           "queryMore(), use LIMIT to restrict the results to a single batch")
        return json_response(200, {"totalSize": len(rows), "done": True, "records": rows})
    rowids = prepared.rowids(org.db)
    batch = _batch_size(req)
    cursor = {"prepared": prepared, "rowids": rowids, "batch": batch,
              "last_used": time.monotonic()}
    return _page(org, req, cursor, 0)


def _batch_size(req: Request) -> int:
    header = req.headers.get("sforce-query-options", "")
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "batchsize" and value.strip().isdigit():
            return max(200, min(2000, int(value)))
    return 2000


def _page(org: Org, req: Request, cursor: dict, offset: int) -> Response:
    prepared, rowids, batch = cursor["prepared"], cursor["rowids"], cursor["batch"]
    page = rowids[offset:offset + batch]
    body = {"totalSize": len(rowids), "done": offset + batch >= len(rowids),
            "records": prepared.records(org.db, page, req.version)}
    if not body["done"]:
        locator = cursor.get("locator")
        if locator is None:
            locator = org.new_id("01g")[:15] + "AAA"
            cursor["locator"] = locator
            _register_cursor(org, locator, cursor)
        body["nextRecordsUrl"] = f"/services/data/v{req.version}/query/{locator}-{offset + batch}"
    elif cursor.get("locator"):
        org.cursors.pop(cursor["locator"], None)
    body = {"totalSize": body["totalSize"], "done": body["done"],
            **({"nextRecordsUrl": body["nextRecordsUrl"]} if "nextRecordsUrl" in body else {}),
            "records": body["records"]}
    return json_response(200, body)


def _register_cursor(org: Org, locator: str, cursor: dict) -> None:
    now = time.monotonic()
    for key in [k for k, c in org.cursors.items()
                if now - c["last_used"] > org.settings.locator_idle_seconds]:
        del org.cursors[key]
    while len(org.cursors) >= org.settings.max_open_locators:
        oldest = min(org.cursors, key=lambda k: org.cursors[k]["last_used"])
        del org.cursors[oldest]
    org.cursors[locator] = cursor


def query_more(org: Org, req: Request) -> Response:
    locator, _, offset = req.params["locator"].partition("-")
    cursor = org.cursors.get(locator)
    if cursor is None or not offset.isdigit() or int(offset) > len(cursor["rowids"]):
        raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
    if time.monotonic() - cursor["last_used"] > org.settings.locator_idle_seconds:
        org.cursors.pop(locator, None)
        raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
    if org.take_fault("queryMore", {"query_timeout"}):
        raise ApiError(400, "QUERY_TIMEOUT", "Your query request was running for too long.")
    cursor["last_used"] = time.monotonic()
    return _page(org, req, cursor, int(offset))


# --- single records ----------------------------------------------------------------------------

def create(org: Org, req: Request) -> Response:
    obj = _obj(org, req)
    _lock_fault(org, "sobject.create")
    record_id = R.create(org, obj.name, req.json())
    return json_response(201, {"id": record_id, "success": True, "errors": []},
                         {"Location": f"/services/data/v{req.version}/sobjects/{obj.name}/"
                                      f"{record_id}"})


def record(org: Org, req: Request) -> Response:
    obj = _obj(org, req)
    record_id = req.params["id"]
    if req.method == "GET":
        rid = try_normalize_id(record_id)
        row = R.fetch_row(org, obj, rid) if rid else None
        if row is None or row["IsDeleted"]:
            raise not_found()
        fields = [f for f in (req.query.get("fields") or "").split(",") if f]
        return json_response(200, R.render(org, obj, row, req.version, fields or None))
    if req.method == "PATCH":
        _lock_fault(org, "sobject.update")
        R.update(org, obj.name, record_id, req.json())
        return no_content()
    _lock_fault(org, "sobject.delete")
    R.delete(org, record_id, sobject=obj.name)
    return no_content()


def by_external_id(org: Org, req: Request) -> Response:
    obj = _obj(org, req)
    field_name, value = req.params["f"], req.params.get("val", "")
    if req.method == "POST" and field_name.lower() == "id" and not value:
        return create(org, req)
    f = obj.field(field_name)
    if f is None or not (f.external_id or f.id_lookup):
        raise ApiError(404, "NOT_FOUND", "Provided external ID field does not exist or is not "
                       f"accessible: {field_name}")
    if req.method == "PATCH":
        _lock_fault(org, "sobject.upsert")
        if req.query.get("updateOnly", "").lower() == "true" and not R.find_by(org, obj, f, value):
            raise not_found()
        record_id, created = R.upsert(org, obj.name, f.name, value, req.json())
        return json_response(201 if created else 200,
                             {"id": record_id, "success": True, "errors": [], "created": created},
                             {"Location": f"/services/data/v{req.version}/sobjects/{obj.name}/"
                                          f"{record_id}"} if created else None)
    matches = [normalize_id(value)] if f.name == "Id" else R.find_by(org, obj, f, value)
    if len(matches) > 1:
        raise ApiError(300, "MULTIPLE_RECORDS", "More than one record found", extra={
            "matches": [f"/services/data/v{req.version}/sobjects/{obj.name}/{m}" for m in matches]})
    if not matches:
        raise not_found()
    if req.method == "DELETE":
        R.delete(org, matches[0], sobject=obj.name)
        return no_content()
    return json_response(200, R.render(org, obj, R.fetch_row(org, obj, matches[0]), req.version))


def _lock_fault(org: Org, endpoint: str) -> None:
    if org.take_fault(endpoint, {"unable_to_lock_row"}):
        raise ApiError(400, "UNABLE_TO_LOCK_ROW",
                       "unable to obtain exclusive access to this record or 1 records", [])


# --- sObject Collections -----------------------------------------------------------------------

def collections(org: Org, req: Request) -> Response:
    if req.method == "GET":
        return _collection_get(org, req)
    if req.method == "DELETE":
        ids = [i for i in (req.query.get("ids") or "").split(",") if i]
        all_or_none = req.query.get("allOrNone", "false").lower() == "true"
        _check_size(ids)
        return json_response(200, _each(org, "composite.sobjects", ids, all_or_none,
                                        lambda rid: (R.delete(org, rid), normalize_id(rid))[1],
                                        created=None))
    payload = req.json()
    if not isinstance(payload, dict) or not isinstance(payload.get("records"), list):
        raise ApiError(400, "JSON_PARSER_ERROR", "Expected an object with a records array")
    rows, all_or_none = payload["records"], bool(payload.get("allOrNone", False))
    _check_size(rows)
    ext_field = req.params.get("f")
    if ext_field:  # upsert: PATCH /composite/sobjects/{SObject}/{ExtIdField}
        obj = _obj(org, req)
        if ext_field.lower() == "id":
            raise ApiError(400, "INVALID_FIELD", "Id is not allowed as an external id field for "
                           "sObject Collections upsert")

        def upsert_one(rec):
            _need_type(rec, obj.name)
            key = next((k for k in rec if k.lower() == ext_field.lower()), None)
            if key is None:
                raise ApiError(400, "MISSING_ARGUMENT", f"{ext_field} not specified", [ext_field])
            return R.upsert(org, obj.name, ext_field, rec[key], _strip(rec))

        return json_response(200, _each(org, "composite.sobjects", rows, all_or_none,
                                        upsert_one, created=True))
    if req.method == "POST":
        def create_one(rec):
            if any(k.lower() == "id" for k in rec):
                raise ApiError(400, "INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an "
                               "insert call", ["Id"])
            return R.create(org, _need_type(rec), _strip(rec))

        return json_response(200, _each(org, "composite.sobjects", rows, all_or_none,
                                        create_one, created=False, omit_created=True))

    def update_one(rec):
        sobject = _need_type(rec)
        rid = rec.get("id") or rec.get("Id")
        if not rid:
            raise ApiError(400, "MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
        R.update(org, sobject, rid, _strip(rec))
        return normalize_id(rid)

    return json_response(200, _each(org, "composite.sobjects", rows, all_or_none, update_one,
                                    created=False, omit_created=True))


def _collection_get(org: Org, req: Request) -> Response:
    obj = _obj(org, req)
    ids = [i for i in (req.query.get("ids") or "").split(",") if i]
    fields = [f for f in (req.query.get("fields") or "").split(",") if f]
    if not fields:
        raise ApiError(400, "MISSING_ARGUMENT", "fields parameter is required")
    _check_size(ids)
    out = []
    for rid in ids:
        row = R.fetch_row(org, obj, normalize_id(rid))
        out.append(None if row is None or row["IsDeleted"] else
                   R.render(org, obj, row, req.version, fields))
    return json_response(200, out)


def _check_size(items: list) -> None:
    if len(items) > COLLECTION_LIMIT:
        raise ApiError(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than "
                       "200 records into this call")


def _need_type(rec, expected: str | None = None) -> str:
    if not isinstance(rec, dict):
        raise ApiError(400, "JSON_PARSER_ERROR", "Each record must be a JSON object")
    sobject = (rec.get("attributes") or {}).get("type")
    if not sobject:
        raise ApiError(400, "INVALID_TYPE", "Must send a concrete entity type.")
    if expected and sobject.lower() != expected.lower():
        raise ApiError(400, "INVALID_TYPE", f"Record type {sobject} does not match the URI type "
                       f"{expected}")
    return sobject


def _strip(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k != "attributes" and k.lower() != "id"}


def _each(org: Org, endpoint: str, items: list, all_or_none: bool, op, *, created,
          omit_created: bool = False) -> list[dict]:
    """Run ``op`` per item, each in its own savepoint; allOrNone rolls back the lot."""
    results: list[dict] = []
    failed = False
    outer = org.tx()
    outer.__enter__()
    try:
        for item in items:
            try:
                _lock_fault(org, endpoint)
                with org.tx():
                    value = op(item)
                if isinstance(value, tuple):
                    rid, was_created = value
                else:
                    rid, was_created = value, created
                result = {"id": rid, "success": True, "errors": []}
                if created is not None and not omit_created:
                    result["created"] = was_created
                results.append(result)
            except ApiError as err:
                failed = True
                results.append({"success": False, "errors": [err.as_record_error()]})
                if created is None and isinstance(item, str):
                    results[-1]["id"] = item
    except BaseException:
        outer.__exit__(Exception, Exception(), None)
        raise
    if failed and all_or_none:
        outer.__exit__(ApiError, ApiError(400, "", ""), None)
        rolled = {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                  "message": "Record rolled back because not all records were valid and the "
                             "request was using AllOrNone header", "fields": []}
        results = [{"success": False, "errors": [rolled]} if r["success"] else r for r in results]
    else:
        outer.__exit__(None, None, None)
    return results


# --- composite ---------------------------------------------------------------------------------

def composite_batch(org: Org, req: Request, dispatch) -> Response:
    payload = req.json()
    subs = payload.get("batchRequests") if isinstance(payload, dict) else None
    if not isinstance(subs, list):
        raise ApiError(400, "JSON_PARSER_ERROR", "batchRequests is required")
    if len(subs) > 25:
        raise ApiError(400, "INVALID_BATCH_REQUEST", "A batch cannot contain more than 25 "
                       "requests")
    halt = bool(payload.get("haltOnError"))
    results, has_errors, halted = [], False, False
    for sub in subs:
        if halted:
            results.append({"statusCode": 412, "result": [{
                "errorCode": "BATCH_PROCESSING_HALTED",
                "message": "Batch processing halted per request"}]})
            continue
        url = "/services/data/" + str(sub.get("url", "")).lstrip("/")
        body = sub.get("richInput")
        resp = dispatch(req, sub.get("method", "GET").upper(), url, body, count=True)
        results.append({"statusCode": resp.status, "result": resp.json()})
        if resp.status >= 400:
            has_errors = True
            halted = halt
    return json_response(200, {"hasErrors": has_errors, "results": results})


def composite(org: Org, req: Request, dispatch) -> Response:
    payload = req.json()
    subs = payload.get("compositeRequest") if isinstance(payload, dict) else None
    if not isinstance(subs, list):
        raise ApiError(400, "JSON_PARSER_ERROR", "compositeRequest is required")
    if len(subs) > 25:
        raise ApiError(400, "INVALID_BATCH_REQUEST", "The composite request cannot contain more "
                       "than 25 subrequests")
    heavy = [s for s in subs if isinstance(s, dict) and _is_query_or_collection(s.get("url", ""))]
    if len(heavy) > 5:
        raise ApiError(400, "INVALID_BATCH_REQUEST", "A composite request can contain at most 5 "
                       "query or sObject Collections subrequests")
    all_or_none = bool(payload.get("allOrNone"))
    refs: dict[str, object] = {}
    out: list[dict] = []
    halted = {"errorCode": "PROCESSING_HALTED", "message": "The transaction was rolled back "
              "since another operation in the same transaction failed."}
    tx = org.tx()
    tx.__enter__()
    failed = False
    try:
        for sub in subs:
            ref_id = sub.get("referenceId")
            if failed and all_or_none:
                out.append({"body": [halted], "httpHeaders": {}, "httpStatusCode": 400,
                            "referenceId": ref_id})
                continue
            try:
                url = _resolve_refs(sub.get("url", ""), refs)
                body = _resolve_refs(sub.get("body"), refs)
            except KeyError as missing:
                out.append({"body": [{"errorCode": "PROCESSING_HALTED", "message":
                                      f"Invalid reference specified. No value for {missing.args[0]}"
                                      " found"}], "httpHeaders": {}, "httpStatusCode": 400,
                            "referenceId": ref_id})
                failed = True
                continue
            resp = dispatch(req, sub.get("method", "GET").upper(), url, body, count=False)
            parsed = resp.json()
            refs[ref_id] = parsed
            headers = {"Location": resp.headers["Location"]} if "Location" in resp.headers else {}
            out.append({"body": parsed, "httpHeaders": headers, "httpStatusCode": resp.status,
                        "referenceId": ref_id})
            if resp.status >= 400:
                failed = True
    except BaseException:
        tx.__exit__(Exception, Exception(), None)
        raise
    if failed and all_or_none:
        tx.__exit__(ApiError, ApiError(400, "", ""), None)
        out = [o if o["httpStatusCode"] >= 400 else {**o, "body": [halted], "httpHeaders": {},
                                                     "httpStatusCode": 400} for o in out]
    else:
        tx.__exit__(None, None, None)
    return json_response(200, {"compositeResponse": out})


def _is_query_or_collection(url: str) -> bool:
    path = str(url).split("?", 1)[0].rstrip("/")
    return bool(re.search(r"/(query|queryAll)$|/composite/sobjects", path))


def _resolve_refs(value, refs: dict):
    if isinstance(value, str):
        def sub(m):
            path = m.group(1)
            ref, _, rest = path.partition(".")
            if ref not in refs:
                raise KeyError(path)
            current = refs[ref]
            for part in re.findall(r"[^.\[\]]+", rest):
                current = current[int(part)] if isinstance(current, list) else current[part]
            return str(current)

        return re.sub(r"@\{([^}]+)\}", sub, value)
    if isinstance(value, dict):
        return {k: _resolve_refs(v, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_refs(v, refs) for v in value]
    return value


# --- replication -------------------------------------------------------------------------------

def _window(org: Org, req: Request) -> tuple[datetime, datetime, datetime]:
    q = req.query
    start = V.parse_datetime(q.get("start", ""))
    end = V.parse_datetime(q.get("end", ""))
    for name, value in (("start", start), ("end", end)):
        if value is None:
            raise ApiError(400, "INVALID_REPLICATION_DATE",
                           f"{name} must be a valid dateTime with a time zone: {q.get(name)!r}")
    grain = org.settings.replication_granularity_seconds
    start, end = _cut(start, grain), _cut(end, grain)
    now = org.now()
    if start >= end:
        raise ApiError(400, "INVALID_REPLICATION_DATE", "startDate must chronologically precede "
                       "endDate by more than one minute")
    if start < now - timedelta(days=org.settings.replication_window_days):
        raise ApiError(400, "INVALID_REPLICATION_DATE", "startDate cannot be more than "
                       f"{org.settings.replication_window_days} days ago")
    latest = min(end, now - timedelta(seconds=org.settings.latest_date_lag_seconds))
    latest = _cut(latest, grain)
    return start, end, latest


def _cut(value: datetime, grain: int) -> datetime:
    """``value`` cut to the replication endpoints' granularity (Salesforce: the minute)."""
    if grain == 60:
        return value.replace(second=0)
    seconds = value.second - value.second % max(1, grain)
    return value.replace(second=seconds, microsecond=0)


def updated(org: Org, req: Request) -> Response:
    obj = _obj(org, req)
    if not obj.replicateable:
        raise ApiError(400, "INVALID_TYPE", f"sObject type '{obj.name}' is not replicateable")
    start, _end, latest = _window(org, req)
    ids = [r[0] for r in org.db.execute(
        f'SELECT "Id" FROM {quote(obj.name)} WHERE "SystemModstamp" >= ? AND '
        f'"SystemModstamp" < ? AND "IsDeleted" = 0 ORDER BY "SystemModstamp", "Id"',
        (V.format_datetime(start), V.format_datetime(latest))).fetchall()]
    if len(ids) > 600_000:
        raise ApiError(400, "EXCEEDED_ID_LIMIT", "too many ids: narrow the date range")
    return json_response(200, {"ids": ids, "latestDateCovered": _dt(latest)})


def deleted(org: Org, req: Request) -> Response:
    obj = _obj(org, req)
    if not obj.replicateable:
        raise ApiError(400, "INVALID_TYPE", f"sObject type '{obj.name}' is not replicateable")
    start, _end, latest = _window(org, req)
    org.purge_expired()
    floor = org.now() - timedelta(days=org.settings.deleted_log_days)
    oldest = org.db.execute("SELECT MIN(deleted_date) FROM _deleted_log WHERE sobject = ?",
                            (obj.name,)).fetchone()[0]
    earliest = max(floor, V.parse_datetime(oldest)) if oldest else floor
    earliest = earliest.replace(second=0)
    if org.settings.reject_start_before_earliest and start < earliest:
        raise ApiError(400, "INVALID_REPLICATION_DATE", "startDate is before the earliest date "
                       "available")
    rows = org.db.execute("SELECT id, deleted_date FROM _deleted_log WHERE sobject = ? AND "
                          "deleted_date >= ? AND deleted_date < ? ORDER BY deleted_date, id",
                          (obj.name, V.format_datetime(start), V.format_datetime(latest))
                          ).fetchall()
    return json_response(200, {
        "deletedRecords": [{"id": r[0], "deletedDate": r[1] + ".000+0000"} for r in rows],
        "earliestDateAvailable": _dt(earliest), "latestDateCovered": _dt(latest)})


def _dt(value: datetime) -> str:
    return V.format_datetime(value) + ".000+0000"


__all__ = ["error_response"]

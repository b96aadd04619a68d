"""Bulk API 2.0: query jobs (CSV pages with ``Sforce-Locator``) and ingest jobs.

Jobs run synchronously when they become runnable, so a client's first poll already sees
``JobComplete``: nobody sleeps for the emulator.
"""

from __future__ import annotations

import base64
import csv
import io
import time

from . import records as R
from . import soql
from .errors import ApiError, not_found
from .http import Request, Response, json_response, no_content
from .ids import normalize_id
from .store import Org

DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^",
              "BACKQUOTE": "`"}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
CSV_TYPE = "text/csv"
DEFAULT_MAX_RECORDS = 50_000
INGEST_OPERATIONS = {"insert", "update", "upsert", "delete", "hardDelete"}


def _stamp(org: Org) -> str:
    return org.now().strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _job_info(job: dict) -> dict:
    keys = ["id", "operation", "object", "createdById", "createdDate", "systemModstamp", "state",
            "externalIdFieldName", "concurrencyMode", "contentType", "apiVersion", "jobType",
            "contentUrl", "lineEnding", "columnDelimiter", "numberRecordsProcessed",
            "numberRecordsFailed", "retries", "totalProcessingTime", "apiActiveProcessingTime",
            "apexProcessingTime", "errorMessage"]
    return {k: job[k] for k in keys if k in job and job[k] is not None}


def _new_job(org: Org, req: Request, kind: str, payload: dict) -> dict:
    delimiter = payload.get("columnDelimiter", "COMMA")
    line_ending = payload.get("lineEnding", "LF")
    if delimiter not in DELIMITERS:
        raise ApiError(400, "INVALIDJOB", f"Invalid column delimiter: {delimiter}")
    if line_ending not in LINE_ENDINGS:
        raise ApiError(400, "INVALIDJOB", f"Invalid line ending: {line_ending}")
    now = _stamp(org)
    return {"id": org.new_id("750"), "kind": kind, "operation": payload.get("operation"),
            "createdById": org.sync_user_id(), "createdDate": now, "systemModstamp": now,
            "concurrencyMode": "Parallel", "contentType": "CSV", "apiVersion": float(req.version),
            "lineEnding": line_ending, "columnDelimiter": delimiter, "retries": 0,
            "totalProcessingTime": 0, "apiActiveProcessingTime": 0, "apexProcessingTime": 0}


def _get_job(org: Org, req: Request, kind: str) -> dict:
    job = org.jobs.get(req.params["job"])
    if job is None or job["kind"] != kind:
        raise not_found()
    return job


def _csv(rows: list[list[str]], delimiter: str, line_ending: str) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator=line_ending,
               quoting=csv.QUOTE_ALL).writerows(rows)
    return buf.getvalue().encode("utf-8")


def list_jobs(org: Org, req: Request, kind: str) -> Response:
    jobs = [_job_info(j) for j in org.jobs.values() if j["kind"] == kind]
    return json_response(200, {"done": True, "records": jobs, "nextRecordsUrl": None})


# --- query jobs --------------------------------------------------------------------------------

def create_query_job(org: Org, req: Request) -> Response:
    payload = req.json()
    if not isinstance(payload, dict) or not payload.get("query"):
        raise ApiError(400, "INVALIDJOB", "The query is required")
    operation = payload.get("operation", "query")
    if operation not in {"query", "queryAll"}:
        raise ApiError(400, "INVALIDJOB", f"Invalid operation: {operation}")
    job = _new_job(org, req, "query", payload)
    started = time.monotonic()
    prepared = soql.prepare(payload["query"], org.schema, now=org.now(),
                            include_deleted=operation == "queryAll", bulk=True)
    job.update(object=prepared.sobject.name, jobType="V2Query", prepared=prepared,
               state="UploadComplete")
    org.jobs[job["id"]] = job
    response = json_response(200, _job_info(job))
    if org.take_fault("bulk2.query.create", {"query_timeout"}):
        job.update(state="Failed", errorMessage="QUERY_TIMEOUT: Your query request was running "
                   "for too long.", numberRecordsProcessed=0)
    else:
        job["rowids"] = prepared.rowids(org.db)
        job.update(state="JobComplete", numberRecordsProcessed=len(job["rowids"]),
                   totalProcessingTime=int((time.monotonic() - started) * 1000))
    job["systemModstamp"] = _stamp(org)
    return response


def query_job(org: Org, req: Request) -> Response:
    job = _get_job(org, req, "query")
    if req.method == "DELETE":
        del org.jobs[job["id"]]
        return no_content()
    if req.method == "PATCH":
        state = (req.json() or {}).get("state")
        if state != "Aborted":
            raise ApiError(400, "INVALIDJOB", f"Invalid state transition to {state}")
        if job["state"] in {"JobComplete", "Failed"}:
            raise ApiError(400, "INVALIDJOB", f"Job is already {job['state']}")
        job.update(state="Aborted", systemModstamp=_stamp(org))
    return json_response(200, _job_info(job))


def query_results(org: Org, req: Request) -> Response:
    job = _get_job(org, req, "query")
    if job["state"] != "JobComplete":
        raise ApiError(412, "JOB_NOT_COMPLETE", "can only download query results of successfully "
                       "completed bulk job with status: JOB_COMPLETE. Current status: "
                       + job["state"].upper())
    q = req.query
    try:
        max_records = int(q.get("maxRecords") or DEFAULT_MAX_RECORDS)
        locator = q.get("locator") or ""
        offset = int(base64.b64decode(locator + "=" * (-len(locator) % 4)).decode()) \
            if locator else 0
    except (ValueError, KeyError):
        raise ApiError(400, "INVALIDLOCATOR", "Invalid locator or maxRecords") from None
    if max_records <= 0:
        raise ApiError(400, "INVALIDLOCATOR", "maxRecords must be positive")
    rowids = job["rowids"]
    page = rowids[offset:offset + max_records]
    prepared = job["prepared"]
    rows = [prepared.columns] + prepared.csv_rows(org.db, page)
    body = _csv(rows, DELIMITERS[job["columnDelimiter"]], LINE_ENDINGS[job["lineEnding"]])
    next_offset = offset + len(page)
    locator = base64.b64encode(str(next_offset).encode()).decode().rstrip("=") \
        if next_offset < len(rowids) else "null"
    return Response(200, body, CSV_TYPE, {"Sforce-NumberOfRecords": str(len(page)),
                                          "Sforce-Locator": locator})


# --- ingest jobs -------------------------------------------------------------------------------

def create_ingest_job(org: Org, req: Request) -> Response:
    payload = req.json()
    if not isinstance(payload, dict):
        raise ApiError(400, "INVALIDJOB", "A JSON job definition is required")
    operation = payload.get("operation")
    if operation not in INGEST_OPERATIONS:
        raise ApiError(400, "INVALIDJOB", f"Invalid operation: {operation}")
    obj = org.schema.get(payload.get("object") or "")
    if obj is None:
        raise ApiError(400, "INVALIDJOB", f"Unable to find object: {payload.get('object')}")
    if payload.get("contentType", "CSV") != "CSV":
        raise ApiError(400, "INVALIDJOB", "Only CSV content is supported")
    ext = payload.get("externalIdFieldName")
    if operation == "upsert":
        f = obj.field(ext or "")
        if f is None or not (f.external_id or f.id_lookup or f.name == "Id"):
            raise ApiError(400, "INVALIDJOB", f"External ID field {ext} not found or not an "
                           f"external id on {obj.name}")
    job = _new_job(org, req, "ingest", payload)
    job.update(object=obj.name, externalIdFieldName=ext if operation == "upsert" else None,
               jobType="V2Ingest", state="Open", data=[],
               contentUrl=f"services/data/v{req.version}/jobs/ingest/{job['id']}/batches")
    org.jobs[job["id"]] = job
    return json_response(200, _job_info(job))


def upload(org: Org, req: Request) -> Response:
    job = _get_job(org, req, "ingest")
    if job["state"] != "Open":
        raise ApiError(409, "INVALIDJOB", f"Job is not open for uploads: {job['state']}")
    job["data"].append(req.body)
    if sum(len(d) for d in job["data"]) > 150 * 1024 * 1024:
        raise ApiError(400, "INVALIDJOB", "Job data exceeds 150 MB")
    return Response(201)


def ingest_job(org: Org, req: Request) -> Response:
    job = _get_job(org, req, "ingest")
    if req.method == "DELETE":
        if job["state"] in {"Open", "UploadComplete", "InProgress"}:
            raise ApiError(400, "INVALIDJOB", "Abort the job before deleting it")
        del org.jobs[job["id"]]
        return no_content()
    if req.method == "PATCH":
        state = (req.json() or {}).get("state")
        if state == "Aborted":
            if job["state"] in {"JobComplete", "Failed", "Aborted"}:
                raise ApiError(400, "INVALIDJOB", f"Job is already {job['state']}")
            job.update(state="Aborted", systemModstamp=_stamp(org))
            header, rows = _parse(job)
            job.update(results_header=header, successes=[], failures=[], unprocessed=rows,
                       numberRecordsProcessed=0, numberRecordsFailed=0)
        elif state == "UploadComplete":
            if job["state"] != "Open":
                raise ApiError(400, "INVALIDJOB", f"Job is not open: {job['state']}")
            _process(org, job)
        else:
            raise ApiError(400, "INVALIDJOB", f"Invalid state transition to {state}")
    return json_response(200, _job_info(job))


def _parse(job: dict) -> tuple[list[str], list[list[str]]]:
    text = b"".join(job["data"]).decode("utf-8-sig")
    delimiter = DELIMITERS[job["columnDelimiter"]]
    rows = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if r]
    return (rows[0], rows[1:]) if rows else ([], [])


def _process(org: Org, job: dict) -> None:
    started = time.monotonic()
    header, rows = _parse(job)
    obj = org.schema.get(job["object"])
    job.update(results_header=header, successes=[], failures=[], unprocessed=[])
    operation = job["operation"]
    problem = _check_header(obj, header, operation)
    if problem:
        job.update(state="Failed", errorMessage=f"InvalidBatch : InvalidBatch : {problem}",
                   numberRecordsProcessed=0, numberRecordsFailed=0, systemModstamp=_stamp(org))
        return
    for row in rows:
        values = dict(zip(header, row, strict=False))
        try:
            if org.take_fault("bulk2.ingest.patch", {"unable_to_lock_row"}):
                raise ApiError(400, "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to "
                               "this record or 1 records", [])
            with org.tx():
                record_id, created = _apply_row(org, job, obj.name, values)
            job["successes"].append([record_id, "true" if created else "false", *row])
        except ApiError as err:
            job["failures"].append([values.get("Id", "") or "", err.as_bulk_error(), *row])
    job.update(state="JobComplete", numberRecordsProcessed=len(rows),
               numberRecordsFailed=len(job["failures"]), systemModstamp=_stamp(org),
               totalProcessingTime=int((time.monotonic() - started) * 1000))


def _check_header(obj, header: list[str], operation: str) -> str | None:
    if not header:
        return "No data in the job"
    if operation in {"delete", "hardDelete"}:
        return None if [h.lower() for h in header] == ["id"] else \
            "Delete operations take exactly one column: Id"
    for name in header:
        base = name.split(".", 1)[0]
        if "." in name:
            if obj.relationship(base) is None:
                return f"Field name not found : {name}"
        elif obj.field(name) is None:
            return f"Field name not found : {name}"
    return None


def _apply_row(org: Org, job: dict, sobject: str, values: dict) -> tuple[str, bool]:
    operation = job["operation"]
    if operation in {"delete", "hardDelete"}:
        rid = next(iter(values.values()))
        R.delete(org, rid, sobject=sobject, hard=operation == "hardDelete")
        return normalize_id(rid), False
    body: dict = {}
    for name, cell in values.items():
        if cell == "":  # an empty cell leaves the field unchanged
            continue
        if "." in name:
            rel, ext_field = name.split(".", 1)
            body[rel] = {ext_field: cell}
        else:
            body[name] = None if cell == "#N/A" else cell
    if operation == "insert":
        return R.create(org, sobject, body, csv=True), True
    if operation == "update":
        rid = next((v for k, v in body.items() if k.lower() == "id"), None)
        if not rid:
            raise ApiError(400, "MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
        R.update(org, sobject, rid, body, csv=True)
        return normalize_id(rid), False
    ext = job["externalIdFieldName"]
    key = next((k for k in body if k.lower() == ext.lower()), None)
    if key is None:
        raise ApiError(400, "MISSING_ARGUMENT", f"{ext} not specified", [ext])
    value = body.pop(key)
    body = {k: v for k, v in body.items() if k.lower() != "id"}
    if ext.lower() == "id":
        R.update(org, sobject, value, body, csv=True)
        return normalize_id(value), False
    return _upsert_csv(org, sobject, ext, value, body)


def _upsert_csv(org: Org, sobject: str, ext: str, value: str, body: dict) -> tuple[str, bool]:
    obj = org.schema.get(sobject)
    f = obj.field(ext)
    matches = R.find_by(org, obj, f, value)
    if len(matches) > 1:
        raise ApiError(400, "DUPLICATE_EXTERNAL_ID", f"{ext}: more than one record found for "
                       f"external id field: {value}", [ext])
    if matches:
        R.update(org, sobject, matches[0], body, csv=True)
        return matches[0], False
    return R.create(org, sobject, {**body, f.name: value}, csv=True), True


def ingest_results(org: Org, req: Request) -> Response:
    job = _get_job(org, req, "ingest")
    segment = req.params["segment"].lower()
    if "results_header" not in job:
        raise ApiError(400, "INVALIDJOB", "The job has not been processed yet")
    header = job["results_header"]
    if segment == "successfulresults":
        rows = [["sf__Id", "sf__Created", *header], *job["successes"]]
    elif segment == "failedresults":
        rows = [["sf__Id", "sf__Error", *header], *job["failures"]]
    else:
        rows = [header, *job["unprocessed"]]
    return Response(200, _csv(rows, ",", "\n"), CSV_TYPE)

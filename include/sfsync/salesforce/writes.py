"""Writing to Salesforce: sObject Collections inside /composite, Bulk API 2.0 ingest,
per-record outcomes and their classification.

Up to 200 records go in one collection and up to five collections in one /composite call, so
1,000 records cost one API call. ``allOrNone`` is off: one bad record never blocks the other
199 of its collection. Updates and deletes of more than ``push.bulk_threshold`` records of one
object go through one Bulk API 2.0 ingest job instead (:func:`write_bulk`); creates always use
collections. Each record's outcome is classified:

* transient (row lock, timeout, rolled back with others): retried within the cycle with
  backoff, then left pending for the next cycle;
* data or permission errors (validation rule, picklist, ``INSUFFICIENT_ACCESS...``,
  ``DUPLICATES_DETECTED``, ...): the push records them in ``sfsync_error`` with Salesforce's
  message;
* ``REQUEST_LIMIT_EXCEEDED`` on the call: :class:`RequestLimitExceeded`, the push stops for the
  cycle and nothing is lost (the outbox keeps every pending record).

Other call-level failures (5xx, network, expired session) raise and the Airflow task retries
with backoff; the push resumes from the outbox.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Hashable
from dataclasses import dataclass
from decimal import Decimal

from more_itertools import chunked
from simple_salesforce.exceptions import SalesforceOperationError
from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_exponential

from include.sfsync.errors import RequestLimitExceeded, WriteInterrupted
from include.sfsync.salesforce.client import COMPOSITE_QUERY_LIMIT, SalesforceClient, limit_hit

log = logging.getLogger(__name__)

COLLECTION_SIZE = 200
# A Bulk ingest row that was never processed (the job was aborted, or its result is missing).
BULK_UNPROCESSED = "BULK_UNPROCESSED"
TRANSIENT_CODES = frozenset({
    "UNABLE_TO_LOCK_ROW", "ALL_OR_NONE_OPERATION_ROLLED_BACK", "SERVER_UNAVAILABLE",
    "REQUEST_RUNNING_TOO_LONG", "QUERY_TIMEOUT", "INVALID_SESSION_ID", "UNKNOWN_EXCEPTION",
    BULK_UNPROCESSED})
# Bulk API 2.0 ingest operations by REST method. POST (create) is deliberately absent: a Bulk
# insert's results cannot be tied back to local rows (their order is not guaranteed and there
# is no Salesforce id or external id yet to match them by), so creates stay on collections,
# whose results come back in request order.
BULK_OPERATIONS = {"PATCH": "update", "DELETE": "delete"}


@dataclass(frozen=True)
class Outcome:
    ok: bool
    id: str | None = None
    code: str | None = None
    message: str | None = None
    fields: tuple[str, ...] = ()

    @property
    def transient(self) -> bool:
        return not self.ok and (self.code in TRANSIENT_CODES
                                or str(self.code).startswith(("HTTP_5", "HTTP_401")))

    @classmethod
    def failed(cls, code: str, message: str, fields=()) -> Outcome:
        return cls(False, None, code, message, tuple(fields))


def _outcome(result: dict) -> Outcome:
    if result.get("success"):
        return Outcome(True, result.get("id"))
    errors = result.get("errors") or [{}]
    first = errors[0]
    message = "; ".join(e.get("message") or "" for e in errors)
    return Outcome(False, result.get("id"), first.get("statusCode") or first.get("errorCode"),
                   message, tuple(first.get("fields") or ()))


def write_records(client: SalesforceClient, method: str, sobject: str,
                  records: list, *, upsert_on: str | None = None) -> list[Outcome]:
    """POST (create; an upsert on the External ID field ``upsert_on`` if given), PATCH
    (update, each record with its ``Id``) or DELETE (``records`` are ids) through collections
    packed into /composite calls; one outcome per record, in order."""
    subrequests, chunks = [], []
    for chunk in chunked(records, COLLECTION_SIZE):
        chunks.append(chunk)
        if method == "DELETE":
            subrequests.append({"method": "DELETE", "url": "/composite/sobjects?allOrNone=false"
                                "&ids=" + ",".join(chunk)})
        elif method == "POST" and upsert_on:
            subrequests.append({"method": "PATCH", "url": f"/composite/sobjects/{sobject}/"
                                f"{upsert_on}", "body": {
                "allOrNone": False,
                "records": [{"attributes": {"type": sobject}, **r} for r in chunk]}})
        else:
            subrequests.append({"method": method, "url": "/composite/sobjects", "body": {
                "allOrNone": False,
                "records": [{"attributes": {"type": sobject}, **r} for r in chunk]}})
    out: list[Outcome] = []
    per_call = COMPOSITE_QUERY_LIMIT  # collections per /composite call
    for call, call_chunks in zip(chunked(subrequests, per_call), chunked(chunks, per_call),
                                 strict=True):
        try:  # one call at a time: what earlier calls did is known if a later one fails
            results = client.composite(call)
        except Exception as exc:  # simple-salesforce raises one class per HTTP status
            done = dict(enumerate(out))
            if limit_hit(exc):
                raise RequestLimitExceeded(str(exc), done) from exc
            raise WriteInterrupted(f"{type(exc).__name__}: {exc}", done) from exc
        for chunk, result in zip(call_chunks, results, strict=True):
            body = result["body"]
            if result["status"] < 300 and isinstance(body, list) and len(body) == len(chunk):
                out += [_outcome(r) for r in body]
                continue
            first = body[0] if isinstance(body, list) and body else {}
            code = first.get("errorCode") or f"HTTP_{result['status']}"
            if code == "REQUEST_LIMIT_EXCEEDED":
                raise RequestLimitExceeded(first.get("message") or code, dict(enumerate(out)))
            out += [Outcome.failed(code, first.get("message") or str(body))] * len(chunk)
    return out


def write_with_retries(client: SalesforceClient, method: str, sobject: str,
                       items: list[tuple[Hashable, object]], *, retries: int,
                       backoff: float = 0.5, bulk_threshold: int | None = None,
                       upsert_on: str | None = None) -> dict[Hashable, Outcome]:
    """``items``: (key, record or id). Transient failures are sent again, up to ``retries``
    times with exponential backoff; the last outcome of every key is returned. Updates and
    deletes of more than ``bulk_threshold`` items go through a Bulk API 2.0 ingest job;
    creates are upserts on ``upsert_on`` when given."""
    outcomes: dict[Hashable, Outcome] = {}
    todo = list(items)
    first = True

    def send() -> list:
        """One attempt over what is left; returns the items that failed transiently."""
        nonlocal todo, first
        # Only the first attempt may go through Bulk: transient failures of a job (row locks)
        # are fewer and go back through collections, records of one account together.
        bulk = first and bulk_threshold is not None and method in BULK_OPERATIONS \
            and len(todo) > bulk_threshold
        first = False
        try:
            records = [r for _k, r in todo]
            results = write_bulk(client, method, sobject, records) if bulk else \
                write_records(client, method, sobject, records, upsert_on=upsert_on)
        except WriteInterrupted as exc:
            done = {k: o for k, o in outcomes.items() if not o.transient}
            done.update({todo[i][0]: o for i, o in exc.outcomes.items()})
            raise type(exc)(str(exc), done) from exc
        again = []
        for (key, record), outcome in zip(todo, results, strict=True):
            outcomes[key] = outcome
            if outcome.transient:
                again.append((key, record))
        todo = again
        return again

    Retrying(stop=stop_after_attempt(retries + 1), wait=wait_exponential(multiplier=backoff),
             retry=retry_if_result(bool), retry_error_callback=lambda _state: None,
             before_sleep=lambda _state: log.info("%s %s: %d transient failures, retrying",
                                                  method, sobject, len(todo)))(send)
    return outcomes


# --- Bulk API 2.0 ingest --------------------------------------------------------------------

def write_bulk(client: SalesforceClient, method: str, sobject: str,
               records: list) -> list[Outcome]:
    """PATCH (update) or DELETE (``records`` are ids) through one Bulk API 2.0 ingest job
    (simple-salesforce's ``bulk2``); one outcome per record, in order, like
    :func:`write_records`.

    API calls: create the job, upload the CSV, close it, poll until it completes (one poll when
    it is done by then), read the job, plus the failed / unprocessed results when there are
    any: 5 calls when every record succeeds, whatever the number of records. The successful
    results are read only when the job's counts do not account for every record.

    Results are matched to records by Id (their order is not guaranteed). A job that fails as a
    whole (``InvalidBatch``: a column the user may not write, ...) is sent again through
    collections, which report every record's own error.
    """
    operation = BULK_OPERATIONS[method]
    rows = [{"Id": r} for r in records] if method == "DELETE" else \
        [{k: bulk_cell(v) for k, v in r.items() if k != "attributes"} for r in records]
    if not rows:
        return []
    bulk = getattr(client.sf.bulk2, sobject)
    out: list[Outcome | None] = [None] * len(rows)
    try:
        jobs = getattr(bulk, operation)(records=rows, wait=client.bulk_poll_seconds)
        offset = 0
        for job in jobs:  # one job unless the CSV is over ~100 MB (simple-salesforce splits)
            total = int(job.get("numberRecordsTotal") or 0)
            _settle_job(bulk, job, rows, range(offset, offset + total), out)
            offset += total
    except SalesforceOperationError as exc:  # the job failed or was aborted as a whole
        log.warning("Bulk %s of %d %s failed (%s): sending them through collections",
                    operation, len(rows), sobject, exc)
        return write_records(client, method, sobject, records)
    except Exception as exc:  # simple-salesforce raises one class per HTTP status
        if limit_hit(exc):
            # updates and deletes are idempotent: whatever the job did is sent again later
            raise RequestLimitExceeded(str(exc)) from exc
        raise
    return [o or Outcome.failed(BULK_UNPROCESSED, "no Bulk result for this record")
            for o in out]


def _settle_job(bulk, job: dict, rows: list[dict], part: range, out: list) -> None:
    """Fill ``out[i]`` for the rows ``part`` of one finished ingest job."""
    job_id = job["job_id"]
    positions: dict[str, list[int]] = {}
    for i in part:
        positions.setdefault(str(rows[i]["Id"])[:15], []).append(i)

    def settle(result: dict, outcome: Outcome) -> bool:
        rid = result.get("Id") or result.get("sf__Id") or ""
        waiting = positions.get(rid[:15])
        if not waiting:
            return False
        i = waiting.pop(0)
        out[i] = Outcome(outcome.ok, outcome.id or str(rows[i]["Id"]), outcome.code,
                         outcome.message, outcome.fields)
        return True

    failed = int(job.get("numberRecordsFailed") or 0)
    unprocessed = len(part) - int(job.get("numberRecordsProcessed") or 0)
    settled = 0
    if failed:
        settled += sum(settle(r, bulk_error(r.get("sf__Error") or ""))
                       for r in _csv_rows(bulk.get_failed_records(job_id)))
    if unprocessed > 0:
        settled += sum(settle(r, Outcome.failed(BULK_UNPROCESSED, f"not processed by Bulk job "
                                                f"{job_id}"))
                       for r in _csv_rows(bulk.get_unprocessed_records(job_id)))
    if settled == failed + max(unprocessed, 0):
        for i in part:  # the job's counts account for every other record: it succeeded
            if out[i] is None:
                out[i] = Outcome(True, str(rows[i]["Id"]))
        return
    log.warning("Bulk job %s: %d failed and %d unprocessed records, %d of them found in its "
                "results; reading its successful results", job_id, failed, unprocessed, settled)
    for r in _csv_rows(bulk.get_successful_records(job_id)):
        settle(r, Outcome(True, r.get("sf__Id") or None))


def _csv_rows(text: str) -> list[dict]:
    """A Bulk results CSV (possibly empty: no header when there are no rows) as dicts."""
    if not text or not text.strip():
        return []
    return list(csv.DictReader(io.StringIO(text, newline="")))


_BULK_ERROR = re.compile(r"(?P<code>[A-Z][A-Z0-9_]*):(?P<rest>.*)", re.S)
_FIELD_LIST = re.compile(r"[A-Za-z0-9_.]+(?:,[A-Za-z0-9_.]+)*|")


def bulk_error(text: str) -> Outcome:
    """A Bulk ``sf__Error`` cell: ``CODE:message:Field1,Field2 --`` (Salesforce's format: the
    fields may be empty, ``INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--``, and
    the message may itself contain colons)."""
    text = text.strip()
    found = _BULK_ERROR.fullmatch(text)
    if not found:
        return Outcome.failed("BULK_ERROR", text or "Bulk API: no error message")
    rest = found["rest"].strip()
    rest = rest[:-2].rstrip() if rest.endswith("--") else rest
    message, fields = rest, ()
    if ":" in rest:
        head, tail = rest.rsplit(":", 1)
        if _FIELD_LIST.fullmatch(tail.strip()):
            message, fields = head, tuple(f for f in tail.strip().split(",") if f)
    return Outcome.failed(found["code"], message.strip(), fields)


def bulk_cell(value) -> str:
    """A JSON value (from :func:`sf_value`) as a Bulk CSV cell. An empty cell would leave the
    field unchanged in an update: ``#N/A`` sets it to null (so a text value that is literally
    ``#N/A`` cannot be written through Bulk). Booleans as true/false, numbers never in
    exponent notation; dates and datetimes are ISO text already."""
    if value is None or value == "":
        return "#N/A"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(Decimal(repr(value)), "f")
    return str(value)

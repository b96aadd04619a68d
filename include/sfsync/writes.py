"""Writing to Salesforce: sObject Collections inside /composite, per-record outcomes, error
classification and the ``sfsync_error`` rows of the push.

Up to 200 records go in one collection and up to five collections in one /composite call, so
1,000 records cost one API call. ``allOrNone`` is off: one bad record never blocks the other
199 of its collection. Each record's outcome is classified:

* transient (row lock, timeout, rolled back with others): retried within the cycle with
  backoff, then left pending for the next cycle;
* data or permission errors (validation rule, picklist, ``INSUFFICIENT_ACCESS...``,
  ``DUPLICATES_DETECTED``, ...): an ``sfsync_error`` row with Salesforce's message;
* ``REQUEST_LIMIT_EXCEEDED`` on the call: :class:`RequestLimitExceeded`, the push stops for the
  cycle and nothing is lost (the outbox keeps every pending record).

Other call-level failures (5xx, network, expired session) raise and the Airflow task retries
with backoff; the push resumes from the outbox.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import date, datetime

import sqlalchemy as sa

from include.sfsync.mdb import utcnow
from include.sfsync.salesforce import SalesforceClient

log = logging.getLogger(__name__)

COLLECTION_SIZE = 200
TRANSIENT_CODES = frozenset({
    "UNABLE_TO_LOCK_ROW", "ALL_OR_NONE_OPERATION_ROLLED_BACK", "SERVER_UNAVAILABLE",
    "REQUEST_RUNNING_TOO_LONG", "QUERY_TIMEOUT", "INVALID_SESSION_ID"})


class RequestLimitExceeded(RuntimeError):
    """The org's daily API allowance is spent: stop writing for this cycle. ``outcomes``: what
    earlier attempts of the same write already did (those records must not be sent again)."""

    def __init__(self, message: str, outcomes: dict | None = None):
        super().__init__(message)
        self.outcomes = outcomes or {}


@dataclass(frozen=True)
class Outcome:
    ok: bool
    id: str | None = None
    code: str | None = None
    message: str | None = None
    fields: tuple[str, ...] = ()

    @property
    def transient(self) -> bool:
        return not self.ok and self.code in TRANSIENT_CODES

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
                  records: list) -> list[Outcome]:
    """POST (create), PATCH (update, each record with its ``Id``) or DELETE (``records`` are
    ids) through collections packed into /composite calls; one outcome per record, in order."""
    subrequests, chunks = [], []
    for i in range(0, len(records), COLLECTION_SIZE):
        chunk = records[i:i + COLLECTION_SIZE]
        chunks.append(chunk)
        if method == "DELETE":
            subrequests.append({"method": "DELETE", "url": "/composite/sobjects?allOrNone=false"
                                "&ids=" + ",".join(chunk)})
        else:
            subrequests.append({"method": method, "url": "/composite/sobjects", "body": {
                "allOrNone": False,
                "records": [{"attributes": {"type": sobject}, **r} for r in chunk]}})
    if not subrequests:
        return []
    try:
        results = client.composite(subrequests)
    except Exception as exc:  # simple-salesforce raises one class per HTTP status
        if "REQUEST_LIMIT_EXCEEDED" in str(getattr(exc, "content", "")) + str(exc):
            raise RequestLimitExceeded(str(exc)) from exc
        raise
    out: list[Outcome] = []
    for chunk, result in zip(chunks, results, strict=True):
        body = result["body"]
        if result["status"] < 300 and isinstance(body, list) and len(body) == len(chunk):
            out += [_outcome(r) for r in body]
            continue
        first = body[0] if isinstance(body, list) and body else {}
        code = first.get("errorCode") or f"HTTP_{result['status']}"
        if code == "REQUEST_LIMIT_EXCEEDED":
            raise RequestLimitExceeded(first.get("message") or code)
        out += [Outcome.failed(code, first.get("message") or str(body))] * len(chunk)
    return out


def write_with_retries(client: SalesforceClient, method: str, sobject: str,
                       items: list[tuple[Hashable, object]], *, retries: int,
                       backoff: float = 0.5, bulk_threshold: int | None = None
                       ) -> dict[Hashable, Outcome]:
    """``items``: (key, record or id). Transient failures are sent again, up to ``retries``
    times with exponential backoff; the last outcome of every key is returned."""
    outcomes: dict[Hashable, Outcome] = {}
    todo = items
    for attempt in range(retries + 1):
        try:
            results = write_records(client, method, sobject, [r for _k, r in todo])
        except RequestLimitExceeded as exc:
            raise RequestLimitExceeded(str(exc), {k: o for k, o in outcomes.items()
                                                  if not o.transient}) from exc
        again = []
        for (key, record), outcome in zip(todo, results, strict=True):
            outcomes[key] = outcome
            if outcome.transient:
                again.append((key, record))
        if not again or attempt == retries:
            break
        log.info("%s %s: %d transient failures, retrying", method, sobject, len(again))
        time.sleep(backoff * 2 ** attempt)
        todo = again
    return outcomes


def record_error(conn, error_t: sa.Table, run_key: str, sf_object: str, outcome: Outcome, *,
                 sfdc_id: str | None, record: dict | None, direction: str = "push") -> None:
    conn.execute(error_t.insert().values(
        run_key=run_key, sf_object=sf_object, direction=direction, sfdc_id=sfdc_id,
        field=",".join(outcome.fields) or None, error_code=outcome.code,
        message=(outcome.message or "")[:4000],
        record=json.dumps(record, default=str) if record is not None else None,
        created_at=utcnow()))


# --- values ---------------------------------------------------------------------------------

def sf_value(sf_type: str, value):
    """A marketing-database value as Salesforce's JSON takes it (raises ValueError if the
    stored value cannot be one of this type: a column widened to text may hold anything)."""
    if value is None or value == "":
        return None
    if sf_type == "datetime":
        if isinstance(value, str):
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if sf_type == "date":
        if isinstance(value, datetime):
            value = value.date()
        return value.isoformat() if isinstance(value, date) else date.fromisoformat(
            str(value)[:10]).isoformat()
    if sf_type == "boolean":
        if isinstance(value, str):
            if value.strip().lower() not in {"true", "false", "1", "0"}:
                raise ValueError(f"{value!r} is not a boolean")
            return value.strip().lower() in {"true", "1"}
        return bool(value)
    if sf_type == "int":
        return int(value)
    if sf_type in {"double", "currency", "percent"}:
        return float(value)
    return value if isinstance(value, str) else str(value)


def same(a, b) -> bool:
    """Equal as synced values (floats within rounding, numbers stored as text)."""
    if a is None or b is None:
        return a is None and b is None or a == "" or b == ""
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))
        except (TypeError, ValueError):
            return False
    if type(a) is not type(b) and not (isinstance(a, datetime) and isinstance(b, datetime)):
        return str(a) == str(b)
    return a == b


def by_group(items: list, group: Callable[[object], str | None]) -> list:
    """Items ordered so that records of one account travel together (fewer row locks)."""
    return sorted(items, key=lambda item: group(item) or "")

"""Bulk API 2.0 ingest in :mod:`include.sfsync.salesforce.writes`: CSV cells, ``sf__Error`` parsing and the
mapping of job results back to records, with a stand-in for simple-salesforce's ``bulk2``."""

from __future__ import annotations

import csv
import io

import pytest
from simple_salesforce.exceptions import SalesforceOperationError, SalesforceRefusedRequest

from include.sfsync.salesforce import writes as W

ID = [f"00Q5e00000ABC{i:02d}AAA" for i in range(6)]


def _csv(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue()


class FakeBulkType:
    """``sf.bulk2.Lead``: answers one update/delete with canned job counts and results."""

    def __init__(self, *, failed=(), unprocessed=(), successes=None, processed=None,
                 failed_count=None, raises=None):
        self.failed, self.unprocessed, self.successes = failed, unprocessed, successes
        self.processed, self.raises = processed, raises
        self.failed_count = len(failed) if failed_count is None else failed_count
        self.sent: list[dict] | None = None
        self.reads: list[str] = []

    def _run(self, records, wait):
        if self.raises:
            raise self.raises
        self.sent = records
        processed = len(records) - len(self.unprocessed) if self.processed is None \
            else self.processed
        return [{"numberRecordsFailed": self.failed_count, "numberRecordsProcessed": processed,
                 "numberRecordsTotal": len(records), "job_id": "750JOB"}]

    update = delete = _run

    def get_failed_records(self, job_id):
        self.reads.append("failed")
        return _csv(["sf__Id", "sf__Error", "Id", "Title"],
                    [[i, err, i, "x"] for i, err in self.failed])

    def get_unprocessed_records(self, job_id):
        self.reads.append("unprocessed")
        return _csv(["Id", "Title"], [[i, "x"] for i in self.unprocessed])

    def get_successful_records(self, job_id):
        self.reads.append("successful")
        return _csv(["sf__Id", "sf__Created", "Id", "Title"],
                    [[i, "false", i, "x"] for i in self.successes or []])


class FakeClient:
    bulk_poll_seconds = 0

    def __init__(self, bulk: FakeBulkType):
        self.bulk = bulk
        self.composite_calls: list[list[dict]] = []

        class Bulk2:
            def __getattr__(_self, name):
                return bulk

        self.sf = type("SF", (), {"bulk2": Bulk2()})()

    def composite(self, subrequests):
        self.composite_calls.append(subrequests)
        return [{"status": 200, "body": [{"id": r.get("Id"), "success": True, "errors": []}
                                         for r in s["body"]["records"]]} for s in subrequests]


def test_bulk_error_parsing():
    o = W.bulk_error("FIELD_CUSTOM_VALIDATION_EXCEPTION:Lead Score must be between 0 and 100."
                     ":Lead_Score__c --")
    assert (o.ok, o.code, o.message, o.fields) == (
        False, "FIELD_CUSTOM_VALIDATION_EXCEPTION", "Lead Score must be between 0 and 100.",
        ("Lead_Score__c",))
    o = W.bulk_error("REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --")
    assert (o.code, o.message, o.fields) == (
        "REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]", ("LastName",))
    o = W.bulk_error("INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--")
    assert (o.code, o.message, o.fields) == ("INVALID_CROSS_REFERENCE_KEY",
                                             "invalid cross reference id", ())
    assert W.bulk_error("UNABLE_TO_LOCK_ROW:unable to obtain exclusive access:--").transient
    assert W.bulk_error("something odd").code == "BULK_ERROR"


def test_bulk_cells():
    assert [W.bulk_cell(v) for v in (None, "", True, False, 42, 1e20, 0.5, "2026-01-02")] == [
        "#N/A", "#N/A", "true", "false", "42", "100000000000000000000", "0.5", "2026-01-02"]


def test_results_are_matched_by_id_whatever_their_order():
    bulk = FakeBulkType(failed=[(ID[4], "FIELD_CUSTOM_VALIDATION_EXCEPTION:bad:Lead_Score__c --"),
                                (ID[1], "UNABLE_TO_LOCK_ROW:locked:--")],
                        unprocessed=[ID[2]])
    records = [{"Id": i, "Title": None if n == 0 else f"T{n}"} for n, i in enumerate(ID[:5])]
    out = W.write_bulk(FakeClient(bulk), "PATCH", "Lead", records)
    assert bulk.sent[0] == {"Id": ID[0], "Title": "#N/A"}
    assert [o.ok for o in out] == [True, False, False, True, False]
    assert (out[4].code, out[4].fields, out[4].id) == ("FIELD_CUSTOM_VALIDATION_EXCEPTION",
                                                      ("Lead_Score__c",), ID[4])
    assert out[1].transient and out[2].transient and out[2].code == W.BULK_UNPROCESSED
    assert bulk.reads == ["failed", "unprocessed"]  # successes inferred from the counts


def test_counts_that_do_not_add_up_read_the_successful_results():
    # the job reports one failure, but its failed results do not name it
    bulk = FakeBulkType(failed_count=1, successes=[ID[0], ID[2]])
    client = FakeClient(bulk)
    out = W.write_bulk(client, "PATCH", "Lead", [{"Id": i, "Title": "x"} for i in ID[:3]])
    assert [o.ok for o in out] == [True, False, True]
    assert out[1].code == W.BULK_UNPROCESSED  # transient: retried through collections
    assert bulk.reads == ["failed", "successful"]


def test_a_failed_job_goes_through_collections_and_the_limit_stops_the_push():
    bulk = FakeBulkType(raises=SalesforceOperationError("Job failure. InvalidBatch"))
    client = FakeClient(bulk)
    out = W.write_bulk(client, "PATCH", "Lead", [{"Id": i, "Title": "x"} for i in ID[:3]])
    assert all(o.ok for o in out) and len(client.composite_calls) == 1
    limit = SalesforceRefusedRequest("url", 403, "res", [{"errorCode": "REQUEST_LIMIT_EXCEEDED",
                                                         "message": "TotalRequests Limit"}])
    with pytest.raises(W.RequestLimitExceeded):
        W.write_bulk(FakeClient(FakeBulkType(raises=limit)), "DELETE", "Lead", ID[:3])


def test_only_updates_and_deletes_above_the_threshold_use_bulk():
    bulk = FakeBulkType(failed=[(ID[1], "UNABLE_TO_LOCK_ROW:locked:--")])
    client = FakeClient(bulk)
    items = [(n, {"Id": i, "Title": "x"}) for n, i in enumerate(ID[:4])]
    outcomes = W.write_with_retries(client, "PATCH", "Lead", items, retries=2, backoff=0,
                                    bulk_threshold=3)
    assert all(o.ok for o in outcomes.values())
    # the locked record went again, alone, through a collection
    assert [len(c[0]["body"]["records"]) for c in client.composite_calls] == [1]
    client = FakeClient(FakeBulkType())
    W.write_with_retries(client, "PATCH", "Lead", items, retries=0, bulk_threshold=4)
    W.write_with_retries(client, "POST", "Lead", [(n, {"Title": "x"}) for n in range(9)],
                         retries=0, bulk_threshold=3)
    assert client.bulk.sent is None and len(client.composite_calls) == 2


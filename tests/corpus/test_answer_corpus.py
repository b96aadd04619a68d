"""Bad answers from Salesforce, on every kind of call a cycle makes: 5xx, an HTML page, an
empty body, JSON or CSV cut short, a query timeout, the request limit, a connection reset or
refused mid-run, a call that never answers. The step fails with one line naming the call and
its objects (never the SOQL's values), nothing is half-written (no cursor moved past what was
not loaded, local changes still pending, no record error), and the task's retry (same run)
then syncs everything. tests/sync/test_call_errors.py holds the first cases (a query's and a
write's malformed answer, prepare's describes)."""

from __future__ import annotations

import pytest
import requests
import urllib3
from simple_salesforce.exceptions import SalesforceError

from include.sfsync import pipeline as P
from include.sfsync.airflow_glue import fail_fast
from include.sfsync.context import open_context
from include.sfsync.errors import SalesforceCallError, SalesforceUnreachable
from include.sfsync.salesforce.client import CountingSession
from tests.corpus.conftest import fails, one_line, state

pytestmark = pytest.mark.integration

V = "/services/data/v59.0"
EVERY = "(User, Account, Lead, Contact, Campaign, CampaignMember, Opportunity, " \
    "OpportunityContactRole, Task, Event)"
# The describes and the probe's windows (three per object) share two composite calls: the
# second holds the windows of the last five objects.
PROBE_TAIL = "(CampaignMember, Opportunity, OpportunityContactRole, Task, Event)"
NOT_JSON = "HTTP 200 not JSON"

# case -> (what the cycle has to do: "pull" a new lead, "bulk" the same through Bulk API 2.0,
# "push" a local edit of a lead; the emulator's fault; the message's start; what it also says)
ANSWERS = {
    "describe-http_500": ("pull", {"endpoint": "composite", "kind": "http_500"},
                          f"Salesforce POST {V}/composite {EVERY}: HTTP 500 UNKNOWN_EXCEPTION: ",
                          "An unexpected error occurred"),
    "describe-http_503": ("pull", {"endpoint": "composite", "kind": "http_503"},
                          f"Salesforce POST {V}/composite {EVERY}: HTTP 503 SERVER_UNAVAILABLE: ",
                          "Server temporarily unavailable"),
    "describe-request_limit": ("pull", {"endpoint": "composite", "kind": "request_limit"},
                               f"Salesforce POST {V}/composite {EVERY}: HTTP 403 "
                               "REQUEST_LIMIT_EXCEEDED: ", "TotalRequests Limit exceeded"),
    "probe-html_page": ("pull", {"endpoint": "composite", "kind": "html_page", "after": 1},
                        f"Salesforce POST {V}/composite {PROBE_TAIL}: {NOT_JSON} (text/html",
                        "bytes"),
    "probe-http_503": ("pull", {"endpoint": "composite", "kind": "http_503", "after": 1},
                       f"Salesforce POST {V}/composite {PROBE_TAIL}: HTTP 503 "
                       "SERVER_UNAVAILABLE: ", "retry your request"),
    "queries-empty_body": ("pull", {"endpoint": "composite", "kind": "empty_body", "after": 2},
                           f"Salesforce POST {V}/composite (Lead", "0 bytes"),
    "queries-truncated_json": ("pull", {"endpoint": "composite", "kind": "truncated_json",
                                        "after": 2},
                               f"Salesforce POST {V}/composite (Lead", NOT_JSON),
    "queries-http_500": ("pull", {"endpoint": "composite", "kind": "http_500", "after": 2},
                         f"Salesforce POST {V}/composite (Lead", "HTTP 500 UNKNOWN_EXCEPTION"),
    "query-QUERY_TIMEOUT": ("pull", {"endpoint": "queryAll", "kind": "query_timeout"},
                            "query Lead: HTTP 400 QUERY_TIMEOUT ", "Your query request was"),
    "bulk-count-http_500": ("bulk", {"endpoint": "queryAll", "kind": "http_500"},
                            f"Salesforce GET {V}/queryAll/ (Lead): HTTP 500 UNKNOWN_EXCEPTION",
                            "An unexpected error occurred"),
    "bulk-create-html_page": ("bulk", {"endpoint": "bulk2.query.create", "kind": "html_page"},
                              f"Salesforce POST {V}/jobs/query (Lead): {NOT_JSON} (text/html",
                              "bytes"),
    "bulk-job-QUERY_TIMEOUT": ("bulk", {"endpoint": "bulk2.query.create",
                                        "kind": "query_timeout"},
                               f"Salesforce GET {V}/jobs/query/", "(Lead): HTTP 200 Bulk API 2.0 "
                               "query job failed: Job failure. Response content: QUERY_TIMEOUT: "),
    "bulk-job-truncated_json": ("bulk", {"endpoint": "bulk2.query.job",
                                         "kind": "truncated_json"},
                                f"Salesforce GET {V}/jobs/query/", f"(Lead): {NOT_JSON}"),
    "bulk-job-http_503": ("bulk", {"endpoint": "bulk2.query.job", "kind": "http_503"},
                          f"Salesforce GET {V}/jobs/query/", "(Lead): HTTP 503 SERVER_UNAVAILABLE"),
    "bulk-results-html_page": ("bulk", {"endpoint": "bulk2.query.results", "kind": "html_page"},
                               f"Salesforce GET {V}/jobs/query/", "(Lead): HTTP 200 Bulk API 2.0 "
                               "query results not the CSV of the fields asked for (it begins "
                               "'<!DOCTYPE html>"),
    "bulk-results-empty_body": ("bulk", {"endpoint": "bulk2.query.results",
                                         "kind": "empty_body"},
                                f"Salesforce GET {V}/jobs/query/", "(Lead): HTTP 200 Bulk API 2.0 "
                                "query results empty ("),
    "bulk-results-truncated": ("bulk", {"endpoint": "bulk2.query.results",
                                        "kind": "truncated_json"},
                               f"Salesforce GET {V}/jobs/query/", "(Lead): HTTP 200 Bulk API 2.0 "
                               "query results CSV cut short ("),
    "bulk-results-http_500": ("bulk", {"endpoint": "bulk2.query.results", "kind": "http_500"},
                              f"Salesforce GET {V}/jobs/query/", "/results (Lead): HTTP 500 "
                              "UNKNOWN_EXCEPTION"),
    "push-update-http_503": ("push", {"endpoint": "composite", "kind": "http_503"},
                             f"Salesforce POST {V}/composite (Lead): HTTP 503 SERVER_UNAVAILABLE: ",
                             "retry your request"),
    "push-update-html_page": ("push", {"endpoint": "composite", "kind": "html_page"},
                              f"Salesforce POST {V}/composite (Lead): {NOT_JSON} (text/html",
                              "bytes"),
}


def settle(sync, case: str, kind: str) -> None:
    """Once a case is done, past the overlap window of what it changed: the next case's cycle
    makes only the calls its own change needs. A push's writes are read back by the next
    cycle: that one runs here."""
    if kind == "push":
        sync.advance(60)
        sync.cycle(f"{case}-settle")
    sync.advance(600)


def setup_change(sync, kind: str, case: str) -> tuple[list[str], int | None]:
    """The change the case's cycle must carry: (new lead ids in Salesforce, person row)."""
    if kind == "push":
        row = sync.mdb.rows("person", "sfdc_type = 'Lead' AND sfdc_is_deleted = :f AND "
                            "sfdc_converted_contact_id IS NULL", f=False)[0]
        sync.mdb.execute("UPDATE person SET title = :t WHERE id = :i", t=f"After {case}",
                         i=row["id"])
        return [], row["id"]
    ids = sync.create("Lead", *[{"LastName": f"Answer {case} {i}", "Company": "Faults Inc"}
                                for i in range(3)])
    sync.advance(60)
    return ids, None


def assert_unmoved(sync, before: dict, kind: str) -> None:
    """Nothing loaded, no cursor moved. A Bulk extract fails in Lead's own step: the objects
    copied before it in the run may have moved on (nothing changed for them)."""
    after = state(sync.mdb)
    if kind == "bulk":
        for snapshot in (before, after):
            snapshot["sfsync_watermark"] = [w for w in snapshot["sfsync_watermark"]
                                            if w[0] == "Lead"]
    assert after == before


def assert_synced(sync, case: str, ids: list[str], row_id: int | None) -> None:
    if row_id is not None:
        person = sync.mdb.one("person", "id = :i", i=row_id)
        lead = next(r for r in sync.truth("Lead")["Lead"] if r["Id"] == person["sfdc_lead_id"])
        assert lead["Title"] == f"After {case}"
        assert sync.mdb.scalar("SELECT count(*) FROM sfsync_outbox WHERE table_name = 'person' "
                               "AND row_id = :i", i=row_id) == 0
    for lead_id in ids:
        assert sync.person(lead_id)["last_name"].startswith(f"Answer {case}")


@pytest.fixture(scope="module")
def quiet(synced):
    """The module's synced database, past the overlap window of the initial copy."""
    synced.advance(600)
    return synced


def run_with(sync, run_key: str, kind: str, overrides: dict, arm) -> tuple[BaseException, str]:
    """The run, the fault armed by ``arm()``: a pull fault at once; a push fault once the
    pulls are loaded, as the run's push task starts (``fail_fast`` around it, as in the DAG)."""
    if kind != "push":
        arm()
        return fails(sync, run_key, **overrides)
    config = sync.config(**overrides)
    P.prepare(run_key, config=config, engine=sync.mdb.engine)
    ctx = open_context(config, engine=sync.mdb.engine)
    for obj in ctx.catalog.ordered():
        P.extract_object(run_key, obj.sf_object, ctx)
        P.filter_object(run_key, obj.sf_object, ctx)
        P.load_object(run_key, obj.sf_object, ctx)
    P.push(run_key, "create_people", ctx)
    arm()
    with pytest.raises(Exception) as failed:  # noqa: B017 - the case names its message
        fail_fast(lambda: P.push(run_key, "people", ctx), run_key)
    error = failed.value
    del failed
    return error, one_line(str(error))


@pytest.mark.parametrize("case", list(ANSWERS))
def test_a_bad_answer_names_the_call_and_its_objects(case, quiet):
    synced = quiet
    kind, fault, start, also = ANSWERS[case]
    ids, row_id = setup_change(synced, kind, case)
    overrides = {"bulk_threshold": 1} if kind == "bulk" else {}
    before = state(synced.mdb)
    try:
        error, message = run_with(synced, case, kind, overrides, lambda: synced.org.control(
            "POST", "/faults", json=fault))
    finally:
        synced.org.control("DELETE", "/faults")
    assert start in message and also in message, message
    assert message.startswith(start) or kind == "push", message  # a push may prefix the cause
    assert "SELECT" not in message and "Faults Inc" not in message, message  # never the SOQL
    if kind == "push":  # the pull went on; the edit waits, not failed, no record error
        box = synced.mdb.one("sfsync_outbox", "table_name = 'person' AND row_id = :i",
                             order="row_id", i=row_id)
        assert box["status"] == "pending", box
        assert synced.mdb.scalar("SELECT count(*) FROM sfsync_error WHERE run_key = :k",
                                 k=case) == 0
    else:
        assert isinstance(error, (SalesforceCallError, SalesforceError)), type(error)
        assert_unmoved(synced, before, kind)
    synced.cycle(case, **overrides)  # the task's retry
    assert_synced(synced, case, ids, row_id)
    settle(synced, case, kind)


@pytest.fixture
def short_timeout(monkeypatch):
    monkeypatch.setattr(CountingSession, "timeout", (1.0, 1.0))


def _reset() -> requests.ConnectionError:
    return requests.ConnectionError(urllib3.exceptions.ProtocolError(
        "Connection aborted.", ConnectionResetError(104, "Connection reset by peer")))


def _refused() -> requests.ConnectionError:
    reason = urllib3.exceptions.NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused")
    reason.__cause__ = ConnectionRefusedError(111, "Connection refused")
    return requests.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/", reason))


# case -> (the change, the call that gets no answer: (method, path end, how many such calls
# pass first) and how, the message's start, what it says)
NETWORK = {
    "queries-connection-reset": ("pull", ("POST", "/composite", 2, _reset),
                                 f"Salesforce POST {V}/composite (Lead",
                                 ": no answer: connection reset by peer"),
    "push-update-connection-refused": ("push", ("POST", "/composite", 0, _refused),
                                       f"Salesforce POST {V}/composite (Lead)",
                                       ": no answer: connection refused"),
    "bulk-results-never-answer": ("bulk", ("GET", "/results", 0, None),
                                  f"Salesforce GET {V}/jobs/query/",
                                  "/results (Lead): no answer: read timed out"),
}


@pytest.mark.parametrize("case", list(NETWORK))
def test_a_call_that_gets_no_answer_names_itself_and_its_objects(case, quiet, monkeypatch,
                                                                  short_timeout):
    synced = quiet
    kind, (method, path_end, skip, error_of), start, said = NETWORK[case]
    ids, row_id = setup_change(synced, kind, case)
    overrides = {"bulk_threshold": 1} if kind == "bulk" else {}
    before = state(synced.mdb)

    def arm() -> None:
        if error_of is None:  # the real thing: the emulator answers later than the client waits
            synced.org.control("POST", "/faults", json={"endpoint": "bulk2.query.results",
                                                        "kind": "slow", "delay_seconds": 2.5})
            return
        send = requests.adapters.HTTPAdapter.send  # where urllib3 raises them, for one call
        seen = []

        def flaky(adapter, request, *args, **kwargs):
            path = request.path_url.split("?", 1)[0]
            if request.method == method and path.startswith(V) and path.endswith(path_end):
                seen.append(path)
                if len(seen) == skip + 1:
                    raise error_of()
            return send(adapter, request, *args, **kwargs)

        monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", flaky)

    try:
        error, message = run_with(synced, case, kind, overrides, arm)
    finally:
        synced.org.control("DELETE", "/faults")
        monkeypatch.undo()
    assert start in message and said in message, message
    assert message.startswith(start) or kind == "push", message
    if kind == "push":
        assert synced.mdb.one("sfsync_outbox", "table_name = 'person' AND row_id = :i",
                              order="row_id", i=row_id)["status"] == "pending"
    else:
        assert isinstance(error, SalesforceUnreachable), type(error)
        assert_unmoved(synced, before, kind)
    synced.cycle(case, **overrides)
    assert_synced(synced, case, ids, row_id)
    settle(synced, case, kind)


def test_a_session_that_expires_mid_run_is_renewed_not_an_error(quiet):
    synced = quiet
    ids, _ = setup_change(synced, "pull", "session")
    synced.org.control("POST", "/faults", json={"endpoint": "composite",
                                                "kind": "session_expiry", "after": 1})
    try:
        summary = synced.cycle("session")
    finally:
        synced.org.control("DELETE", "/faults")
    assert summary["counts"]["Lead"]["new"] == 3
    assert_synced(synced, "session", ids, None)
    settle(synced, "session", "pull")

from __future__ import annotations

import pytest
from simple_salesforce.api import Usage
from simple_salesforce.exceptions import SalesforceGeneralError, SalesforceMalformedRequest

from include.sfsync import org_summary
from include.sfsync.org_summary import SUMMARY_OBJECTS, format_summary, summarize


class FakeSalesforce:
    _salesforce_login_partial = None  # how simple-salesforce logs in again: never here

    def __init__(self, counts, limits=None, api_usage=None, errors=None):
        self.counts, self._limits, self.api_usage, self.errors = counts, limits, api_usage or {}, errors or {}
        self.queries = []

    def query(self, soql):
        self.queries.append(soql)
        name = soql.rsplit(" ", 1)[-1]
        if name in self.errors:
            raise self.errors[name]
        return {"totalSize": self.counts[name], "done": True, "records": []}

    def limits(self):
        return self._limits


@pytest.fixture
def fake_hook(monkeypatch):
    """Replace the provider's SalesforceHook; returns a setter for the fake client."""
    from airflow.providers.salesforce.hooks import salesforce as hook_module

    state = {}

    class FakeHook:
        def __init__(self, salesforce_conn_id, session=None):
            state["conn_id"] = salesforce_conn_id
            self.conn = state["sf"]

    monkeypatch.setattr(hook_module, "SalesforceHook", FakeHook)

    def use(sf):
        state["sf"] = sf
        return state

    return use


def invalid_type(name):
    return SalesforceMalformedRequest(
        "https://x/query", 400, "query",
        [{"errorCode": "INVALID_TYPE", "message": f"sObject type '{name}' is not supported."}])


def test_summarize_counts_every_object_and_reads_limits(fake_hook):
    counts = {name: i * 10 for i, name in enumerate(SUMMARY_OBJECTS)}
    sf = FakeSalesforce(counts, limits={"DailyApiRequests": {"Max": 15000, "Remaining": 14958}})
    state = fake_hook(sf)

    summary = summarize(conn_id="my_sf")

    assert state["conn_id"] == "my_sf"
    assert sf.queries == [f"SELECT COUNT() FROM {name}" for name in SUMMARY_OBJECTS]
    assert summary == {"objects": counts, "api_usage": {"used": 42, "max": 15000}}
    assert list(summary["objects"]) == list(SUMMARY_OBJECTS)


def test_invisible_object_counts_as_none(fake_hook):
    counts = dict.fromkeys(SUMMARY_OBJECTS, 1)
    fake_hook(FakeSalesforce(counts, limits={"DailyApiRequests": {"Max": 10, "Remaining": 9}},
                             errors={"Subscription__c": invalid_type("Subscription__c")}))
    summary = summarize(objects=(*SUMMARY_OBJECTS, "Subscription__c"))  # a configured one
    assert summary["objects"]["Subscription__c"] is None
    assert summary["objects"]["Lead"] == 1


def test_other_salesforce_errors_propagate(fake_hook):
    error = SalesforceGeneralError("https://x/query", 500, "query", [{"errorCode": "UNKNOWN_EXCEPTION"}])
    fake_hook(FakeSalesforce(dict.fromkeys(SUMMARY_OBJECTS, 1), errors={"Lead": error}))
    with pytest.raises(SalesforceGeneralError):
        summarize()


def test_api_usage_falls_back_to_limit_info_header(fake_hook):
    fake_hook(FakeSalesforce(dict.fromkeys(SUMMARY_OBJECTS, 0), limits={},
                             api_usage={"api-usage": Usage(used=7, total=5000)}))
    assert summarize()["api_usage"] == {"used": 7, "max": 5000}


def test_api_usage_unknown(fake_hook):
    fake_hook(FakeSalesforce(dict.fromkeys(SUMMARY_OBJECTS, 0), limits={}))
    assert summarize()["api_usage"] == {"used": None, "max": None}


def test_format_summary_table():
    text = format_summary({"objects": {"Lead": 1200, "Webinar_Attendance__c": None, "Contact": 3},
                           "api_usage": {"used": 42, "max": 15000}})
    assert text.splitlines() == [
        "Object                     Records",
        "---------------------  -----------",
        "Lead                         1,200",
        "Webinar_Attendance__c  not visible",
        "Contact                          3",
        "---------------------  -----------",
        "Total                        1,203",
        "API requests (24 h): 42 of 15,000 (0.3%)",
    ]


def test_format_summary_unknown_usage():
    assert format_summary({"objects": {}, "api_usage": {"used": None, "max": None}}).endswith(
        "API requests (24 h): unknown")


def test_module_is_cheap_to_import():
    # DAG files import this module at parse time.
    import subprocess
    import sys

    code = ("import sys, include.sfsync.org_summary; "
            "print([m for m in ('pandas', 'simple_salesforce', 'airflow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=org_summary.__file__.rsplit("/include/", 1)[0])
    assert out.stdout.strip() == "[]"

"""Answers of Salesforce the sync cannot read (an HTML page, an empty body, JSON cut short, as a
proxy or an overloaded server sends them with a 200): the step fails naming Salesforce, the call
and its objects, never the SOQL's values; the task's retry then goes on where it stopped."""

from __future__ import annotations

import pytest

from include.sfsync.errors import SalesforceCallError, WriteInterrupted
from include.sfsync.salesforce.client import SalesforceClient
from include.sfsync.salesforce.reads import count
from include.sfsync.salesforce.writes import write_records
from tests.sync.test_pull import Sync

pytestmark = pytest.mark.integration
MALFORMED = ["html_page", "empty_body", "truncated_json"]
NOT_JSON = r"HTTP 200 not JSON \((text/html|application/json);charset=UTF-8, \d+ bytes\): "


@pytest.mark.parametrize("kind", MALFORMED)
def test_a_malformed_answer_names_the_call_and_its_object(org, kind):
    client = SalesforceClient.from_connection("salesforce_default")
    org.control("POST", "/faults", json={"endpoint": "query", "kind": kind})
    with pytest.raises(SalesforceCallError, match="^Salesforce GET /services/data/v59.0/query/ "
                       r"\(Lead\): " + NOT_JSON) as failure:
        count(client, "SELECT COUNT() FROM Lead WHERE Email = 'ann.private@example.org' AND Id "
              "IN (SELECT LeadId FROM CampaignMember)")
    assert "ann.private" not in str(failure.value)  # the path, never the query string
    assert failure.value.status == 200
    # a write's answer: the objects of its collections
    org.control("POST", "/faults", json={"endpoint": "composite", "kind": kind})
    with pytest.raises(WriteInterrupted, match="Salesforce POST /services/data/v59.0/composite "
                       r"\(Lead\): " + NOT_JSON):
        write_records(client, "POST", "Lead", [{"LastName": "Mangled", "Company": "M"}])


def test_the_step_fails_retryably_and_its_retry_goes_on(org, marketing_db):
    sync = Sync(org, marketing_db)
    sync.cycle("r0")  # the initial copy
    lead = sync.create("Lead", {"LastName": "Late", "Company": "Answer Co",
                                "Email": "late@example.org"})[0]
    sync.advance(60)
    for kind in MALFORMED:  # one try per kind fails in prepare's describe call
        org.control("POST", "/faults", json={"endpoint": "composite", "kind": kind})
        with pytest.raises(SalesforceCallError, match=r"^Salesforce POST /services/data/v59.0/"
                           r"composite \(User, Account, Lead, Contact, Campaign, .*\): " + NOT_JSON):
            sync.cycle("r1")
    summary = sync.cycle("r1")  # the task's retry: same run
    assert summary["counts"]["Lead"]["new"] == 1
    assert sync.person(lead)["email"] == "late@example.org"

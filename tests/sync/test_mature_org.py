"""The sync on an org customised by someone else (the emulator's ``mature`` profile): record
types, person accounts, a multi-select picklist, a long text area beyond 32 KB, a currency and a
geolocation field, a custom child of Lead, and a custom object the sync user cannot see; on
SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.sync.test_pull import ZERO, Sync, assert_full_copy, counts, sf_record

pytestmark = pytest.mark.integration


@pytest.fixture
def sync(org, marketing_db):
    s = Sync(org, marketing_db)
    # The admin opts in to the org's custom objects; one of them the sync user cannot see.
    s.overrides = {"custom_objects": ["Trial_Request__c", "Commission__c"]}
    return s


@pytest.mark.parametrize("org", ["mature"], indirect=True)
def test_a_mature_org_copies_whole_and_pushes_its_own_field_types(sync):
    summary = sync.cycle("copy")
    assert "Commission__c" not in summary["counts"]
    ctx = sync.context()
    assert [w for w in ctx.catalog.warnings if "custom_objects: Commission__c" in w]
    assert_full_copy(sync, summary)

    fields = {(r["sf_object"], r["sf_field"]): r for r in sync.mdb.rows(
        "sfsync_field", order="sf_object, sf_field")}
    assert fields[("Lead", "Product_Interest__c")]["synced"]
    assert fields[("Lead", "RecordTypeId")]["synced"]
    assert not fields[("Account", "Headquarters__c")]["synced"]  # a geolocation compound
    assert fields[("Account", "Headquarters__Latitude__s")]["synced"]
    assert fields[("Account", "Contract_Value__c")]["synced"]

    # Person accounts: the account is a company, its contact a person like any other.
    truth = sync.truth("Account", "Contact")
    person_account = next(a for a in truth["Account"] if a["IsPersonAccount"])
    person = sync.person(person_account["PersonContactId"])
    assert person["sfdc_type"] == "Contact" and person["is_person_account"] in (True, 1)
    assert sync.mdb.one("company", "sfdc_id = :i", i=person_account["Id"])[
        "is_person_account"] in (True, 1)
    # A long text area beyond 32 KB arrives whole.
    longest = max((c for c in truth["Contact"] if c["Conversation_Notes__c"]),
                  key=lambda c: len(c["Conversation_Notes__c"]))
    assert len(longest["Conversation_Notes__c"]) > 32768
    assert sync.person(longest["Id"])["conversation_notes"] == longest["Conversation_Notes__c"]
    # The custom child of Lead is linked to the lead's person.
    trial = sync.mdb.rows("trial_request", "sfdc_is_deleted = :f", f=False)[0]
    assert trial["person_id"] == sync.person(trial["sfdc_lead_id"])["id"]

    # Marketing edits a multi-select and a long text: both reach Salesforce as they are.
    lead = sync.mdb.rows("person", "sfdc_type = 'Lead' AND sfdc_is_deleted = :f", f=False)[0]
    notes = "Long call. " * 4000
    sync.mdb.execute("UPDATE person SET product_interest = 'Analytics;Security', "
                     "conversation_notes = :n WHERE id = :i", n=notes, i=lead["id"])
    pushed = sync.cycle("push")
    assert pushed["push"]["people"]["counts"]["Lead"]["updated"] == 1
    rec = sf_record(sync, "Lead", lead["sfdc_lead_id"])
    assert (rec["Product_Interest__c"], rec["Conversation_Notes__c"]) == (
        "Analytics;Security", notes)
    sync.advance(60)
    echo = sync.cycle("echo")
    assert counts(echo, "Lead") == ZERO

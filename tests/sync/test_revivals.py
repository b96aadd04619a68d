"""Records that come back (issue 12, found by the chaos run): an undeleted record gets the
change Salesforce refused while it was deleted; a person deleted here and brought back by a
later Salesforce change takes its memberships with it. SQLite and PostgreSQL, standard org."""

from __future__ import annotations

import pytest

from tests.sync.test_pull import Sync, sf_record

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("org", ["standard"],
                                                               indirect=True)]


@pytest.fixture
def sync(org, marketing_db):
    return Sync(org, marketing_db)


def a_member(sync: Sync) -> dict:
    """A live lead's person row that is a campaign member."""
    return sync.mdb.rows(
        "person", "sfdc_type = 'Lead' AND sfdc_is_deleted = :f AND id IN (SELECT person_id "
        "FROM campaign_member WHERE sfdc_lead_id IS NOT NULL)", f=False)[0]


def test_a_change_refused_as_deleted_goes_through_once_the_record_is_undeleted(sync):
    sync.cycle("r0")
    person = a_member(sync)
    lead_id = person["sfdc_lead_id"]
    sync.delete("Lead", lead_id)
    sync.advance(60)
    sync.cycle("r1")
    assert sync.person(lead_id)["sfdc_is_deleted"]
    sync.mdb.execute("UPDATE person SET title = 'Back Again' WHERE id = :i", i=person["id"])
    sync.advance(60)
    sync.cycle("r2")
    refused = sync.mdb.rows("sfsync_outbox", "row_id = :i AND table_name = 'person'",
                            order="row_id", i=person["id"])[0]
    assert refused["status"] == "failed" and refused["last_error"].startswith(
        "ENTITY_IS_DELETED")
    sync.org.control("POST", "/undelete", json={"ids": [lead_id]})
    sync.advance(60)
    sync.cycle("r3")  # its pull loads the undelete, its push sends the change
    assert sf_record(sync, "Lead", lead_id)["Title"] == "Back Again"
    assert not sync.person(lead_id)["sfdc_is_deleted"]
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_outbox") == 0


def test_a_person_deleted_here_and_back_from_salesforce_keeps_its_memberships(sync):
    sync.cycle("r0")
    person = a_member(sync)
    lead_id = person["sfdc_lead_id"]
    members = [m["id"] for m in sync.mdb.rows("campaign_member", "person_id = :p",
                                              p=person["id"])]
    sync.mdb.execute("DELETE FROM person WHERE id = :i", i=person["id"])
    sync.advance(60)
    sync.cycle("r1")
    assert sync.mdb.rows("person", "sfdc_lead_id = :i", i=lead_id) == []
    sync.update("Lead", lead_id, Title="Changed in Salesforce")
    sync.advance(60)
    sync.cycle("r2")
    back = sync.person(lead_id)
    assert back["id"] != person["id"] and back["title"] == "Changed in Salesforce"
    assert [m["person_id"] for m in sync.mdb.rows("campaign_member", "id IN ({})".format(
        ", ".join(str(i) for i in members)))] == [back["id"]] * len(members)


def test_a_lead_converted_into_a_contact_whose_person_was_deleted_here_takes_its_rows(sync):
    """Chaos seed 23: the contact's person was deleted here; Salesforce then converted a lead
    into that contact. The lead's person holds the contact now, and the memberships and
    activities that pointed at the deleted row follow it."""
    sync.cycle("r0")
    contact = sync.create("Contact", {"LastName": "Gone", "Email": "gone@contact.example"})[0]
    lead = sync.create("Lead", {"LastName": "Gone", "Company": "Gone Co",
                                "Email": "gone@lead.example"})[0]
    campaign = sync.truth("Campaign")["Campaign"][0]["Id"]
    sync.org.control("POST", "/records/CampaignMember", json={"records": [
        {"CampaignId": campaign, "ContactId": contact, "Status": "Sent"}]})
    sync.create("Task", {"WhoId": contact, "Subject": "Call", "Status": "Completed"})
    sync.advance(60)
    sync.cycle("r1")
    deleted = sync.person(contact)["id"]
    pointing = {t: sync.mdb.scalar(f"SELECT count(*) FROM {t} WHERE person_id = :p", p=deleted)
                for t in ("campaign_member", "activity")}
    assert pointing == {"campaign_member": 1, "activity": 1}
    sync.mdb.execute("DELETE FROM person WHERE id = :i", i=deleted)
    sync.advance(60)
    sync.cycle("r2")
    sync.org.control("POST", "/convert-lead", json={"lead_id": lead, "contact_id": contact})
    sync.advance(60)
    sync.cycle("r3")
    holder = sync.person(contact)
    assert holder["id"] == sync.person(lead)["id"] != deleted
    for table in ("campaign_member", "activity"):
        assert sync.mdb.scalar(f"SELECT count(*) FROM {table} WHERE person_id = :p",
                               p=deleted) == 0, table
        assert sync.mdb.scalar(f"SELECT count(*) FROM {table} WHERE person_id = :p",
                               p=holder["id"]) == 1, table

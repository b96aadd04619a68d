"""The push sync (marketing database -> Salesforce) against the emulator, on SQLite and
PostgreSQL: plain SQL writes reach Salesforce at the next cycle; dedupe on write, conflicts,
errors, value maps, campaign membership, the request limit and convergence."""

from __future__ import annotations

import json
import random

import pytest

from tests.fixtures_emulator import on_demo_and_standard_orgs
from tests.sync.test_pull import Sync, sf_record

pytestmark = pytest.mark.integration


@pytest.fixture
def sync(org, marketing_db):
    s = Sync(org, marketing_db)
    s.cycle("r0")  # the initial copy
    return s


sf = sf_record


def writes(sync: Sync) -> dict:
    """Record writes Salesforce received so far, by endpoint (composite sub-requests included)."""
    calls = sync.org.control("GET", "/counters")["calls"]
    return {k: v for k, v in calls.items() if "sobjects" in k and "describe" not in k}


def a_lead(sync: Sync, **where) -> dict:
    """A synced, unconverted, live lead's person row with an e-mail."""
    rows = sync.mdb.rows("person", "sfdc_type = 'Lead' AND sfdc_is_deleted = :f AND email "
                         "IS NOT NULL", f=False)
    return rows[0]


def a_contact(sync: Sync) -> dict:
    rows = sync.mdb.rows("person", "sfdc_type = 'Contact' AND sfdc_is_deleted = :f AND "
                         "sfdc_lead_id IS NULL AND email IS NOT NULL", f=False)
    return rows[0]


@on_demo_and_standard_orgs
def test_a_plain_sql_update_reaches_salesforce_and_the_next_cycle_is_quiet(sync):
    lead = a_lead(sync)
    contact = a_contact(sync)
    sync.mdb.execute("UPDATE person SET title = 'VP Growth', number_of_employees = 42 "
                     "WHERE id = :i", i=lead["id"])
    sync.mdb.execute("UPDATE person SET title = 'CMO' WHERE id = :i", i=contact["id"])
    summary = sync.cycle("r1")
    assert summary["push"]["people"]["counts"]["Lead"]["updated"] == 1
    assert summary["push"]["people"]["counts"]["Contact"]["updated"] == 1
    rec = sf(sync, "Lead", lead["sfdc_lead_id"])
    assert (rec["Title"], rec["NumberOfEmployees"]) == ("VP Growth", 42)
    assert sf(sync, "Contact", contact["sfdc_contact_id"])["Title"] == "CMO"
    sync.advance(60)
    echo = sync.cycle("r2")  # reads the echo of our own writes: recognised, not an update
    assert echo["counts"]["Lead"]["updated"] == 0 and echo["counts"]["Contact"]["updated"] == 0
    before = writes(sync)
    sync.advance(60)
    summary = sync.cycle("r3")
    assert writes(sync) == before  # converged: zero writes
    assert all(step["api_calls"] == 0 for step in summary["push"].values())
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_outbox") == 0
    assert sync.mdb.one("person", "id = :i", i=lead["id"])["title"] == "VP Growth"


@on_demo_and_standard_orgs
def test_dedupe_on_write_links_by_email_and_creates_only_unmatched_leads(sync):
    from include.sfsync import pipeline as P

    mdb = sync.mdb
    leads_before = len(sync.truth("Lead")["Lead"])
    # a contact created in Salesforce after this cycle's pull, and a marketing insert of the
    # same e-mail (other case, spaces): linked to it, not created
    contact_id = sync.create("Contact", {"LastName": "Late", "Email": "late.one@example.org",
                                         "Title": "From Salesforce"})[0]
    mdb.execute("INSERT INTO person (email, first_name, title) VALUES (:e, 'Dup', 'Analyst')",
                e="  LATE.ONE@example.org ")
    mdb.execute("INSERT INTO person (email, company, sync_to_salesforce) VALUES "
                "('brand.new@example.org', 'Acme', true)")
    mdb.execute("INSERT INTO person (email, last_name, sync_to_salesforce) VALUES "
                "('Brand.New@example.org', 'Twin', true)")
    result = P.push("r1", "create_people", sync.context())
    assert result["counts"]["Lead"]["new"] == 1 and result["counts"]["Contact"]["linked"] == 1
    linked = mdb.one("person", "first_name = 'Dup'")
    assert (linked["sfdc_contact_id"], linked["sfdc_type"]) == (contact_id, "Contact")
    # both sides had a title: contacts, Salesforce wins
    assert linked["title"] == "From Salesforce"
    assert mdb.one("sfsync_conflict", "row_id = :i AND column_name = 'title'",
                   i=linked["id"])["winner"] == "salesforce"
    new = mdb.one("person", "email = 'brand.new@example.org'")
    lead = sf(sync, "Lead", new["sfdc_lead_id"])
    # required fields get the configured defaults on the first push, only when empty
    assert (lead["Company"], lead["LastName"]) == ("Acme", "[not provided]")
    assert len(sync.truth("Lead")["Lead"]) == leads_before + 1
    twin = mdb.one("person", "last_name = 'Twin'")
    assert twin["sfdc_lead_id"] is None
    error = mdb.one("sfsync_error", "error_code = 'DUPLICATE_PERSON'")
    assert f"person {new['id']}" in error["message"]
    # a marketing insert of a synced person's e-mail is refused too, naming that person
    contact = a_contact(sync)
    mdb.execute("INSERT INTO person (email) VALUES (:e)", e=contact["email"].upper())
    sync.cycle("r2")
    assert len(sync.truth("Lead")["Lead"]) == leads_before + 1
    assert mdb.scalar("SELECT count(*) FROM sfsync_error WHERE message LIKE :m",
                      m=f"%is already person {contact['id']}%") == 1
    assert mdb.one("sfsync_outbox", "row_id = :i", order="row_id", i=twin["id"])["status"] \
        == "failed"
    # the first push's defaults are not applied again: later edits go through as they are
    mdb.execute("UPDATE person SET last_name = 'Newman' WHERE id = :i", i=new["id"])
    sync.advance(60)
    sync.cycle("r3")
    assert sf(sync, "Lead", new["sfdc_lead_id"])["LastName"] == "Newman"


@pytest.mark.parametrize("org", ["standard"], indirect=True)
def test_only_flagged_people_become_leads_unless_create_leads_is_all(sync):
    """push.create_leads: flagged (the default): a new person becomes a Lead only once its
    sync_to_salesforce is true, or when "sync now" asks for it; all: every new row."""
    from include.sfsync import pipeline as P

    mdb = sync.mdb
    leads = lambda: {r["Email"]: r for r in sync.truth("Lead")["Lead"]}  # noqa: E731
    before = len(leads())
    mdb.execute("INSERT INTO person (email, last_name) VALUES ('local.only@example.org', 'Lo')")
    mdb.execute("INSERT INTO person (email, last_name, sync_to_salesforce) VALUES "
                "('flagged@example.org', 'Fl', :t)", t=True)
    summary = sync.cycle("r1")
    counted = summary["push"]["create_people"]["counts"]["Lead"]
    assert (counted["new"], counted["skipped"], counted["failed"]) == (1, 1, 0)
    made = leads()
    assert len(made) == before + 1 and "flagged@example.org" in made
    local = mdb.one("person", "email = 'local.only@example.org'")
    assert local["sfdc_lead_id"] is None
    assert mdb.scalar("SELECT count(*) FROM sfsync_outbox") == 0  # nothing left waiting
    sync.advance(60)
    quiet = sync.cycle("r2")  # the skipped row is not weighed again until it changes
    assert quiet["push"]["create_people"]["counts"] == {}

    # flagging it later creates it, with every value of the row
    mdb.execute("UPDATE person SET sync_to_salesforce = :t WHERE id = :i", t=True,
                i=local["id"])
    sync.advance(60)
    sync.cycle("r3")
    lead_id = mdb.one("person", "id = :i", i=local["id"])["sfdc_lead_id"]
    assert lead_id and sf(sync, "Lead", lead_id)["LastName"] == "Lo"

    # "sync now" is an explicit request: created whatever the flag
    mdb.execute("INSERT INTO person (email, last_name) VALUES ('asked@example.org', 'As')")
    asked = mdb.one("person", "email = 'asked@example.org'")
    P.sync_now("now", person_ids=[asked["id"]], config=sync.config(), engine=mdb.engine)
    assert mdb.one("person", "id = :i", i=asked["id"])["sfdc_lead_id"]

    # all: every new row, as before the setting existed
    mdb.execute("INSERT INTO person (email, last_name) VALUES ('every@example.org', 'Ev')")
    sync.advance(60)
    sync.cycle("r4", push={"create_leads": "all"})
    assert mdb.one("person", "email = 'every@example.org'")["sfdc_lead_id"]
    assert len(leads()) == before + 4


def test_records_excluded_by_a_sync_filter_are_never_linked_or_written(sync):
    from include.sfsync import pipeline as P

    hidden = [r for r in sync.truth("Contact")["Contact"]
              if r["Do_Not_Sync_Marketing__c"] and r["Email"]][0]
    sync.mdb.execute("INSERT INTO person (email) VALUES (:e)", e=hidden["Email"])
    leads_before = len(sync.truth("Lead")["Lead"])
    result = P.push("r1", "create_people", sync.context())
    counted = result["counts"]["Contact"]
    assert (counted["skipped"], counted["failed"]) == (1, 0)  # a filter's refusal: Skipped
    assert len(sync.truth("Lead")["Lead"]) == leads_before
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_error WHERE direction = 'push'") == 0
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_outbox") == 0
    assert sync.mdb.scalar("SELECT sfdc_contact_id FROM person WHERE email = :e",
                           e=hidden["Email"]) is None


@on_demo_and_standard_orgs
def test_conflicts_leads_marketing_wins_contacts_salesforce_wins(sync):
    lead, contact = a_lead(sync), a_contact(sync)
    sync.mdb.execute("UPDATE person SET title = 'Mk lead' WHERE id = :i", i=lead["id"])
    sync.mdb.execute("UPDATE person SET title = 'Mk contact' WHERE id = :i", i=contact["id"])
    sync.advance(5)
    sync.update("Lead", lead["sfdc_lead_id"], Title="Sf lead")
    sync.update("Contact", contact["sfdc_contact_id"], Title="Sf contact")
    sync.advance(60)
    sync.cycle("r1")
    assert sf(sync, "Lead", lead["sfdc_lead_id"])["Title"] == "Mk lead"
    assert sf(sync, "Contact", contact["sfdc_contact_id"])["Title"] == "Sf contact"
    assert sync.mdb.one("person", "id = :i", i=lead["id"])["title"] == "Mk lead"
    assert sync.mdb.one("person", "id = :i", i=contact["id"])["title"] == "Sf contact"
    logged = {(r["sf_object"], r["column_name"], r["marketing_value"], r["salesforce_value"],
               r["winner"]) for r in sync.mdb.rows("sfsync_conflict")}
    assert logged == {("Lead", "title", "Mk lead", "Sf lead", "marketing"),
                      ("Contact", "title", "Mk contact", "Sf contact", "salesforce")}
    # no flip-flop: the next cycles change nothing on either side
    for i in range(2):
        sync.advance(60)
        sync.cycle(f"r{2 + i}")
    assert sf(sync, "Lead", lead["sfdc_lead_id"])["Title"] == "Mk lead"
    assert sf(sync, "Contact", contact["sfdc_contact_id"])["Title"] == "Sf contact"
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_conflict") == 2
    # a field changed only in Salesforce while the marketing side changed another: no conflict
    sync.mdb.execute("UPDATE person SET phone = '555-0100' WHERE id = :i", i=contact["id"])
    sync.update("Contact", contact["sfdc_contact_id"], Title="Sf contact 2")
    sync.advance(60)
    sync.cycle("r9")
    rec = sf(sync, "Contact", contact["sfdc_contact_id"])
    assert (rec["Title"], rec["Phone"]) == ("Sf contact 2", "555-0100")
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_conflict") == 2


def test_per_field_override_of_the_conflict_policy(sync):
    contact = a_contact(sync)
    sync.overrides = {"conflicts": {"fields": {"Contact.Title": "marketing"}}}
    sync.mdb.execute("UPDATE person SET title = 'Mine' WHERE id = :i", i=contact["id"])
    sync.update("Contact", contact["sfdc_contact_id"], Title="Theirs")
    sync.advance(60)
    sync.cycle("r1")
    assert sf(sync, "Contact", contact["sfdc_contact_id"])["Title"] == "Mine"


def test_data_errors_are_logged_retried_after_a_change_and_quarantined(sync):
    lead, other = sync.mdb.rows("person", "sfdc_type = 'Lead' AND sfdc_is_deleted = :f",
                                f=False)[:2]
    sync.mdb.execute("UPDATE person SET lead_score = 500 WHERE id = :i", i=lead["id"])
    sync.mdb.execute("UPDATE person SET title = 'Fine' WHERE id = :i", i=other["id"])
    summary = sync.cycle("r1")
    people = summary["push"]["people"]["counts"]["Lead"]
    assert (people["updated"], people["failed"]) == (1, 1)  # one bad record blocks no other
    assert sf(sync, "Lead", other["sfdc_lead_id"])["Title"] == "Fine"
    error = sync.mdb.one("sfsync_error", "direction = 'push'")
    assert (error["error_code"], error["field"], error["sfdc_id"]) == (
        "FIELD_CUSTOM_VALIDATION_EXCEPTION", "Lead_Score__c", lead["sfdc_lead_id"])
    assert "between 0 and 100" in error["message"]
    box = sync.mdb.one("sfsync_outbox", "row_id = :i", order="row_id", i=lead["id"])
    assert (box["status"], box["attempts"]) == ("failed", 1)
    sync.advance(60)
    sync.cycle("r2")  # unchanged: not tried again
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_error") == 1
    for i, score in enumerate((600, 700)):  # changed again, still bad: retried, quarantined
        sync.mdb.execute("UPDATE person SET lead_score = :s WHERE id = :i", s=score,
                         i=lead["id"])
        sync.advance(60)
        sync.cycle(f"r{3 + i}")
    box = sync.mdb.one("sfsync_outbox", "row_id = :i", order="row_id", i=lead["id"])
    assert (box["status"], box["attempts"]) == ("quarantined", 3)
    sync.mdb.execute("UPDATE person SET lead_score = 50 WHERE id = :i", i=lead["id"])
    sync.advance(60)
    sync.cycle("r6")  # quarantined: left alone until released
    assert sf(sync, "Lead", lead["sfdc_lead_id"])["Lead_Score__c"] != 50


def test_values_are_standardised_before_writing(sync):
    lead = a_lead(sync)
    sync.mdb.execute("UPDATE person SET state = ' ca ', country = 'USA' WHERE id = :i",
                     i=lead["id"])
    sync.cycle("r1")
    rec = sf(sync, "Lead", lead["sfdc_lead_id"])
    assert (rec["State"], rec["Country"]) == ("California", "United States")
    row = sync.mdb.one("person", "id = :i", i=lead["id"])
    assert (row["state"], row["country"]) == ("California", "United States")
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_error") == 0


@on_demo_and_standard_orgs
def test_a_converted_leads_person_is_written_through_its_contact(sync):
    lead = a_lead(sync)
    sync.org.control("POST", "/convert-lead", json={"lead_id": lead["sfdc_lead_id"]})
    sync.advance(60)
    sync.cycle("r1")
    person = sync.mdb.one("person", "id = :i", i=lead["id"])
    assert person["sfdc_type"] == "Contact" and person["sfdc_contact_id"]
    sync.mdb.execute("UPDATE person SET title = 'After conversion' WHERE id = :i",
                     i=lead["id"])
    sync.cycle("r2")
    assert sf(sync, "Contact", person["sfdc_contact_id"])["Title"] == "After conversion"
    assert sf(sync, "Lead", lead["sfdc_lead_id"])["Title"] != "After conversion"
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_error") == 0


def test_request_limit_stops_the_push_without_losing_anything(sync):
    lead = a_lead(sync)
    sync.mdb.execute("UPDATE person SET title = 'Later' WHERE id = :i", i=lead["id"])
    ctx = sync.context()
    from include.sfsync import pipeline as P
    from include.sfsync.store.ledger import start_run

    campaign = sync.mdb.rows("campaign", "sfdc_is_deleted = :f", f=False)[0]
    sync.mdb.execute("UPDATE campaign SET description = 'Later too' WHERE id = :i",
                     i=campaign["id"])
    start_run(ctx.engine, "r1", "salesforce_incremental_sync", "incremental")
    sync.org.control("POST", "/faults", json={"endpoint": "composite", "kind": "request_limit",
                                             "count": 1})
    result = P.push("r1", "people", ctx)
    assert result["stopped"] == "REQUEST_LIMIT_EXCEEDED" and result["pending"] == 1
    assert sf(sync, "Lead", lead["sfdc_lead_id"])["Title"] != "Later"
    usage = sync.usage()
    # the rest of the cycle's push waits too, without a call
    assert P.push("r1", "campaigns", ctx) == {"step": "campaigns",
                                               "stopped": "REQUEST_LIMIT_EXCEEDED",
                                               "api_calls": 0}
    assert sync.usage() == usage
    assert sf(sync, "Campaign", campaign["sfdc_id"])["Description"] != "Later too"
    sync.cycle("r2")
    assert sf(sync, "Lead", lead["sfdc_lead_id"])["Title"] == "Later"
    assert sf(sync, "Campaign", campaign["sfdc_id"])["Description"] == "Later too"


def test_row_locks_are_retried_within_the_cycle(sync):
    lead = a_lead(sync)
    sync.mdb.execute("UPDATE person SET title = 'Locked once' WHERE id = :i", i=lead["id"])
    sync.org.control("POST", "/faults", json={"endpoint": "composite.sobjects",
                                             "kind": "unable_to_lock_row", "count": 1})
    summary = sync.cycle("r1")
    assert summary["push"]["people"]["counts"]["Lead"]["updated"] == 1
    assert sf(sync, "Lead", lead["sfdc_lead_id"])["Title"] == "Locked once"
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_error") == 0


def _campaign_without(sync: Sync, person: dict) -> dict:
    """A live campaign the person is not a member of."""
    member_of = {r["sfdc_campaign_id"] for r in sync.mdb.rows(
        "campaign_member", "person_id = :p", p=person["id"])}
    return [c for c in sync.mdb.rows("campaign", "sfdc_is_deleted = :f", f=False)
            if c["sfdc_id"] not in member_of][0]


def _statuses(sync: Sync, campaign_id: str) -> list[str]:
    return [r["Label"] for r in sync.truth("CampaignMemberStatus")["CampaignMemberStatus"]
            if r["CampaignId"] == campaign_id]


@on_demo_and_standard_orgs
def test_campaign_membership_is_two_way(sync):
    mdb = sync.mdb
    lead = a_lead(sync)
    campaign = _campaign_without(sync, lead)
    statuses = _statuses(sync, campaign["sfdc_id"])
    mdb.execute("INSERT INTO campaign_member (person_id, sfdc_campaign_id, status) "
                "VALUES (:p, :c, :s)", p=lead["id"], c=campaign["sfdc_id"],
                s=statuses[-1].upper())  # statuses match case-insensitively
    sync.cycle("r1")
    row = mdb.one("campaign_member", "person_id = :p AND sfdc_campaign_id = :c",
                  p=lead["id"], c=campaign["sfdc_id"])
    assert row["sfdc_id"] and row["sfdc_lead_id"] == lead["sfdc_lead_id"]
    member = sf(sync, "CampaignMember", row["sfdc_id"])
    assert (member["LeadId"], member["CampaignId"], member["Status"]) == (
        lead["sfdc_lead_id"], campaign["sfdc_id"], statuses[-1])
    assert row["status"] == statuses[-1]  # standardised to Salesforce's label
    # a status change
    mdb.execute("UPDATE campaign_member SET status = :s WHERE id = :i", s=statuses[0],
                i=row["id"])
    sync.advance(60)
    sync.cycle("r2")
    assert sf(sync, "CampaignMember", row["sfdc_id"])["Status"] == statuses[0]
    # a status the campaign does not have: a clear error, nothing written
    mdb.execute("UPDATE campaign_member SET status = 'Bogus' WHERE id = :i", i=row["id"])
    sync.advance(60)
    sync.cycle("r3")
    error = mdb.one("sfsync_error", "sf_object = 'CampaignMember'")
    assert error["error_code"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert error["message"].startswith(f"campaign_member row {row['id']}: status 'Bogus' ")
    assert statuses[0] in error["message"]
    assert json.loads(error["record"]) == {"status": "Bogus", "campaign": campaign["sfdc_id"],
                                           "table": "campaign_member", "row_id": row["id"]}
    assert sf(sync, "CampaignMember", row["sfdc_id"])["Status"] == statuses[0]
    # a removal in the marketing database removes the member in Salesforce
    mdb.execute("UPDATE campaign_member SET status = :s WHERE id = :i", s=statuses[0],
                i=row["id"])
    mdb.execute("DELETE FROM campaign_member WHERE id = :i", i=row["id"])
    sync.advance(60)
    sync.cycle("r4")
    assert not [r for r in sync.truth("CampaignMember", include_deleted=True)["CampaignMember"]
                if r["Id"] == row["sfdc_id"]]
    # and one in Salesforce reaches the marketing database
    other = mdb.rows("campaign_member", "sfdc_is_deleted = :f", f=False)[0]
    sync.delete("CampaignMember", other["sfdc_id"])
    sync.advance(60)
    sync.cycle("r5")
    assert mdb.one("campaign_member", "id = :i", i=other["id"])["sfdc_is_deleted"] in (True, 1)
    assert mdb.scalar("SELECT count(*) FROM sfsync_outbox WHERE table_name = "
                      "'campaign_member' AND status = 'pending'") == 0


def test_a_member_of_a_campaign_that_does_not_exist_is_told_so(sync):
    """A campaign deleted in Salesforce (or an id that never was one): the member's error
    names its row and says the campaign does not exist, not that no status is valid."""
    gone = sync.create("Campaign", {"Name": "Deleted before the push"})[0]
    sync.delete("Campaign", gone)
    lead = a_lead(sync)
    live = _campaign_without(sync, lead)
    ids = {}
    for name, campaign, status in (("gone", gone, "'Sent'"), ("no_status", gone, "NULL"),
                                   ("live", live["sfdc_id"], "NULL")):
        sync.mdb.execute("INSERT INTO campaign_member (person_id, sfdc_campaign_id, status) "
                         f"VALUES (:p, :c, {status})", p=lead["id"], c=campaign)
        ids[name] = sync.mdb.scalar("SELECT max(id) FROM campaign_member")
    members = sync.cycle("r1")["push"]["campaign_members"]["counts"]["CampaignMember"]
    assert (members["new"], members["failed"]) == (1, 2)  # the live campaign's member went
    errors = sync.mdb.rows("sfsync_error", "sf_object = 'CampaignMember'")
    assert [e["error_code"] for e in errors] == ["INVALID_CROSS_REFERENCE_KEY"] * 2
    for error, name in zip(errors, ("gone", "no_status"), strict=True):
        assert error["message"].startswith(f"campaign_member row {ids[name]}: campaign {gone} "
                                           "does not exist in Salesforce"), error["message"]
        assert error["field"] == "CampaignId" and "valid:" not in error["message"]
        assert json.loads(error["record"])["row_id"] == ids[name]
    assert not [r for r in sync.truth("CampaignMember")["CampaignMember"]
                if r["CampaignId"] == gone]


@on_demo_and_standard_orgs
def test_a_new_person_and_its_membership_go_in_one_cycle(sync):
    campaign = sync.mdb.rows("campaign", "sfdc_is_deleted = :f", f=False)[0]
    with sync.mdb.engine.begin() as conn:
        import sqlalchemy as sa

        pid = conn.execute(sa.text(
            "INSERT INTO person (email, last_name, company, sync_to_salesforce) VALUES "
            "('fresh@example.org', 'Fresh', 'Co', true) RETURNING id")).scalar()
        conn.execute(sa.text("INSERT INTO campaign_member (person_id, sfdc_campaign_id) "
                             "VALUES (:p, :c)"), {"p": pid, "c": campaign["sfdc_id"]})
    sync.cycle("r1")
    person = sync.mdb.one("person", "id = :i", i=pid)
    member = sync.mdb.one("campaign_member", "person_id = :p", p=pid)
    rec = sf(sync, "CampaignMember", member["sfdc_id"])
    assert rec["LeadId"] == person["sfdc_lead_id"] and rec["Status"]  # the campaign's default


def test_campaigns_are_created_and_updated(sync):
    sync.mdb.execute("INSERT INTO campaign (name, type) VALUES ('Spring webinar', 'Webinar')")
    sync.cycle("r1")
    row = sync.mdb.one("campaign", "name = 'Spring webinar'")
    assert sf(sync, "Campaign", row["sfdc_id"])["Type"] == "Webinar"
    sync.mdb.execute("UPDATE campaign SET name = 'Spring webinar 2027' WHERE id = :i",
                     i=row["id"])
    sync.advance(60)
    sync.cycle("r2")
    assert sf(sync, "Campaign", row["sfdc_id"])["Name"] == "Spring webinar 2027"


@on_demo_and_standard_orgs
def test_two_way_convergence_under_random_edits(sync):
    """Random edits on both sides over several cycles end with both sides equal under the
    mapping, conflicts decided by the policy, no duplicate, zero writes once converged."""
    rng = random.Random(7)
    mdb = sync.mdb
    people = (mdb.rows("person", "sfdc_type = 'Lead' AND sfdc_is_deleted = :f", f=False)[:6]
              + mdb.rows("person", "sfdc_type = 'Contact' AND sfdc_is_deleted = :f "
                         "AND sfdc_lead_id IS NULL", f=False)[:6])
    fields = {"title": "Title", "phone": "Phone", "department": None}
    leads_before = len(sync.truth("Lead")["Lead"])
    contacts_before = len(sync.truth("Contact")["Contact"])
    for cycle in range(5):
        for person in rng.sample(people, 6):
            column = rng.choice(["title", "phone"])
            value = f"mk-{cycle}-{rng.randint(0, 999)}"
            mdb.execute(f"UPDATE person SET {column} = :v WHERE id = :i", v=value,
                        i=person["id"])
        for person in rng.sample(people, 6):
            sobject = person["sfdc_type"]
            sf_id = person["sfdc_contact_id"] or person["sfdc_lead_id"]
            column = rng.choice(["title", "phone"])
            sync.update(sobject, sf_id, **{fields[column]: f"sf-{cycle}-{rng.randint(0, 999)}"})
        sync.advance(60)
        sync.cycle(f"c{cycle}")
    for i in range(3):  # settle: the echoes of the last pushes come back
        sync.advance(120)
        sync.cycle(f"settle{i}")
    before = writes(sync)
    sync.advance(120)
    summary = sync.cycle("converged")
    assert writes(sync) == before
    assert all(step["api_calls"] == 0 for step in summary["push"].values())
    for person in people:
        row = mdb.one("person", "id = :i", i=person["id"])
        sobject = row["sfdc_type"]
        rec = sf(sync, sobject, row["sfdc_contact_id"] or row["sfdc_lead_id"])
        assert (row["title"], row["phone"]) == (rec["Title"], rec["Phone"]), row["id"]
    for conflict in mdb.rows("sfsync_conflict"):
        assert conflict["winner"] == {"Lead": "marketing", "Contact": "salesforce"}[
            conflict["sf_object"]]
    assert mdb.scalar("SELECT count(*) FROM sfsync_conflict") > 0
    assert len(sync.truth("Lead")["Lead"]) == leads_before
    assert len(sync.truth("Contact")["Contact"]) == contacts_before
    assert mdb.scalar("SELECT count(*) FROM sfsync_outbox") == 0


def test_a_failed_call_fails_the_step_and_its_retry_resumes_without_resending(sync):
    """A 5xx on the call: the task fails (Airflow retries it with backoff); what was written
    before the failure is not sent again, nothing else is lost."""
    from include.sfsync import pipeline as P

    leads = sync.mdb.rows("person", "sfdc_type = 'Lead' AND sfdc_is_deleted = :f", f=False)[:3]
    for lead in leads:
        sync.mdb.execute("UPDATE person SET title = 'Retried' WHERE id = :i", i=lead["id"])
    ctx = sync.context()
    sync.org.control("POST", "/faults", json={"endpoint": "composite", "kind": "http_500",
                                             "count": 1})
    with pytest.raises(Exception, match="500"):
        P.push("r1", "people", ctx)
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_outbox WHERE status = 'pending'") == 3
    result = P.push("r1", "people", sync.context())  # the retry
    assert result["counts"]["Lead"]["updated"] == 3
    assert {sf(sync, "Lead", lead["sfdc_lead_id"])["Title"] for lead in leads} == {"Retried"}
    assert P.push("r1", "people", sync.context())["api_calls"] == 0  # nothing left to send


def test_block_updates_columns_are_marketing_owned(sync):
    contact = a_contact(sync)  # contacts: Salesforce wins, except for blocked columns
    sync.overrides = {"block_updates": {"person": ["title"]}}
    sync.mdb.execute("UPDATE person SET title = 'Ours' WHERE id = :i", i=contact["id"])
    sync.update("Contact", contact["sfdc_contact_id"], Title="Theirs")
    sync.advance(60)
    sync.cycle("r1")
    assert sync.mdb.one("person", "id = :i", i=contact["id"])["title"] == "Ours"
    assert sf(sync, "Contact", contact["sfdc_contact_id"])["Title"] == "Ours"
    assert sync.mdb.one("sfsync_conflict", "row_id = :i", i=contact["id"])["winner"] == \
        "marketing"


def test_removing_a_member_both_sides_at_once_is_no_error(sync):
    member = sync.mdb.rows("campaign_member", "sfdc_is_deleted = :f", f=False)[0]
    sync.delete("CampaignMember", member["sfdc_id"])
    sync.mdb.execute("DELETE FROM campaign_member WHERE id = :i", i=member["id"])
    sync.advance(60)
    summary = sync.cycle("r1")
    assert summary["push"]["campaign_members"]["counts"]["CampaignMember"]["deleted"] == 1
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_error") == 0
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_outbox") == 0


def test_a_membership_that_exists_as_another_row_is_refused_not_crashing(sync):
    """Another row already holds the membership: a clear error on the new row; other members
    still go through."""
    taken = sync.mdb.rows("campaign_member", "sfdc_is_deleted = :f AND person_id IS NOT NULL",
                          f=False)[0]
    lead = a_lead(sync)
    campaign = _campaign_without(sync, lead)
    sync.mdb.execute("INSERT INTO campaign_member (person_id, sfdc_campaign_id) VALUES "
                     "(:p, :c)", p=taken["person_id"], c=taken["sfdc_campaign_id"])
    sync.mdb.execute("INSERT INTO campaign_member (person_id, sfdc_campaign_id) VALUES "
                     "(:p, :c)", p=lead["id"], c=campaign["sfdc_id"])
    summary = sync.cycle("r1")
    members = summary["push"]["campaign_members"]["counts"]["CampaignMember"]
    assert (members["new"], members["failed"]) == (1, 1)
    error = sync.mdb.one("sfsync_error", "sf_object = 'CampaignMember'")
    assert error["error_code"] == "DUPLICATE_VALUE" and f"row {taken['id']}" in error["message"]


def test_records_written_before_a_failed_call_are_settled_not_sent_twice(sync):
    from include.sfsync import pipeline as P

    for name in ("Alpha", "Beta", "Gamma"):
        sync.mdb.execute("INSERT INTO campaign (name) VALUES (:n)", n=f"Interrupted {name}")
    # one record hits a row lock; the retry call for it then fails with a 500
    sync.org.control("POST", "/faults", json={"endpoint": "composite.sobjects",
                                             "kind": "unable_to_lock_row", "count": 1})
    sync.org.control("POST", "/faults", json={"endpoint": "composite", "kind": "http_500",
                                             "count": 1, "after": 1})
    with pytest.raises(Exception, match="500"):
        P.push("r1", "campaigns", sync.context())
    created = [r for r in sync.truth("Campaign")["Campaign"]
               if r["Name"].startswith("Interrupted")]
    assert len(created) == 2
    assert sync.mdb.scalar("SELECT count(*) FROM campaign WHERE name LIKE 'Interrupted%' "
                           "AND sfdc_id IS NOT NULL") == 2
    P.push("r1", "campaigns", sync.context())  # the task's retry
    names = sorted(r["Name"] for r in sync.truth("Campaign")["Campaign"]
                   if r["Name"].startswith("Interrupted"))
    assert names == ["Interrupted Alpha", "Interrupted Beta", "Interrupted Gamma"]


def test_a_value_changed_and_changed_back_is_no_conflict(sync):
    lead = a_lead(sync)
    sync.mdb.execute("UPDATE person SET title = 'Interim' WHERE id = :i", i=lead["id"])
    sync.mdb.execute("UPDATE person SET title = :t WHERE id = :i", t=lead["title"],
                     i=lead["id"])
    sync.update("Lead", lead["sfdc_lead_id"], Title="Set in Salesforce")
    sync.advance(60)
    sync.cycle("r1")
    assert sync.mdb.one("person", "id = :i", i=lead["id"])["title"] == "Set in Salesforce"
    assert sf(sync, "Lead", lead["sfdc_lead_id"])["Title"] == "Set in Salesforce"
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_conflict") == 0


def test_a_lead_converted_before_the_push_gets_the_edit_through_its_contact(sync):
    from include.sfsync import pipeline as P

    lead = a_lead(sync)
    sync.mdb.execute("UPDATE person SET title = 'Edited before conversion' WHERE id = :i",
                     i=lead["id"])
    contact = sync.org.control("POST", "/convert-lead",
                               json={"lead_id": lead["sfdc_lead_id"]})["contactId"]
    P.push("r1", "people", sync.context())  # the lead is converted: waits, does not fail
    box = sync.mdb.one("sfsync_outbox", "row_id = :i", order="row_id", i=lead["id"])
    assert box["status"] == "pending" and "CANNOT_UPDATE_CONVERTED_LEAD" in box["last_error"]
    sync.advance(60)
    sync.cycle("r2")  # the pull links the contact; the push writes it
    assert sf(sync, "Contact", contact)["Title"] == "Edited before conversion"
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_error") == 0


def test_a_deleted_members_id_is_not_reused_before_the_delete_is_pushed(sync):
    newest = sync.mdb.rows("campaign_member", "sfdc_is_deleted = :f", order="id DESC",
                           f=False)[0]
    sync.mdb.execute("DELETE FROM campaign_member WHERE id = :i", i=newest["id"])
    lead = a_lead(sync)
    sync.mdb.execute("INSERT INTO campaign_member (person_id, sfdc_campaign_id) VALUES "
                     "(:p, :c)", p=lead["id"], c=_campaign_without(sync, lead)["sfdc_id"])
    assert sync.mdb.scalar("SELECT max(id) FROM campaign_member") != newest["id"]
    sync.cycle("r1")
    assert not [r for r in sync.truth("CampaignMember")["CampaignMember"]
                if r["Id"] == newest["sfdc_id"]]


def test_request_limit_on_the_dedupe_query_stops_without_losing_anything(sync):
    from include.sfsync import pipeline as P

    sync.mdb.execute("INSERT INTO person (email, last_name, sync_to_salesforce) VALUES "
                     "('lim@example.org', 'Lim', true)")
    sync.org.control("POST", "/faults", json={"endpoint": "composite", "kind": "request_limit",
                                             "count": 1})
    result = P.push("r1", "create_people", sync.context())
    assert result["stopped"] == "REQUEST_LIMIT_EXCEEDED" and result["pending"] == 1
    sync.cycle("r2")
    assert sync.mdb.one("person", "email = 'lim@example.org'")["sfdc_lead_id"]

"""Safety by structure (issue 8), against the emulator, on SQLite and PostgreSQL:

* the sync's own writes are stamped by the synced tables' definitions, so nothing the pull (or
  the push's write-backs, merges, conversions, links, maintenance) writes is ever captured as a
  change to push back;
* every query the sync builds quotes its values: ``'``, ``\\``, ``"``, newline, tab and ``%``
  reach Salesforce as data, never as SOQL.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest

from include.sfsync import pipeline as P
from include.sfsync.pull.extract import changes_soql, count_soql
from include.sfsync.salesforce import soql
from include.sfsync.salesforce.reads import count, query_all
from include.sfsync.values import parse_sf_datetime
from tests.sync.test_pull import Sync

pytestmark = pytest.mark.integration

# Every character SOQL string literals must escape, and LIKE's wildcards.
NASTY = "O'Hara \\ \"quoted\"\ttab\nline 100% _x"
# What an e-mail may hold of them (Salesforce rejects white space in e-mail addresses).
NASTY_EMAIL = "o'hara\\\"q\"100%_x@example.org"


@pytest.fixture
def sync(org, marketing_db):
    return Sync(org, marketing_db)


def test_a_pulled_change_is_never_captured_for_push(sync):
    """Inserts, updates, deletes, undeletes, merges and conversions pulled over several cycles,
    a formula refresh, the id-set reconciliation and late links: not one captured change."""
    sync.overrides = {"formula_fields": {"include": ["Contact.Account_Rating__c"]}}
    sync.cycle("r0")  # the initial copy: every two-way row inserted by the sync
    assert sync.captured() == 0
    assert sync.mdb.scalar("SELECT count(*) FROM person") > 0
    for i, activity in enumerate([
            {"creates": 30, "updates": 60, "deletes": 8, "conversions": 3, "rng_seed": 11},
            {"creates": 10, "updates": 40, "deletes": 4, "undeletes": 2, "merges": 2,
             "conversions": 2, "rng_seed": 12}], start=1):
        sync.advance(300)
        touched = sync.org.control("POST", "/simulate", json=activity)
        assert touched["merged"] or i == 1
        sync.advance(60)
        summary = sync.cycle(f"r{i}")
        assert sum(c["updated"] + c["new"] for c in summary["counts"].values()) > 0
    # a merge in Salesforce folds two person rows; the survivor's blanks are filled by the sync
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_merge") > 0
    # maintenance writes the two-way tables too: formula refresh and reconciliation
    ctx = sync.context()
    from include.sfsync import maintenance

    account = sync.truth("Account")["Account"][0]
    sync.update("Account", account["Id"], Rating="Hot" if account.get("Rating") != "Hot"
                else "Cold")
    assert sum(maintenance.refresh_formulas(ctx, force=True).values()) > 0
    lead = sync.mdb.rows("person", "sfdc_type = 'Lead' AND sfdc_is_deleted = :f", f=False)[0]
    sync.delete("Lead", lead["sfdc_lead_id"], hard=True)
    assert maintenance.reconcile(ctx, force=True)["Lead"] >= 1
    # The one thing the triggers see is a merged-away row's delete (a delete is always
    # captured); the merge settles it at once: nothing to push.
    merged = {r["loser_person_id"] for r in sync.mdb.rows("sfsync_merge")}
    changes = sync.mdb.rows("sfsync_change")
    assert [(c["op"], c["processed_at"] is not None) for c in changes] == \
        [("delete", True)] * len(changes)
    assert {c["row_id"] for c in changes} <= merged
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_outbox") == 0
    # ... while any other writer's change is captured, with plain SQL
    sync.mdb.execute("UPDATE person SET title = 'Captured' WHERE id = :i", i=lead["id"])
    assert sync.captured() == len(changes) + 1


def test_dedupe_by_email_quotes_the_email(sync):
    """A marketing insert whose e-mail holds quotes, a backslash and wildcards is linked to the
    Salesforce lead with that e-mail (other case): the query matched it exactly."""
    sync.cycle("r0")
    leads_before = len(sync.truth("Lead")["Lead"])
    lead_id = sync.create("Lead", {"LastName": "Hara", "Company": "Quote Co",
                                   "Email": NASTY_EMAIL})[0]
    sync.create("Lead", {"LastName": "Wild", "Company": "Card Co",
                         "Email": "o'hara\\\"q\"100x_x@example.org"})  # what % or _ would match
    sync.mdb.execute("INSERT INTO person (email, first_name) VALUES (:e, 'Quoted')",
                     e=NASTY_EMAIL.upper())
    result = P.push("r1", "create_people", sync.context())
    assert result["counts"]["Lead"]["linked"] == 1, result
    assert sync.mdb.one("person", "first_name = 'Quoted'")["sfdc_lead_id"] == lead_id
    assert len(sync.truth("Lead")["Lead"]) == leads_before + 2  # nothing created
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_error") == 0


def test_every_query_the_sync_builds_takes_any_value_as_data(org):
    client_sf = org.salesforce()
    lead_id = org.control("POST", "/records/Lead", json={"records": [
        {"LastName": "Nasty", "Company": "Escapes Inc", "Title": NASTY}]})["ids"][0]
    lead = client_sf.Lead.get(lead_id)
    assert lead["Title"] == NASTY  # stored as written
    from include.sfsync.salesforce.client import SalesforceClient

    client = SalesforceClient.from_connection("salesforce_default", bulk_poll_seconds=0)
    # equality and IN lists (the id and e-mail lookups): each value only as data
    queries = [
        soql.select("Lead", ["Id", "Title"], conditions=[soql.where("Title", "=", NASTY)]),
        *[soql.select("Lead", ["Id", "Title"], conditions=[soql.one_of("Title", quoted)])
          for quoted in soql.in_lists([NASTY, "'; DELETE", "a\\", "\n"])],
        *[soql.select("Lead", ["Id", "Title"], conditions=[soql.one_of("Id", quoted)])
          for quoted in soql.in_lists([lead_id, "00Q000000000000"])],
    ]
    for found in query_all(client, queries):
        assert [(r["Id"], r["Title"]) for r in found] == [(lead_id, NASTY)]
    # a value that is not an id reaches Salesforce intact, which refuses it as an id
    for bad in (NASTY, "00Q' OR Id != '"):
        with pytest.raises(SalesforceMalformedRequest) as failure:
            client.sf.query(soql.select("Lead", ["Id"], conditions=[
                soql.one_of("Id", soql.in_lists([lead_id, bad])[0])]))
        assert failure.value.content[0]["message"] == f"invalid ID field: {bad}"
    # the same through a plain REST query
    rest = soql.select("Lead", ["Id"], conditions=[soql.where("Title", "=", NASTY)])
    assert [r["Id"] for r in client.sf.query(rest)["records"]] == [lead_id]
    # cursor filters: the change query and its count, with a resume key that is not an id
    from include.sfsync.catalog import build_catalog
    from include.sfsync.config import load_config
    from include.sfsync.objects import object_names

    config = load_config()
    obj = build_catalog(client.describe_all(object_names(config.custom_objects)),
                        config).object("Lead")
    created = parse_sf_datetime(lead["CreatedDate"])
    window = {"created_from": created - timedelta(seconds=1),
              "created_to": created + timedelta(seconds=1)}
    keyed = {**window, "resume": (created - timedelta(seconds=1), "00Q000000000000")}
    records = client.sf.query_all(changes_soql(obj, None, **keyed),
                                  include_deleted=True)["records"]
    assert lead_id in {r["Id"] for r in records}
    assert count(client, count_soql("Lead", **keyed), include_deleted=True) == len(records)
    for bad in (NASTY, "00Q' OR Id != '"):  # reaches Salesforce intact, refused as an id
        with pytest.raises(SalesforceMalformedRequest) as failure:
            client.sf.query_all(changes_soql(obj, None, **window, resume=(created, bad)),
                                include_deleted=True)
        assert failure.value.content[0]["message"] == f"invalid ID field: {bad}"
    since = changes_soql(obj, created - timedelta(seconds=1))
    assert lead_id in {r["Id"] for r in client.sf.query_all(since, include_deleted=True)["records"]}


def test_names_are_checked_before_a_query_is_built():
    for bad in ("Lead; DELETE", "Title'", "", "Owner..Name", "1Field"):
        with pytest.raises(ValueError):
            soql.select("Lead", ["Id", bad])
        with pytest.raises(ValueError):
            soql.where(bad, "=", "x")
    with pytest.raises(ValueError):
        soql.where("Title", "= 'x' OR Title =", "y")
    with pytest.raises(ValueError):
        soql.select("Lead", ["Id"], order_by=["Title; DROP"])
    assert soql.select("Contact", ["Id", "Owner.Name"], conditions=[
        soql.where("IsDeleted", "=", False)], order_by=["CreatedDate DESC"], limit=1) == \
        "SELECT Id, Owner.Name FROM Contact WHERE IsDeleted = false ORDER BY CreatedDate DESC " \
        "LIMIT 1"


@pytest.mark.parametrize("org", ["standard"], indirect=True)
def test_a_dropped_table_is_copied_again_not_continued_from_its_cursor(sync, caplog):
    """Issue 12 defect 3: after `DROP TABLE person` the next cycle used to recreate it empty
    and carry on from the cursors (261 rows became 3). It copies Lead and Contact again, says
    why, and the rows pointing at people point at the copied ones."""
    sync.cycle("r1")
    people = sync.mdb.scalar("SELECT count(*) FROM person")
    members = {r["sfdc_id"]: r["sfdc_lead_id"] or r["sfdc_contact_id"] for r in sync.mdb.rows(
        "campaign_member", "person_id IS NOT NULL")}
    assert people > 100 and members
    sync.mdb.execute("DROP TABLE person")
    sync.advance(60)
    with caplog.at_level("WARNING"):
        sync.cycle("r2")
    assert "Lead: its table person is gone from the marketing database; copying the object " \
        "again" in caplog.text and "Contact: its table person is gone" in caplog.text
    assert sync.mdb.scalar("SELECT count(*) FROM person") == people
    relinked = {r["sfdc_id"]: r["person_id"] for r in sync.mdb.rows("campaign_member")}
    for member, person_ref in members.items():
        person = sync.mdb.one("person", "id = :i", i=relinked[member])
        assert person_ref in (person["sfdc_lead_id"], person["sfdc_contact_id"]), member
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_count WHERE run_key = 'r2' AND "
                           "sf_object = 'Account' AND new > 0") == 0  # the rest carried on


@pytest.mark.parametrize("org", ["standard"], indirect=True)
def test_rows_lost_without_a_trace_are_copied_again_deletes_the_triggers_saw_are_not(sync,
                                                                                     caplog):
    """Issue 12: a synced table that loses rows the sync wrote (a DELETE on a one-way table, a
    TRUNCATE or a delete the triggers did not see on a two-way one) is copied again at the next
    cycle, and the log says why; a person deleted with the triggers on stays deleted."""
    from include.sfsync.store.capture import remove_triggers

    sync.cycle("r1")
    accounts = sync.mdb.scalar("SELECT count(*) FROM company")
    people = sync.mdb.scalar("SELECT count(*) FROM person")
    assert accounts > 10 and people > 10
    sync.mdb.execute("DELETE FROM company WHERE id IN (SELECT id FROM company ORDER BY id "
                     "LIMIT 5)")
    remove_triggers(sync.mdb.engine, ["person"])  # e.g. a TRUNCATE, or an older backup
    sync.mdb.execute("DELETE FROM person WHERE id IN (SELECT id FROM person ORDER BY id LIMIT 7)")
    sync.advance(60)
    with caplog.at_level("WARNING"):
        sync.cycle("r2")
    assert f"Account: its table company lost rows the sync wrote without a trace (at least " \
        f"{accounts} expected, {accounts - 5} found); copying the object again" in caplog.text
    assert f"Lead: its table person lost rows the sync wrote without a trace (at least " \
        f"{people} expected, {people - 7} found)" in caplog.text
    assert sync.mdb.scalar("SELECT count(*) FROM company") == accounts
    assert sync.mdb.scalar("SELECT count(*) FROM person") == people
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_count WHERE run_key = 'r2' AND "
                           "sf_object = 'Opportunity' AND new > 0") == 0  # the rest carried on
    # a person deleted here, with the triggers on (reinstalled by r2), is a local delete: kept
    gone = sync.mdb.rows("person", order="id")[0]
    sync.mdb.execute("DELETE FROM person WHERE id = :i", i=gone["id"])
    caplog.clear()
    sync.advance(60)
    with caplog.at_level("WARNING"):
        sync.cycle("r3")
    assert "without a trace" not in caplog.text
    assert sync.mdb.scalar("SELECT count(*) FROM person") == people - 1

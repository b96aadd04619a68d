"""The pull sync (Salesforce -> marketing database) against the emulator, on SQLite and
PostgreSQL: every case of issue 3's "done when" list, asserted on the run summary, the marketing
database and the emulator's own truth (``/export``, ``/counters``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from include.salesforce_emulator.demo import demo_sync_settings
from include.sfsync import pipeline as P
from include.sfsync.config import ConfigError, load_config
from include.sfsync.context import SyncContext, open_context
from include.sfsync.errors import OrgMismatchError
from include.sfsync.objects import PEOPLE
from include.sfsync.store.ledger import repoint_org
from include.sfsync.values import parse_sf_datetime, parse_value
from tests.fixtures_emulator import on_demo_and_standard_orgs

pytestmark = pytest.mark.integration

ZERO = {"new": 0, "updated": 0, "deleted": 0, "skipped": 0, "failed": 0}
# The marketing database is private to each test: keep the polling for Bulk jobs short. The
# demo org's custom objects and "do not sync" checkbox are opted in, as its admin would.
BASE = {**demo_sync_settings(), "bulk_poll_seconds": 0}


class Sync:
    """Drives the engine the way the incremental DAG does, one cycle at a time."""

    def __init__(self, org, mdb):
        self.org, self.mdb = org, mdb
        self.overrides: dict = {}
        # any other org runs on the defaults, as a new user's would
        self.base = BASE if org.profile == "demo" else {"bulk_poll_seconds": 0}

    def config(self, **overrides):
        return load_config(overrides={**self.base, **self.overrides, **overrides})

    def cycle(self, run_key: str, **overrides) -> dict:
        summary = P.run_cycle(run_key, config=self.config(**overrides), engine=self.mdb.engine)
        # every change captured before the cycle was folded into the outbox by it
        assert self.mdb.scalar("SELECT count(*) FROM sfsync_change WHERE processed_at IS NULL") \
            == 0
        return summary

    def captured(self) -> int:
        """Changes the capture triggers recorded: none, as long as only the sync writes."""
        return self.mdb.scalar("SELECT count(*) FROM sfsync_change")

    def context(self, **overrides) -> SyncContext:
        return open_context(self.config(**overrides), engine=self.mdb.engine)

    def advance(self, seconds: int) -> None:
        self.org.control("POST", "/clock", json={"advance_seconds": seconds})

    def usage(self) -> int:
        """API calls Salesforce billed so far (logins are free)."""
        return self.org.control("GET", "/counters")["api_usage"]["used"]

    def create(self, sobject: str, *records: dict) -> list[str]:
        return self.org.control("POST", f"/records/{sobject}",
                                json={"records": list(records)})["ids"]

    def update(self, sobject: str, record_id: str, **values) -> None:
        self.org.control("PATCH", f"/records/{sobject}/{record_id}", json={"values": values})

    def delete(self, sobject: str, record_id: str, *, hard: bool = False) -> None:
        self.org.control("DELETE", f"/records/{sobject}/{record_id}"
                         + ("?hard=true" if hard else ""))

    def truth(self, *objects: str, include_deleted: bool = False) -> dict[str, list[dict]]:
        query = "?include_deleted=true" if include_deleted else "?"
        if objects:
            query += "&objects=" + ",".join(objects)
        return self.org.control("GET", "/export" + query)

    def person(self, sf_id: str) -> dict:
        return self.mdb.one("person", "sfdc_lead_id = :i OR sfdc_contact_id = :i", i=sf_id)

    def watermark(self, sf_object: str):
        return self.mdb.scalar("SELECT cursor_modstamp FROM sfsync_watermark "
                               "WHERE sf_object = :o", o=sf_object)


@pytest.fixture
def sync(org, marketing_db):
    return Sync(org, marketing_db)


def sf_record(sync: Sync, sobject: str, record_id: str) -> dict:
    found = [r for r in sync.truth(sobject, include_deleted=True)[sobject]
             if r["Id"] == record_id]
    assert found, f"{sobject} {record_id} not in the org"
    return found[0]


def counts(summary: dict, sf_object: str) -> dict:
    return summary["counts"][sf_object]


def aware(value):
    """SQLite hands datetimes back naive (UTC) through raw SQL."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] in " T":
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value


def expected_value(sf_type: str, value):
    return parse_value(sf_type, value)


def stored(value, sf_type: str):
    value = aware(value)
    if sf_type == "date" and isinstance(value, str):
        return datetime.fromisoformat(value).date()
    if sf_type == "boolean" and value is not None:
        return bool(value)
    return value


def assert_mapped(row: dict, rec: dict, fields, where: str) -> None:
    for f in fields:
        want = expected_value(f.sf_type, rec.get(f.sf_field))
        got = stored(row[f.column], f.sf_type)
        assert got == want, f"{where}: {f.key} -> {f.column}: {got!r} != {want!r}"


def assert_full_copy(sync: Sync, summary: dict) -> None:
    """Every synced table equals the org's exported truth under the catalog's mapping."""
    ctx = sync.context()
    truth = sync.truth()
    for obj in ctx.catalog.ordered():
        if obj.sf_object in PEOPLE:
            continue
        table = obj.type.table
        where = "sfdc_object = :o" if table == "activity" else ""
        rows = {r["sfdc_id"]: r for r in sync.mdb.rows(table, where, o=obj.sf_object)}
        expected = {r["Id"]: r for r in truth[obj.sf_object]}
        assert set(rows) == set(expected), obj.sf_object
        for sf_id, rec in expected.items():
            row = rows[sf_id]
            assert row["sfdc_is_deleted"] in (False, 0)
            assert aware(row["sfdc_system_modstamp"]) == parse_sf_datetime(rec["SystemModstamp"])
            assert_mapped(row, rec, obj.synced, f"{obj.sf_object} {sf_id}")
        assert counts(summary, obj.sf_object) == {**ZERO, "new": len(expected)}, obj.sf_object

    # People: one row per human; a converted lead and its contact are the same person.
    lead_obj, contact_obj = ctx.catalog.object("Lead"), ctx.catalog.object("Contact")
    person_cols = ctx.catalog.tables["person"]
    lead_only = {c for c, col in person_cols.items()
                 if all(s.startswith("Lead.") for s in col.sources)}
    leads = {r["Id"]: r for r in truth["Lead"]}
    contacts = {r["Id"]: r for r in truth["Contact"]}

    def filtered_out(obj, rec: dict) -> bool:
        return any(rec.get(flt.field) == flt.skip_when for flt in obj.filters)

    skipped_leads = {i for i, r in leads.items() if filtered_out(lead_obj, r)}
    skipped_contacts = {i for i, r in contacts.items() if filtered_out(contact_obj, r)}
    if lead_obj.filters:  # the demo org's "do not sync" checkbox: it has some of each
        assert skipped_leads and skipped_contacts
    people = sync.mdb.rows("person")
    # A converted lead whose contact is deleted in Salesforce is no live person: flagged.
    gone_contacts = {r["ConvertedContactId"] for r in leads.values() if r["IsConverted"]} \
        - set(contacts)
    assert {p["sfdc_contact_id"] for p in people if p["sfdc_is_deleted"]} <= gone_contacts
    by_lead = {p["sfdc_lead_id"]: p for p in people if p["sfdc_lead_id"]}
    by_contact = {p["sfdc_contact_id"]: p for p in people if p["sfdc_contact_id"]}
    assert not (skipped_leads & set(by_lead)) and not (skipped_contacts & set(by_contact))
    for cid, rec in contacts.items():
        if cid in skipped_contacts:
            continue
        row = by_contact[cid]
        assert (row["sfdc_type"], row["sfdc_id"], row["email"]) == ("Contact", cid, rec["Email"])
        assert_mapped(row, rec, contact_obj.synced, f"Contact {cid}")
    converted = 0
    for lid, rec in leads.items():
        if lid in skipped_leads:
            continue
        row = by_lead[lid]
        if rec["IsConverted"]:
            converted += 1
            assert row["sfdc_type"] == "Contact"
            assert row["sfdc_contact_id"] == rec["ConvertedContactId"]
            assert row["sfdc_id"] == rec["ConvertedContactId"]
            assert_mapped(row, rec, [f for f in lead_obj.synced if f.column in lead_only],
                          f"converted Lead {lid}")
        else:
            assert (row["sfdc_type"], row["sfdc_id"], row["sfdc_contact_id"]) == (
                "Lead", lid, None)
            assert_mapped(row, rec, lead_obj.synced, f"Lead {lid}")
    assert converted >= 3  # the demo org converts some leads
    humans = len(set(contacts) - skipped_contacts) + sum(
        1 for i, r in leads.items() if i not in skipped_leads and not r["IsConverted"])
    assert len([p for p in people if not p["sfdc_is_deleted"]]) == humans
    # Counts are per object: a record seen for the first time is New for its object, even when
    # it joins a person that exists already (a converted lead and its contact share one row).
    assert converted
    assert counts(summary, "Contact") == {**ZERO, "new": len(contacts) - len(skipped_contacts),
                                          "skipped": len(skipped_contacts)}
    live_leads = len(leads) - len(skipped_leads)
    assert counts(summary, "Lead") == {**ZERO, "new": live_leads, "skipped": len(skipped_leads)}


# --- 1, 2, 15: full copy, idempotence, no prior copy -----------------------------------------

@on_demo_and_standard_orgs
def test_full_copy_equals_the_orgs_truth(sync):
    summary = sync.cycle("copy")
    assert_full_copy(sync, summary)
    # The data dictionary names every field, where it goes and why.
    ctx = sync.context()
    fields = {(r["sf_object"], r["sf_field"]): r
              for r in sync.mdb.rows("sfsync_field", order="sf_object, sf_field")}
    for obj in ctx.catalog.ordered():
        for f in obj.fields:
            row = fields[(f.sf_object, f.sf_field)]
            assert (row["table_name"], bool(row["synced"]), row["reason"]) == (
                obj.type.table, f.synced, f.reason)
            assert row["column_name"] == (f.column if f.synced else None)
    assert bool(fields[("Lead", "Email")]["synced"]) and \
        fields[("Lead", "Email")]["direction"] == "two-way"
    assert not fields[("Opportunity", "ExpectedRevenue")]["synced"]  # a formula
    if sync.org.profile == "demo":
        assert ("Lead", "Internal_Notes__c") not in fields  # invisible to the sync user
    else:  # a real org's compound address: its parts are synced, the compound cannot be
        assert not fields[("Account", "BillingAddress")]["synced"]
        assert "compound" in fields[("Account", "BillingAddress")]["reason"]
        assert fields[("Account", "BillingLatitude")]["synced"]
    run = sync.mdb.one("sfsync_run", "run_key = 'copy'", order="run_key")
    assert run["status"] == "success" and run["api_calls"] == summary["api_calls"]


@on_demo_and_standard_orgs
def test_running_a_cycle_twice_changes_nothing(sync):
    first = sync.cycle("one")
    before = sync.mdb.snapshot()
    assert sum(c["new"] for c in first["counts"].values()) > 600
    second = sync.cycle("two")  # the overlap window re-reads the newest rows: none applied
    assert second["counts"] == {name: ZERO for name in first["counts"]}
    sync.advance(600)
    third = sync.cycle("three")
    assert all(c["new"] == c["updated"] == c["deleted"] == 0 for c in third["counts"].values())
    assert sync.mdb.snapshot() == before


def test_incremental_without_a_prior_copy_pulls_full_history(sync):
    # Only one custom object first; the other is enabled later, with years of history.
    first = sync.cycle("first", custom_objects=["Subscription__c"])
    assert "Webinar_Attendance__c" not in first["counts"]
    sync.advance(600)
    plan = P.prepare("second", config=sync.config(), engine=sync.mdb.engine)
    assert plan["objects"]["Webinar_Attendance__c"] == "full"
    assert {m for n, m in plan["objects"].items() if n != "Webinar_Attendance__c"} <= {
        "idle", "changes"}
    second = sync.cycle("second")
    truth = sync.truth("Webinar_Attendance__c")["Webinar_Attendance__c"]
    assert counts(second, "Webinar_Attendance__c") == {**ZERO, "new": len(truth)}
    oldest = min(parse_sf_datetime(r["SystemModstamp"]) for r in truth)
    assert (datetime.now(UTC) - oldest).days > 60  # history, far behind any cursor
    rows = sync.mdb.rows("webinar_attendance")
    assert sorted(r["sfdc_id"] for r in rows) == sorted(r["Id"] for r in truth)
    people = {p["sfdc_contact_id"]: p["id"] for p in sync.mdb.rows("person")}
    contact_of = {r["Id"]: r["Contact__c"] for r in truth}
    assert {r["sfdc_id"]: r["person_id"] for r in rows} == {
        i: people.get(c) for i, c in contact_of.items()}
    assert sum(1 for r in rows if r["person_id"]) > len(rows) // 2


# --- 3, 4: late commits and timestamp ties ----------------------------------------------------

def test_late_commit_inside_the_overlap_is_picked_up(sync):
    sync.cycle("copy")
    sync.advance(600)
    sync.cycle("settle")
    cursor = sync.watermark("Lead")
    lead = next(r for r in sync.truth("Lead")["Lead"]
                if not r["IsConverted"] and not r.get("Do_Not_Sync_Marketing__c"))
    # A long transaction commits now, stamped two minutes ago: behind the cursor.
    late = sync.org.control("POST", "/late-commit", json={
        "id": lead["Id"], "values": {"Title": "Chief Late Officer"}, "seconds_ago": 120})
    late_stamp = parse_sf_datetime(late["SystemModstamp"] + "Z")
    assert late_stamp < aware(cursor)
    assert (aware(cursor) - late_stamp).total_seconds() < load_config().overlap_seconds
    summary = sync.cycle("late")
    assert counts(summary, "Lead") == {**ZERO, "updated": 1}
    row = sync.person(lead["Id"])
    assert row["title"] == "Chief Late Officer"
    assert aware(row["sfdc_lead_system_modstamp"]) == late_stamp


def test_a_transaction_open_longer_than_the_overlap_is_not_lost(sync):
    """Salesforce holds latestDateCovered back to the start of an open transaction; the cursor
    never passes it, so a commit stamped well before the newest change read is still found."""
    sync.cycle("copy")
    sync.advance(600)
    leads = [r for r in sync.truth("Lead")["Lead"]
             if not r["IsConverted"] and not r.get("Do_Not_Sync_Marketing__c")]
    overlap = load_config().overlap_seconds
    # a transaction opened longer ago than the overlap is still open
    sync.org.control("PATCH", "/settings", json={"latest_date_lag_seconds": overlap + 100})
    # covered, whatever the second (latestDateCovered is floored to the minute): makes the
    # cycle read Leads
    sync.org.control("POST", "/late-commit", json={
        "id": leads[0]["Id"], "values": {"Title": "Covered change"},
        "seconds_ago": overlap + 100 + 90})
    sync.update("Lead", leads[1]["Id"], Title="Newest change")  # now: past the coverage
    summary = sync.cycle("open")
    assert counts(summary, "Lead")["updated"] == 2
    assert sync.person(leads[1]["Id"])["title"] == "Newest change"
    covered = aware(sync.mdb.scalar("SELECT covered_until FROM sfsync_watermark "
                                    "WHERE sf_object = 'Lead'"))
    assert aware(sync.watermark("Lead")) <= covered  # never past latestDateCovered
    # the open transaction commits, its change stamped when it ran: more than one overlap
    # before the newest change the cycle read
    late = sync.org.control("POST", "/late-commit", json={
        "id": leads[2]["Id"], "values": {"Title": "Committed late"}, "seconds_ago": overlap + 90})
    sync.org.control("PATCH", "/settings", json={"latest_date_lag_seconds": 0})
    sync.advance(60)
    sync.cycle("closed")
    row = sync.person(leads[2]["Id"])
    assert row["title"] == "Committed late"
    assert aware(row["sfdc_lead_system_modstamp"]) == parse_sf_datetime(
        late["SystemModstamp"] + "Z")

def _calls(sync: Sync) -> int:
    """The emulator's count of API calls so far (logins excluded)."""
    return sync.org.control("GET", "/counters")["total"]


def _read(sync: Sync, run_key: str) -> int:
    """Records the run's change queries read (staged)."""
    return sync.mdb.scalar("SELECT COALESCE(SUM(rows), 0) FROM sfsync_extract "
                           "WHERE run_key = :k", k=run_key)


@pytest.mark.parametrize("org", ["standard:20000"], indirect=True)  # 1,000 distinct changes
def test_each_change_is_read_once_and_idle_cycles_in_the_overlap_cost_two_calls(sync):
    """After a cycle that loaded 1,000 changes, the next cycles cost 2 API calls (describes and
    probe share them) while nothing changes, also while those changes are inside the overlap
    window; what does change there is read alone: a record changed again, a late commit."""
    overlap = timedelta(seconds=load_config().overlap_seconds)
    sync.cycle("copy")
    sync.advance(600)
    sync.cycle("settle")
    sync.advance(600)
    made = sync.org.control("POST", "/simulate", json={
        "updates": 1030, "creates": 20, "deletes": 10, "rng_seed": 11})
    changed = {i for kind in ("created", "updated", "deleted") for ids in made[kind].values()
               for i in ids}
    assert len(changed) >= 1000
    sync.advance(120)  # Salesforce's coverage (whole minutes) passes the changes
    before = _calls(sync)
    sync.cycle("changes")
    print(f"cycle with {len(changed)} changes: {_calls(sync) - before} API calls")
    assert _read(sync, "changes") >= 1000  # (a deleted campaign member is gone from queryAll)
    stamps = [parse_sf_datetime(r["SystemModstamp"]) for r in sync.truth("Lead")["Lead"]
              if r["Id"] in changed]

    for label in ("idle-1", "idle-2"):
        sync.advance(60)
        before = _calls(sync)
        summary = sync.cycle(label)
        # the changes are still inside the window the probe asks about
        assert aware(sync.watermark("Lead")) - overlap <= min(stamps) + timedelta(minutes=1)
        assert _calls(sync) - before == 2, label
        assert _read(sync, label) == 0, label
        assert all(c == ZERO for c in summary["counts"].values()), label

    # A record the 1,000-change cycle read changes again: read alone (describe, probe, query).
    lead = next(r for r in sync.truth("Lead")["Lead"] if r["Id"] in changed
                and not r["IsConverted"])
    sync.update("Lead", lead["Id"], Title="Changed again")
    sync.advance(60)
    before = _calls(sync)
    summary = sync.cycle("again")
    assert _calls(sync) - before == 3
    assert _read(sync, "again") == 1
    assert counts(summary, "Lead") == {**ZERO, "updated": 1}
    assert sync.person(lead["Id"])["title"] == "Changed again"

    # A transaction commits late, stamped behind the cursor, on a record no load read lately:
    # the overlap window names it, and only it is read.
    other = next(r for r in sync.truth("Lead")["Lead"] if r["Id"] not in changed
                 and not r["IsConverted"])
    late = sync.org.control("POST", "/late-commit", json={
        "id": other["Id"], "values": {"Title": "Committed late"}, "seconds_ago": 120})
    late_stamp = parse_sf_datetime(late["SystemModstamp"] + "Z")
    assert late_stamp < aware(sync.watermark("Lead"))
    before = _calls(sync)
    summary = sync.cycle("late")
    assert _calls(sync) - before == 3
    assert _read(sync, "late") == 1
    assert counts(summary, "Lead") == {**ZERO, "updated": 1}
    row = sync.person(other["Id"])
    assert row["title"] == "Committed late"
    assert aware(row["sfdc_lead_system_modstamp"]) == late_stamp

    sync.advance(420)
    before = _calls(sync)
    summary = sync.cycle("idle-3")
    assert _calls(sync) - before == 2
    assert all(c == ZERO for c in summary["counts"].values())


def test_a_version_a_sync_filter_left_out_is_not_read_again(sync):
    sync.cycle("copy")
    sync.advance(600)
    sync.cycle("settle")
    sync.advance(600)
    lead = next(r for r in sync.truth("Lead")["Lead"]
                if r.get("Do_Not_Sync_Marketing__c") and not r["IsConverted"])
    sync.update("Lead", lead["Id"], Title="Kept out")
    sync.advance(60)
    assert counts(sync.cycle("filtered"), "Lead") == {**ZERO, "skipped": 1}
    sync.advance(60)  # still inside the overlap window
    before = _calls(sync)
    summary = sync.cycle("after")
    assert _calls(sync) - before == 2
    assert counts(summary, "Lead") == ZERO


TIES = 2300  # more than one 2,000-record page, all in one second


def test_timestamp_ties_across_page_boundaries(sync):
    sync.cycle("copy")
    sync.advance(600)
    sync.cycle("settle")  # the copy's newest rows leave the overlap window
    sync.advance(600)
    sync.org.control("POST", "/clock", json={"frozen": True})
    ids = sync.create("Lead", *({"LastName": f"Tie {i:04d}", "Company": "Tie Corp",
                                 "Email": f"tie{i}@ties.example"} for i in range(TIES)))
    stamps = {r["SystemModstamp"] for r in sync.truth("Lead")["Lead"] if r["Id"] in set(ids)}
    assert len(stamps) == 1  # one second for all of them: 2,000 per page, so ties span pages
    # Salesforce covers (latestDateCovered) whole minutes that are over: let this one end.
    sync.org.control("POST", "/clock", json={"frozen": False, "advance_seconds": 120})
    summary = sync.cycle("ties")
    assert counts(summary, "Lead") == {**ZERO, "new": TIES}
    loaded = sync.mdb.scalar("SELECT COUNT(*) FROM person WHERE company = 'Tie Corp'")
    assert loaded == TIES
    assert sync.mdb.scalar("SELECT rows FROM sfsync_extract WHERE run_key = 'ties' AND "
                           "sf_object = 'Lead'") == TIES
    again = sync.cycle("ties-again")  # the same second: all re-read, none changed
    assert counts(again, "Lead") == ZERO


# --- 5, 6: deletes, undeletes, purges ---------------------------------------------------------

@on_demo_and_standard_orgs
def test_delete_flags_and_undelete_clears(sync):
    sync.cycle("copy")
    truth = sync.truth("Lead", "Opportunity")
    lead = next(r for r in truth["Lead"] if not r["IsConverted"]
                and not r.get("Do_Not_Sync_Marketing__c"))
    opp = truth["Opportunity"][0]
    person_id = sync.person(lead["Id"])["id"]
    sync.advance(60)
    sync.delete("Lead", lead["Id"])
    sync.delete("Opportunity", opp["Id"])
    sync.advance(60)
    summary = sync.cycle("delete")
    assert counts(summary, "Lead") == {**ZERO, "deleted": 1}
    assert counts(summary, "Opportunity") == {**ZERO, "deleted": 1}
    row = sync.person(lead["Id"])
    assert row["id"] == person_id and row["sfdc_is_deleted"] in (True, 1)
    assert sync.mdb.one("opportunity", "sfdc_id = :i", i=opp["Id"])["sfdc_is_deleted"] in (True, 1)
    sync.advance(60)
    sync.org.control("POST", "/undelete", json={"ids": [lead["Id"], opp["Id"]]})
    sync.advance(60)
    summary = sync.cycle("undelete")
    assert counts(summary, "Lead") == {**ZERO, "updated": 1}
    assert counts(summary, "Opportunity") == {**ZERO, "updated": 1}
    row = sync.person(lead["Id"])
    assert row["id"] == person_id and row["sfdc_is_deleted"] in (False, 0)
    assert sync.mdb.one("opportunity", "sfdc_id = :i", i=opp["Id"])["sfdc_is_deleted"] in (
        False, 0)


def test_purged_and_hard_deleted_records_are_flagged(sync):
    sync.cycle("copy")
    truth = sync.truth("Lead", "CampaignMember")
    lead = next(r for r in truth["Lead"] if not r["IsConverted"]
                and not r.get("Do_Not_Sync_Marketing__c"))
    member = truth["CampaignMember"][0]
    sync.advance(60)
    sync.delete("Lead", lead["Id"])
    sync.org.control("POST", "/purge", json={"ids": [lead["Id"]]})
    sync.delete("CampaignMember", member["Id"], hard=True)
    gone = sync.truth("Lead", "CampaignMember", include_deleted=True)
    assert lead["Id"] not in {r["Id"] for r in gone["Lead"]}  # queryAll no longer has them
    assert member["Id"] not in {r["Id"] for r in gone["CampaignMember"]}
    sync.advance(60)
    summary = sync.cycle("purged")
    assert counts(summary, "Lead") == {**ZERO, "deleted": 1}
    assert counts(summary, "CampaignMember") == {**ZERO, "deleted": 1}
    assert sync.person(lead["Id"])["sfdc_is_deleted"] in (True, 1)
    assert sync.mdb.one("campaign_member", "sfdc_id = :i", i=member["Id"])[
        "sfdc_is_deleted"] in (True, 1)
    sync.advance(600)
    assert counts(sync.cycle("after"), "Lead") == ZERO


# --- 7, 8: merges and lead conversion ---------------------------------------------------------

def _campaign(sync: Sync) -> str:
    return sync.truth("Campaign")["Campaign"][0]["Id"]


@on_demo_and_standard_orgs
def test_merge_folds_the_losing_person_into_the_survivor(sync):
    master, loser = sync.create(
        "Lead", {"LastName": "Master", "Company": "Merge Co", "Email": "m1@merge.example"},
        {"LastName": "Loser", "Company": "Merge Co", "Email": "m2@merge.example",
         "Title": "CTO"})
    member = sync.create("CampaignMember", {"CampaignId": _campaign(sync), "LeadId": loser})[0]
    task = sync.create("Task", {"Subject": "Call", "WhoId": loser, "Status": "Not Started",
                                "Priority": "Normal"})[0]
    sync.advance(60)
    sync.cycle("copy")
    survivor_id, loser_person = sync.person(master)["id"], sync.person(loser)["id"]
    assert sync.mdb.one("campaign_member", "sfdc_id = :i", i=member)["person_id"] == loser_person
    # A value only the marketing side has, on the loser: it fills the survivor's blank.
    sync.mdb.execute("UPDATE person SET description = 'Merged note' WHERE id = :i",
                     i=loser_person)
    sync.advance(60)
    sync.org.control("POST", "/merge", json={"sobject": "Lead", "master_id": master,
                                             "loser_ids": [loser]})
    sync.advance(60)
    summary = sync.cycle("merge")
    assert counts(summary, "Lead") == {**ZERO, "updated": 1, "deleted": 1}
    assert counts(summary, "CampaignMember") == {**ZERO, "updated": 1}
    assert counts(summary, "Task") == {**ZERO, "updated": 1}
    survivor = sync.person(master)
    assert survivor["id"] == survivor_id
    assert (survivor["title"], survivor["description"], survivor["sfdc_is_deleted"]) == (
        "CTO", "Merged note", False if sync.mdb.kind == "postgres" else 0)
    assert sync.mdb.rows("person", "id = :i OR sfdc_lead_id = :l", i=loser_person, l=loser) == []
    assert sync.mdb.one("campaign_member", "sfdc_id = :i", i=member)["person_id"] == survivor_id
    assert sync.mdb.one("activity", "sfdc_id = :i", i=task)["person_id"] == survivor_id
    merge = sync.mdb.one("sfsync_merge", "sfdc_id = :l", l=loser)
    assert (merge["loser_person_id"], merge["survivor_person_id"]) == (loser_person, survivor_id)
    assert merge["reason"] == "Lead merge in Salesforce"
    # The blanks the loser filled went to Salesforce too (both sides hold the merged values).
    assert summary["push"]["people"]["counts"]["Lead"]["updated"] == 1
    assert sf_record(sync, "Lead", master)["Description"] == "Merged note"
    # The loser stays in queryAll (deleted, MasterRecordId): re-reading it changes nothing, and
    # the echo of the push is not an update.
    again = sync.cycle("merge-again")
    assert counts(again, "Lead") == ZERO
    assert len(sync.mdb.rows("sfsync_merge")) == 1
    assert sync.mdb.rows("person", "sfdc_lead_id = :l", l=loser) == []


@on_demo_and_standard_orgs
def test_lead_conversion_keeps_one_person(sync):
    lead = sync.create("Lead", {"LastName": "Convert", "Company": "Conv Co",
                                "Email": "conv@conv.example", "Rating": "Hot"})[0]
    sync.advance(60)
    sync.cycle("copy")
    person_id = sync.person(lead)["id"]
    live = "SELECT COUNT(*) FROM person WHERE NOT sfdc_is_deleted"
    people = sync.mdb.scalar(live)
    sync.advance(60)
    contact = sync.org.control("POST", "/convert-lead", json={"lead_id": lead})["contactId"]
    sync.advance(60)
    summary = sync.cycle("convert")
    row = sync.person(lead)
    assert row == sync.person(contact)
    assert (row["id"], row["sfdc_type"], row["sfdc_contact_id"], row["sfdc_id"]) == (
        person_id, "Contact", contact, contact)
    assert row["lead_rating"] == "Hot" and row["email"] == "conv@conv.example"
    assert sync.mdb.scalar(live) == people
    assert counts(summary, "Lead") == {**ZERO, "updated": 1}
    assert counts(summary, "Contact")["new"] + counts(summary, "Contact")["updated"] == 1
    again = sync.cycle("convert-again")
    assert counts(again, "Lead") == counts(again, "Contact") == ZERO
    assert sync.person(contact)["id"] == person_id


def test_lead_converted_into_a_contact_loaded_before(sync):
    lead = sync.create("Lead", {"LastName": "Twin", "Company": "Twin Co",
                                "Email": "lead@twin.example", "Rating": "Warm"})[0]
    contact = sync.create("Contact", {"LastName": "Twin", "Email": "contact@twin.example",
                                      "Title": "Buyer"})[0]
    sync.advance(60)
    sync.cycle("copy")
    lead_person, contact_person = sync.person(lead)["id"], sync.person(contact)["id"]
    assert lead_person != contact_person
    people = sync.mdb.scalar("SELECT COUNT(*) FROM person")
    sync.advance(60)
    sync.org.control("POST", "/convert-lead", json={"lead_id": lead, "contact_id": contact})
    sync.advance(60)
    summary = sync.cycle("convert")
    row = sync.person(lead)
    assert row == sync.person(contact)
    assert (row["sfdc_type"], row["sfdc_id"], row["email"], row["title"], row["lead_rating"]) == (
        "Contact", contact, "contact@twin.example", "Buyer", "Warm")
    assert sync.mdb.scalar("SELECT COUNT(*) FROM person") == people - 1
    merge = sync.mdb.one("sfsync_merge", "sfdc_id = :c", c=contact)
    assert {merge["loser_person_id"], merge["survivor_person_id"]} == {lead_person,
                                                                       contact_person}
    assert row["id"] == merge["survivor_person_id"]
    assert counts(summary, "Lead") == {**ZERO, "updated": 1}
    assert counts(summary, "Contact") == {**ZERO, "updated": 1}


# --- 9, 10: schema drift and field filters ----------------------------------------------------

def _plain_lead(sync: Sync) -> dict:
    return next(r for r in sync.truth("Lead")["Lead"] if not r["IsConverted"]
                and not r.get("Do_Not_Sync_Marketing__c") and r["NumberOfEmployees"] is not None
                and r["Title"] is not None and r["Website"] is not None)


@on_demo_and_standard_orgs
def test_schema_drift(sync):
    sync.cycle("copy")
    lead = _plain_lead(sync)
    other = next(r for r in sync.truth("Lead")["Lead"] if r["Id"] != lead["Id"]
                 and not r["IsConverted"] and not r.get("Do_Not_Sync_Marketing__c")
                 and r["NumberOfEmployees"] is not None)
    person_before = sync.person(lead["Id"])
    # A new field appears (and gets a value), a field is hidden from the sync user, a number
    # field becomes text.
    sync.org.control("POST", "/schema/Lead/fields", json={"name": "Favorite_Color__c",
                                                          "type": "string", "label": "Color"})
    sync.org.control("PATCH", "/schema/Lead/fields/Website", json={"fls": "hidden"})
    sync.org.control("PATCH", "/schema/Lead/fields/NumberOfEmployees",
                     json={"type": "string", "length": 40})
    sync.advance(60)
    sync.update("Lead", lead["Id"], Favorite_Color__c="teal", Website="https://hidden.example",
                NumberOfEmployees="about 200")
    sync.advance(60)
    summary = sync.cycle("drift")
    assert counts(summary, "Lead") == {**ZERO, "updated": 1}
    assert "favorite_color" in sync.mdb.columns("person")
    row = sync.person(lead["Id"])
    assert row["favorite_color"] == "teal"
    # Website is Lead-only: its column and data stay, the hidden new value does not arrive.
    assert "website" in sync.mdb.columns("person")
    assert row["website"] == person_before["website"] == lead["Website"]
    assert str(row["number_of_employees"]) == "about 200"
    kept = sync.person(other["Id"])["number_of_employees"]
    assert int(float(kept)) == other["NumberOfEmployees"]  # existing values survive the change
    fields = {r["sf_field"]: r for r in sync.mdb.rows("sfsync_field", "sf_object = 'Lead'",
                                                      order="sf_field")}
    assert bool(fields["Favorite_Color__c"]["synced"])
    assert fields["Favorite_Color__c"]["column_name"] == "favorite_color"
    assert not fields["Website"]["synced"] and "no longer visible" in fields["Website"]["reason"]
    assert fields["NumberOfEmployees"]["sf_type"] == "string"
    sync.advance(600)
    assert all(c["new"] == c["updated"] == 0 for c in sync.cycle("after")["counts"].values())


def test_field_filters(sync):
    sync.overrides = {"hidden_fields": {"Lead": ["Website"]},
                      "block_updates": {"person": ["title"]}}
    sync.cycle("copy")
    assert "website" not in sync.mdb.columns("person")
    assert "account_rating" not in sync.mdb.columns("person")  # formula: excluded by default
    website = sync.mdb.one("sfsync_field", "sf_object = 'Lead' AND sf_field = 'Website'",
                           order="sf_field")
    assert (bool(website["synced"]), website["reason"]) == (
        False, "hidden in config (hidden_fields)")
    rating = sync.mdb.one("sfsync_field", "sf_object = 'Contact' AND "
                          "sf_field = 'Account_Rating__c'", order="sf_field")
    assert not rating["synced"] and rating["reason"].startswith("formula field")
    # Block updates: the marketing side's title stays, other fields keep syncing.
    lead = _plain_lead(sync)
    sync.mdb.execute("UPDATE person SET title = 'Marketing Title' WHERE sfdc_lead_id = :i",
                     i=lead["Id"])
    sync.advance(60)
    sync.update("Lead", lead["Id"], Title="Sales Title", City="Springfield")
    sync.advance(60)
    summary = sync.cycle("blocked")
    assert counts(summary, "Lead") == {**ZERO, "updated": 1}
    row = sync.person(lead["Id"])
    assert (row["title"], row["city"]) == ("Marketing Title", "Springfield")
    # Opting a formula field in makes it a column, filled from the next copy of the object.
    sync.overrides = {"formula_fields": {"include": ["Contact.Account_Rating__c"]}}
    sync.advance(600)
    sync.cycle("formula")
    assert "account_rating" in sync.mdb.columns("person")
    field = sync.mdb.one("sfsync_field", "sf_object = 'Contact' AND "
                         "sf_field = 'Account_Rating__c'", order="sf_field")
    assert bool(field["synced"]) and field["column_name"] == "account_rating"


def test_formula_field_opted_in_from_the_start(sync):
    sync.overrides = {"formula_fields": {"include": ["Contact.Account_Rating__c"]}}
    sync.cycle("copy")
    truth = sync.truth("Contact")["Contact"]
    rated = [c for c in truth if c["Account_Rating__c"] and not c["Do_Not_Sync_Marketing__c"]]
    assert rated
    for contact in rated:
        assert sync.person(contact["Id"])["account_rating"] == contact["Account_Rating__c"]


# --- 11: dedupe ------------------------------------------------------------------------------

@on_demo_and_standard_orgs
def test_dedupe_finds_same_email_in_any_case(sync):
    lead = sync.create("Lead", {"LastName": "Dup", "Company": "Dup Co",
                                "Email": "Jane.Doe@Dedupe.Example"})[0]
    contact = sync.create("Contact", {"LastName": "Dup", "Email": "jane.doe@dedupe.example"})[0]
    sync.advance(60)
    sync.cycle("copy")
    lead_person, contact_person = sync.person(lead)["id"], sync.person(contact)["id"]
    found = sync.mdb.rows("sfsync_duplicate", "person_id IN (:a, :b) OR "
                          "duplicate_of_person_id IN (:a, :b)", a=lead_person, b=contact_person)
    assert len(found) == 1
    dup = found[0]
    assert {dup["person_id"], dup["duplicate_of_person_id"]} == {lead_person, contact_person}
    assert dup["duplicate_of_person_id"] == min(lead_person, contact_person)
    assert (dup["rule"], dup["reason"]) == ("same_email", "same email: jane.doe@dedupe.example")
    assert sync.mdb.rows("sfsync_merge") == []  # nothing merged
    assert sync.person(lead)["id"] != sync.person(contact)["id"]
    sync.cycle("again")
    assert len(sync.mdb.rows("sfsync_duplicate", "person_id = :p", p=dup["person_id"])) == 1


# --- 12, 13: retries call Salesforce no more; an idle cycle is nearly free -------------------

def test_retried_filter_load_and_extract_make_no_salesforce_calls(sync):
    sync.cycle("copy")
    sync.advance(600)
    lead = _plain_lead(sync)
    sync.update("Lead", lead["Id"], City="Retryville")
    sync.advance(60)
    run, config = "retry", sync.config()
    plan = P.prepare(run, config=config, engine=sync.mdb.engine)
    ctx = sync.context()
    extracted = {o.sf_object: P.extract_object(run, o.sf_object, ctx)
                 for o in ctx.catalog.ordered()}
    assert extracted["Lead"]["rows"] >= 1
    calls, used = sync.org.counters(), sync.usage()
    # Every later step, retried, each attempt in a fresh context (a new worker process).
    assert P.prepare(run, config=config, engine=sync.mdb.engine)["api_calls"] == 0
    first, retry = sync.context(), sync.context()
    for name in plan["objects"]:
        again = P.extract_object(run, name, retry)
        assert (again["rows"], again["api_calls"]) == (extracted[name]["rows"], 0)
        filtered = P.filter_object(run, name, first)
        assert P.filter_object(run, name, retry) == filtered
    first, retry = sync.context(), sync.context()
    loads = {name: P.load_object(run, name, first) for name in plan["objects"]}
    snapshot = sync.mdb.snapshot()
    for name in plan["objects"]:
        assert P.load_object(run, name, retry) == loads[name]
        assert P.extract_object(run, name, retry)["api_calls"] == 0
    assert loads["Lead"] == {"object": "Lead", **ZERO, "updated": 1}
    P.dedupe_people(run, sync.context())
    summary = P.finish(run, sync.context())
    P.dedupe_people(run, sync.context())
    assert P.finish(run, sync.context())["counts"] == summary["counts"]
    assert sync.mdb.snapshot() == snapshot
    assert sync.person(lead["Id"])["city"] == "Retryville"
    assert sync.org.counters() == calls and sync.usage() == used
    assert sync.mdb.scalar("SELECT COUNT(*) FROM sfsync_stage WHERE run_key = :r", r=run) == 0


def test_a_load_that_failed_midway_is_retried_from_staging(sync, monkeypatch):
    sync.cycle("copy")
    sync.advance(600)
    ids = sync.create("Lead", *({"LastName": f"Batch {i}", "Company": "Retry Co"}
                                for i in range(30)))
    sync.advance(60)
    run = "crash"
    plan = P.prepare(run, config=sync.config(), engine=sync.mdb.engine)
    for name in plan["objects"]:
        P.extract_object(run, name, sync.context())
        P.filter_object(run, name, sync.context())
    used = sync.usage()
    from include.sfsync.pull import load as L

    real_load = L.Loader.load

    def crash(self, records):
        real_load(self, records)
        raise RuntimeError("worker lost")

    monkeypatch.setattr(L.Loader, "load", crash)
    with pytest.raises(RuntimeError, match="worker lost"):
        P.load_object(run, "Lead", sync.context())
    monkeypatch.setattr(L.Loader, "load", real_load)
    # Nothing of the failed attempt committed: no rows, the cursor did not move.
    assert sync.mdb.scalar("SELECT COUNT(*) FROM person WHERE company = 'Retry Co'") == 0
    assert P.load_object(run, "Lead", sync.context()) == {"object": "Lead", **ZERO,
                                                          "new": len(ids)}
    assert sync.mdb.scalar("SELECT COUNT(*) FROM person WHERE company = 'Retry Co'") == len(ids)
    assert sync.usage() == used


@on_demo_and_standard_orgs
def test_an_idle_cycle_costs_at_most_two_api_calls(sync):
    sync.cycle("copy")
    sync.advance(600)
    sync.cycle("settle")
    sync.advance(600)
    before, calls_before = sync.usage(), sync.org.counters()
    summary = sync.cycle("idle")
    assert sync.usage() - before <= 2
    assert summary["api_calls"] == sync.usage() - before
    assert all(c == ZERO for c in summary["counts"].values())
    calls = {k: v - calls_before.get(k, 0) for k, v in sync.org.counters().items()}
    assert {k for k, v in calls.items() if v and not k.startswith("login")} == {"composite"}
    modes = {r["mode"] for r in sync.mdb.rows("sfsync_extract", "run_key = 'idle'",
                                              order="sf_object")}
    assert modes == {"idle"}
    # One change costs one more query, in the same composite calls.
    sync.advance(60)
    sync.update("Lead", _plain_lead(sync)["Id"], City="Busytown")
    sync.advance(60)
    before = sync.usage()
    busy = sync.cycle("busy")
    assert counts(busy, "Lead") == {**ZERO, "updated": 1}
    assert sync.usage() - before <= 3


def test_a_window_copy_once_the_whole_history_is_stored_costs_nothing(sync):
    """A monthly scheduled run of the initial sync, after the object's history is copied: no
    Salesforce call for it, nothing written, the window recorded as done."""
    sync.cycle("copy")  # a full copy: every cursor starts
    config = sync.config()
    P.prepare_copy("monthly", ["Lead", "Contact"], config=config, engine=sync.mdb.engine)
    before, snapshot = sync.usage(), sync.mdb.snapshot()
    ctx = sync.context()
    end = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = (end - timedelta(days=1)).replace(day=1)
    assert P.copy_object("monthly", "Lead", start, end, ctx) == ZERO
    assert sync.usage() == before and sync.mdb.snapshot() == snapshot
    window = sync.mdb.rows("sfsync_copy_window", "sf_object = 'Lead'", order="window_start")[0]
    assert (window["status"], aware(window["window_start"])) == ("done", start)
    # Without a started cursor (history not complete) the same window really copies.
    sync.mdb.execute("UPDATE sfsync_watermark SET cursor_modstamp = NULL "
                     "WHERE sf_object = 'Contact'")
    P.copy_object("monthly", "Contact", start, end, ctx)
    assert sync.usage() > before


# --- 14: org lock ----------------------------------------------------------------------------

def test_org_lock_refuses_another_org_until_repointed(sync):
    sync.cycle("copy")
    old = sync.org.control("GET", "/")
    old_org = old.get("org_id") or sync.mdb.scalar("SELECT org_id FROM sfsync_org_lock")
    assert sync.mdb.scalar("SELECT org_id FROM sfsync_org_lock") == old_org
    new_org = "00D5e0000000OTHEA2"
    sync.org.control("PATCH", "/settings", json={"org_id": new_org})
    with pytest.raises(OrgMismatchError) as failed:
        sync.cycle("other")
    message = str(failed.value)
    del failed  # its frames hold the failed run's Salesforce session open
    assert old_org in message and new_org[:15] in message
    assert "repoint" in message.replace("-", "")
    assert sync.mdb.scalar("SELECT org_id FROM sfsync_org_lock") == old_org
    repoint_org(sync.mdb.engine, new_org)
    summary = sync.cycle("repointed")
    assert sync.mdb.scalar("SELECT org_id FROM sfsync_org_lock") == new_org
    assert summary["counts"]["Lead"]["failed"] == 0
    assert sync.mdb.scalar("SELECT COUNT(*) FROM sfsync_watermark WHERE full_copy_done") == len(
        summary["counts"])



@on_demo_and_standard_orgs
def test_a_filter_field_deleted_in_salesforce_fails_closed(sync):
    """A sync filter names a field (the demo's Lead.Do_Not_Sync_Marketing__c, or standard
    Lead.DoNotCall); the field is deleted in Salesforce between two cycles: the next cycle
    fails at once, naming it, and copies nothing: a lead the filter kept out stays out."""
    name = "Do_Not_Sync_Marketing__c" if sync.org.profile == "demo" else "DoNotCall"
    if name == "DoNotCall":
        sync.overrides["sync_filters"] = [{"object": "Lead", "field": name, "skip_when": True}]
    sync.cycle("before")
    leads = [r for r in sync.truth("Lead")["Lead"] if not r["IsConverted"]]
    kept_out = next(r for r in leads if r[name])
    other = next(r for r in leads if not r[name])
    assert not sync.mdb.rows("person", "sfdc_lead_id = :i", i=kept_out["Id"])
    sync.org.control("DELETE", f"/schema/Lead/fields/{name}")
    for lead in (kept_out, other):
        sync.update("Lead", lead["Id"], Title="After the field went")
    sync.advance(60)
    with pytest.raises(ConfigError) as failed:
        sync.cycle("after")
    message = str(failed.value)
    del failed  # its frames hold the failed run's Salesforce session open
    assert message.startswith(f"sync_filters.0.field: {name}: Lead has no field {name} the sync "
                              "user can see"), message
    assert not sync.mdb.rows("person", "sfdc_lead_id = :i", i=kept_out["Id"])
    assert sync.person(other["Id"])["title"] != "After the field went"

# --- 16: configuration errors name the key ---------------------------------------------------

def test_bad_configuration_names_the_key(sync):
    with pytest.raises(ConfigError, match=r"overlap_minutes: unknown key"):
        load_config(overrides={"overlap_minutes": 5})
    with pytest.raises(ConfigError, match=r"mappings\.LeadTitle|'LeadTitle'"):
        load_config(overrides={"mappings": {"LeadTitle": "title"}})
    with pytest.raises(ConfigError, match=r"sync_filters\.0\.skip_if: unknown key"):
        load_config(overrides={"sync_filters": [{"object": "Lead", "field": "X",
                                                 "skip_if": True}]})
    # A custom object this org lacks is optional: a warning naming it, and the sync goes on
    # without it (every other name this org lacks fails the run: test_config_strict.py).
    overrides = {"custom_objects": ["Webinar_Attendance__c", "Nope__c"]}
    summary = sync.cycle("lacking", **overrides)
    assert summary["counts"]["Lead"]["failed"] == 0
    warnings = sync.context(**overrides).catalog.warnings
    assert [w for w in warnings if "custom_objects: Nope__c" in w], warnings
    assert "Nope__c" not in {r["sf_object"] for r in sync.mdb.rows("sfsync_watermark",
                                                                      order="sf_object")}

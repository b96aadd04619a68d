"""Maintenance a cycle does when due: field re-copy after a mapping change, formula refresh,
Id-set reconciliation. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from include.salesforce_emulator.demo import demo_sync_settings
from include.sfsync import pipeline
from include.sfsync.config import load_config

pytestmark = pytest.mark.integration


def _cycle(org, key: str, **overrides) -> dict:
    org.control("POST", "/clock", json={"advance_seconds": 120})
    config = load_config(overrides={**demo_sync_settings(), "bulk_poll_seconds": 0, **overrides})
    return pipeline.run_cycle(key, config=config)


def test_changing_a_mapping_recopies_just_that_field(org, marketing_db):
    _cycle(org, "c1")
    titled = {r["Id"]: r["Title"] for r in org.control("GET", "/export", params={
        "objects": "Lead"})["Lead"] if r["Title"] and not r["IsConverted"]
        and not r["Do_Not_Sync_Marketing__c"]}
    assert titled
    result = _cycle(org, "c2", mappings={"Lead.Title": "job_title"})
    copied = {r["sfdc_lead_id"]: r["job_title"] for r in marketing_db.rows(
        "person", "sfdc_type = 'Lead' AND job_title IS NOT NULL")}
    assert copied == titled
    assert sum(c["updated"] + c["new"] for c in result["counts"].values()) == 0  # nothing else
    field, = marketing_db.rows("sfsync_field", "sf_object = 'Lead' AND sf_field = 'Title'",
                               order="sf_field")
    assert (field["column_name"], field["synced"], field["needs_backfill"]) == (
        "job_title", True, False)
    queries = org.counters().get("query", 0)
    _cycle(org, "c3", mappings={"Lead.Title": "job_title"})
    assert org.counters().get("query", 0) == queries  # the re-copy ran once, not every cycle


def test_opted_in_formula_is_refreshed_when_due(org, marketing_db):
    formula = {"formula_fields": {"include": ["Contact.Account_Rating__c"],
                                  "refresh_minutes": 60}}
    sf = org.salesforce()
    account = sf.Account.create({"Name": "Formula Refresh Co", "Rating": "Hot"})["id"]
    contact = sf.Contact.create({"LastName": "Refreshed", "AccountId": account})["id"]
    _cycle(org, "c1", **formula)
    assert marketing_db.one("person", "sfdc_contact_id = :c", c=contact)["account_rating"] == "Hot"
    sf.Account.update(account, {"Rating": "Cold"})  # the contact's SystemModstamp stays
    _cycle(org, "c2", **formula)
    assert marketing_db.one("person", "sfdc_contact_id = :c", c=contact)["account_rating"] == "Hot"
    marketing_db.execute("UPDATE sfsync_watermark SET formula_refreshed_at = NULL "
                         "WHERE sf_object = 'Contact'")  # as if the refresh interval passed
    _cycle(org, "c3", **formula)
    assert marketing_db.one("person", "sfdc_contact_id = :c", c=contact)["account_rating"] == \
        "Cold"


def test_reconciliation_flags_records_purged_beyond_the_deleted_window(org, marketing_db):
    sf = org.salesforce()
    account = sf.Account.create({"Name": "Vanishing Co"})["id"]
    _cycle(org, "c1")
    assert marketing_db.one("company", "sfdc_id = :a", a=account)["sfdc_is_deleted"] in (False, 0)
    org.control("DELETE", f"/records/Account/{account}", params={"hard": "true"})
    org.control("PATCH", "/settings", json={"deleted_log_days": 0})
    org.control("POST", "/clock", json={"advance_seconds": 3600})
    org.control("POST", "/purge", json={})  # the deleted endpoint forgets it
    _cycle(org, "c2")
    assert marketing_db.one("company", "sfdc_id = :a", a=account)["sfdc_is_deleted"] in (False, 0)
    marketing_db.execute("UPDATE sfsync_watermark SET reconciled_at = :t",
                         t="2000-01-01 00:00:00" if marketing_db.kind == "sqlite"
                         else "2000-01-01T00:00:00+00:00")
    _cycle(org, "c3")
    assert marketing_db.one("company", "sfdc_id = :a", a=account)["sfdc_is_deleted"] in (True, 1)


def test_dedupe_check_runs_only_when_people_changed(org, marketing_db):
    _cycle(org, "c1")
    email = marketing_db.rows("person", "email IS NOT NULL AND sfdc_type = 'Lead'")[0]["email"]
    marketing_db.execute("INSERT INTO person (email, sfdc_is_deleted) VALUES (:e, :f)",
                         e=email.upper(), f=False)  # a marketing-side twin, no Salesforce change
    dupes = "SELECT COUNT(*) FROM sfsync_duplicate WHERE reason LIKE :r"
    before = marketing_db.scalar(dupes, r=f"%{email.lower()}%")
    _cycle(org, "c2")
    _cycle(org, "c3")  # idle for people: the check is skipped, nothing new recorded
    assert marketing_db.scalar(dupes, r=f"%{email.lower()}%") == before
    lead = marketing_db.rows("person", "sfdc_type = 'Lead'")[-1]["sfdc_lead_id"]
    org.salesforce().Lead.update(lead, {"Title": "Changed"})
    _cycle(org, "c4")
    assert marketing_db.scalar(dupes, r=f"%{email.lower()}%") == before + 1


def test_reconciliation_of_activities_keeps_live_tasks_events_and_archived_ones(org,
                                                                               marketing_db):
    """Tasks and events share the activity table; archived ones only come through queryAll.
    Only the purged task is flagged."""
    _cycle(org, "c1")
    live = "SELECT count(*) FROM activity WHERE sfdc_is_deleted = :f AND sfdc_object = :o"
    tasks = marketing_db.scalar(live, f=False, o="Task")
    events = marketing_db.scalar(live, f=False, o="Event")
    exported = org.control("GET", "/export", params={"objects": "Task,Event"})
    archived = [r["Id"] for o in ("Task", "Event") for r in exported[o] if r.get("IsArchived")]
    assert tasks and events and archived  # the demo org has both, and archived ones
    gone = marketing_db.rows("activity", "sfdc_object = 'Task' AND sfdc_is_deleted = :f",
                             f=False)[0]["sfdc_id"]
    org.control("DELETE", f"/records/Task/{gone}", params={"hard": "true"})
    org.control("PATCH", "/settings", json={"deleted_log_days": 0})
    org.control("POST", "/clock", json={"advance_seconds": 3600})
    org.control("POST", "/purge", json={})  # the deleted endpoint forgets it
    marketing_db.execute("UPDATE sfsync_watermark SET reconciled_at = :t",
                         t="2000-01-01 00:00:00" if marketing_db.kind == "sqlite"
                         else "2000-01-01T00:00:00+00:00")
    _cycle(org, "c2")
    assert marketing_db.scalar(live, f=False, o="Task") == tasks - 1
    assert marketing_db.scalar(live, f=False, o="Event") == events
    flagged = marketing_db.rows("activity", "sfdc_is_deleted = :t", t=True)
    assert [r["sfdc_id"] for r in flagged] == [gone]

"""The push through Bulk API 2.0 ingest (above ``push.bulk_threshold`` records of one object and
operation) against the emulator, on SQLite and PostgreSQL: values and nulls arrive, per-record
errors land in ``sfsync_error``, transient failures are retried through collections, and
member removals go through a Bulk delete job."""

from __future__ import annotations

import pytest

from tests.sync.test_pull import Sync

pytestmark = pytest.mark.integration



@pytest.fixture
def sync(org, marketing_db):
    s = Sync(org, marketing_db)
    s.cycle("r0")  # the initial copy
    s.overrides = {"push": {"bulk_threshold": 5}}
    return s


def calls(sync: Sync) -> dict[str, int]:
    return sync.org.control("GET", "/counters")["calls"]


def leads(sync: Sync, n: int) -> list[dict]:
    """``n`` synced, unconverted, live leads' person rows that have a title."""
    rows = sync.mdb.rows("person", "sfdc_type = 'Lead' AND sfdc_contact_id IS NULL AND "
                         "sfdc_is_deleted = :f AND title IS NOT NULL", f=False)
    assert len(rows) >= n
    return rows[:n]


def by_id(sync: Sync, sobject: str) -> dict[str, dict]:
    return {r["Id"]: r for r in sync.truth(sobject)[sobject]}


def test_updates_above_the_threshold_go_through_one_bulk_ingest_job(sync):
    people = leads(sync, 20)
    bad, nulled = people[3], people[7]
    ids = ",".join(str(p["id"]) for p in people)
    sync.mdb.execute(f"UPDATE person SET title = 'Bulk title ' || id WHERE id IN ({ids})")
    sync.mdb.execute("UPDATE person SET lead_score = 500 WHERE id = :i", i=bad["id"])
    sync.mdb.execute("UPDATE person SET title = NULL WHERE id = :i", i=nulled["id"])
    before = calls(sync)
    summary = sync.cycle("r1")
    after = calls(sync)

    counts = summary["push"]["people"]["counts"]["Lead"]
    assert (counts["updated"], counts["failed"]) == (19, 1)
    # one ingest job: create, upload, close, one poll, job info, failed results
    assert summary["push"]["people"]["api_calls"] == 6
    used = {k: v - before.get(k, 0) for k, v in after.items() if k.startswith("bulk2.ingest")}
    # the job's PATCH (close) and two GETs (the poll, then simple-salesforce's job info)
    assert used == {"bulk2.ingest.create": 1, "bulk2.ingest.upload": 1, "bulk2.ingest.job": 3,
                    "bulk2.ingest.results": 1}
    assert after.get("composite.sobjects", 0) == before.get("composite.sobjects", 0)

    truth = by_id(sync, "Lead")
    for p in people:
        rec = truth[p["sfdc_lead_id"]]
        if p["id"] == nulled["id"]:
            assert rec["Title"] is None  # "#N/A" in the CSV: set to null, not left unchanged
        elif p["id"] == bad["id"]:
            assert rec["Title"] == p["title"] and rec["Lead_Score__c"] != 500
        else:
            assert rec["Title"] == f"Bulk title {p['id']}"
    error = sync.mdb.one("sfsync_error", "direction = 'push'")
    assert (error["error_code"], error["field"], error["sfdc_id"], error["sf_object"]) == (
        "FIELD_CUSTOM_VALIDATION_EXCEPTION", "Lead_Score__c", bad["sfdc_lead_id"], "Lead")
    assert "between 0 and 100" in error["message"] and not error["message"].endswith("--")
    box = sync.mdb.one("sfsync_outbox", "row_id = :i", order="row_id", i=bad["id"])
    assert (box["status"], box["attempts"]) == ("failed", 1)
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_outbox WHERE status = 'pending'") == 0

    # the echo of the job's writes comes back through the pull; then the sync is idle
    sync.advance(60)
    sync.cycle("r2")
    assert sync.mdb.one("person", "id = :i", i=nulled["id"])["title"] is None
    sync.advance(60)
    summary = sync.cycle("r3")
    assert all(step["api_calls"] == 0 for step in summary["push"].values())


def test_transient_failures_in_the_job_are_retried_through_collections(sync):
    people = leads(sync, 8)
    ids = ",".join(str(p["id"]) for p in people)
    sync.mdb.execute(f"UPDATE person SET title = 'Locked ' || id WHERE id IN ({ids})")
    sync.org.control("POST", "/faults", json={"endpoint": "bulk2.ingest.patch",
                                             "kind": "unable_to_lock_row", "count": 1})
    before = calls(sync)
    summary = sync.cycle("r1")
    after = calls(sync)
    assert sync.org.control("GET", "/faults") == []  # it fired
    assert summary["push"]["people"]["counts"]["Lead"]["updated"] == 8
    assert after["bulk2.ingest.create"] == before.get("bulk2.ingest.create", 0) + 1
    # the job (6 calls with its failed results), then the locked row alone in a collection
    # (one /composite call)
    assert summary["push"]["people"]["api_calls"] == 7
    truth = by_id(sync, "Lead")
    assert all(truth[p["sfdc_lead_id"]]["Title"] == f"Locked {p['id']}" for p in people)
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_error") == 0


def test_member_removals_above_the_threshold_go_through_a_bulk_delete(sync):
    members = sync.mdb.rows("campaign_member", "sfdc_is_deleted = :f AND sfdc_id IS NOT NULL",
                            f=False)[:7]
    assert len(members) == 7
    ids = ",".join(str(m["id"]) for m in members)
    sync.mdb.execute(f"DELETE FROM campaign_member WHERE id IN ({ids})")
    before = calls(sync)
    summary = sync.cycle("r1")
    after = calls(sync)
    result = summary["push"]["campaign_members"]
    assert result["counts"]["CampaignMember"]["deleted"] == 7
    assert result["api_calls"] == 5  # one job, no failures: no results to read
    assert after["bulk2.ingest.create"] == before.get("bulk2.ingest.create", 0) + 1
    left = by_id(sync, "CampaignMember")
    assert not {m["sfdc_id"] for m in members} & set(left)
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_outbox") == 0
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_error") == 0

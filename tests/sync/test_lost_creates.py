"""Creates whose answer was lost (issue 12, defect 1): a cycle killed after Salesforce made a
record and before the database recorded it never leads to a second record, nor to a second
local row, whether the org has the create key field (creates are upserts on it) or not (the
push looks for what it sent, the pull recognises it). On SQLite and PostgreSQL, standard org.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.sync.test_pull import Sync

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# One incremental cycle, as the DAG runs it, in a process the test can SIGKILL.
CYCLE = ("import json, sys\n"
         "from include.sfsync import pipeline\n"
         "from include.sfsync.config import load_config\n"
         "pipeline.run_cycle(sys.argv[1], config=load_config(overrides=json.loads(sys.argv[2])))\n")
KEY_FIELD = {"name": "Sfsync_Key__c", "type": "string", "length": 64, "external_id": True,
             "unique": True, "label": "sfsync key"}


@pytest.fixture
def sync(org, marketing_db):
    return Sync(org, marketing_db)


def killed_cycle(sync: Sync, run_key: str, made, log_dir: Path) -> None:
    """Run a cycle in a subprocess while every create's answer is held back; SIGKILL it once
    ``made(truth)`` says Salesforce has made the records, before the answer arrives."""
    sync.org.control("POST", "/faults", json={"kind": "slow_answer", "creates_only": True,
                                              "count": 50, "delay_seconds": 120})
    output = log_dir / f"{run_key}.log"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", CYCLE, run_key, json.dumps({**sync.base, **sync.overrides})],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out,
            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not made(sync.truth("Lead", "Campaign", "CampaignMember")):
            assert proc.poll() is None, output.read_text()[-3000:]
            assert time.monotonic() < deadline, \
                f"the create never reached Salesforce: {output.read_text()[-3000:]}"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        sync.org.control("DELETE", "/faults")


def tasks(sync: Sync) -> list[dict]:
    return [r for r in sync.truth("Task")["Task"]
            if r.get("Subject") == "Filled out form: Lost answer form"]


def named(truth: dict, sobject: str, field: str, value: str) -> list[dict]:
    return [r for r in truth[sobject] if r.get(field) == value]


@pytest.mark.parametrize("org", ["standard"], indirect=True)
@pytest.mark.parametrize("key_field", [True, False], ids=["key-field", "lookup"])
def test_a_create_whose_answer_was_lost_is_made_once(sync, key_field, tmp_path):
    if key_field:
        for sobject in ("Lead", "Contact", "Campaign"):
            sync.org.control("POST", f"/schema/{sobject}/fields", json=KEY_FIELD)
    sync.cycle("r0")
    mdb = sync.mdb
    mdb.execute("INSERT INTO person (last_name, company, sync_to_salesforce) VALUES "
                "('Nomail', 'Lost Answer Inc', true)")
    mdb.execute("INSERT INTO person (last_name, company, email, sync_to_salesforce) VALUES "
                "('Withmail', 'Lost Answer Inc', 'lost.answer@example.org', true)")
    mdb.execute("INSERT INTO campaign (name) VALUES ('Lost answer campaign')")

    # 1. killed while the leads' create waits for its answer
    killed_cycle(sync, "k1", lambda t: len(named(t, "Lead", "Company", "Lost Answer Inc")) == 2,
                 tmp_path)
    # 2. the next cycle (killed in the campaign's create) must not make the leads again
    sync.advance(60)
    killed_cycle(sync, "k2", lambda t: named(t, "Campaign", "Name", "Lost answer campaign"),
                 tmp_path)
    sync.advance(60)
    sync.cycle("r1")
    campaign_id = mdb.one("campaign", "name = 'Lost answer campaign'")["sfdc_id"]
    person = mdb.one("person", "last_name = 'Withmail'")
    mdb.execute("INSERT INTO campaign_member (person_id, sfdc_campaign_id, status) "
                "VALUES (:p, :c, 'Sent')", p=person["id"], c=campaign_id)
    mdb.execute("INSERT INTO marketing_activity (person_id, activity_type, detail) "
                "VALUES (:p, 'form_filled', 'Lost answer form')", p=person["id"])
    # 3. killed while the member's create waits, 4. while the activity's Task's does
    sync.advance(60)
    killed_cycle(sync, "k3", lambda t: named(t, "CampaignMember", "CampaignId", campaign_id),
                 tmp_path)
    sync.advance(60)
    killed_cycle(sync, "k4", lambda t: tasks(sync), tmp_path)
    for i in range(2, 4):
        sync.advance(60)
        sync.cycle(f"r{i}")

    truth = sync.truth("Lead", "Campaign", "CampaignMember")
    leads = named(truth, "Lead", "Company", "Lost Answer Inc")
    assert sorted(r["LastName"] for r in leads) == ["Nomail", "Withmail"]
    assert len(named(truth, "Campaign", "Name", "Lost answer campaign")) == 1
    members = named(truth, "CampaignMember", "CampaignId", campaign_id)
    assert len(members) == 1
    # one local row each, linked to the one record
    people = mdb.rows("person", "company = 'Lost Answer Inc'", order="last_name")
    assert [(p["last_name"], p["sfdc_lead_id"]) for p in people] == sorted(
        (r["LastName"], r["Id"]) for r in leads)
    assert [r["sfdc_id"] for r in mdb.rows("campaign", "name = 'Lost answer campaign'")] == \
        [campaign_id]
    assert [r["sfdc_id"] for r in mdb.rows("campaign_member", "sfdc_campaign_id = :c",
                                           c=campaign_id)] == [members[0]["Id"]]
    if key_field:  # each record carries the key of the row that made it
        assert {r["Sfsync_Key__c"].rsplit(":", 1)[0] for r in leads} == \
            {f"person:{p['id']}" for p in people}
    task = tasks(sync)
    assert len(task) == 1
    assert [(r["push_status"], r["sfdc_task_id"]) for r in mdb.rows("marketing_activity")] == \
        [("pushed", task[0]["Id"])]
    assert mdb.rows("sfsync_error") == []
    assert mdb.scalar("SELECT count(*) FROM sfsync_outbox") == 0
    # and the converged cycle writes nothing
    sync.advance(60)
    summary = sync.cycle("r9")
    assert all(not c.get("new") and not c.get("updated")
               for step in summary["push"].values() for c in step.get("counts", {}).values())

"""Run the sync DAGs for real with dag.test(): emulator org in, SQLite marketing database out."""

from __future__ import annotations

import pytest
import requests
import sqlalchemy as sa

from include.salesforce_emulator.demo import demo_sync_settings
from include.sfsync.objects import object_names
from tests.dags.helpers import load_dag as _dag

pytestmark = pytest.mark.integration


def _api_calls(info) -> int:
    return requests.get(info["control_url"] + "/counters", timeout=10).json()["total"]


def test_initial_copy_then_incremental_cycles(airflow_db, sync_env):
    info, engine = sync_env
    initial = _dag("salesforce_initial_sync")
    run = initial.test(run_conf={"objects": initial.params["objects"], "created_from": None,
                                 "created_to": None})
    assert run.state == "success"
    truth = requests.get(info["control_url"] + "/export",
                         params={"objects": "Account,Lead,Contact"}, timeout=30).json()
    with engine.connect() as conn:
        companies = conn.execute(sa.text("SELECT COUNT(*) FROM company")).scalar()
        people = conn.execute(sa.text("SELECT COUNT(*) FROM person")).scalar()
        marks = conn.execute(sa.text("SELECT COUNT(*) FROM sfsync_watermark WHERE "
                                     "cursor_modstamp IS NOT NULL")).scalar()
        status = conn.execute(sa.text("SELECT status FROM sfsync_run")).scalars().all()
    assert companies == len(truth["Account"])
    synced_leads = [r for r in truth["Lead"] if not r["Do_Not_Sync_Marketing__c"]]
    assert 0 < people <= len(synced_leads) + len(truth["Contact"])
    assert initial.params["objects"] == ["all"]  # every object the configuration syncs
    assert marks == len(object_names(demo_sync_settings()["custom_objects"]))  # all started
    assert status == ["success"]

    incremental = _dag("salesforce_incremental_sync")
    before = _api_calls(info)
    run = incremental.test()
    assert run.state == "success"
    assert _api_calls(info) - before <= 6  # describe + probe (+ re-reads of the overlap window)
    # Changes within the overlap window (300 s, plus latestDateCovered's minute granularity)
    # are read again by the next cycles; once activity is older than that, cycles are idle.
    for _ in range(2):
        requests.post(info["control_url"] + "/clock", json={"advance_seconds": 420}, timeout=10)
        before = _api_calls(info)
        run = incremental.test()
        assert run.state == "success"
    assert _api_calls(info) - before == 2  # an idle cycle: describe + probe

    # A marketing-side edit: the incremental DAG's push tasks carry it to Salesforce; the
    # sync-now DAG does the same at once for the people it is given.
    with engine.begin() as conn:
        lead_person, lead_id = conn.execute(sa.text(
            "SELECT id, sfdc_lead_id FROM person WHERE sfdc_type = 'Lead' AND sfdc_is_deleted = 0 "
            "ORDER BY id LIMIT 1")).one()
        conn.execute(sa.text("UPDATE person SET title = 'Pushed by the DAG' WHERE id = :i"),
                     {"i": lead_person})
        conn.execute(sa.text("INSERT INTO person (email, last_name, company, sync_to_salesforce)"
                             " VALUES ('now@example.org', 'Now', 'Sync Now Co', true)"))
    run = incremental.test()
    assert run.state == "success"
    pushed = {ti.task_id for ti in run.get_task_instances() if ti.task_id.startswith("push.")}
    assert pushed == {"push.dedupe_on_write", "push.people", "push.campaigns",
                      "push.campaign_members", "push.activities"}
    leads = {r["Id"]: r for r in requests.get(info["control_url"] + "/export",
                                              params={"objects": "Lead"}, timeout=30).json()["Lead"]}
    assert leads[lead_id]["Title"] == "Pushed by the DAG"
    assert any(r["Email"] == "now@example.org" for r in leads.values())

    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE person SET title = 'Right now' WHERE id = :i"),
                     {"i": lead_person})
    sync_now = _dag("salesforce_sync_now")
    run = sync_now.test(run_conf={"person_ids": [lead_person], "emails": []})
    assert run.state == "success"
    lead = requests.get(info["control_url"] + "/export", params={"objects": "Lead"},
                        timeout=30).json()["Lead"]
    assert next(r for r in lead if r["Id"] == lead_id)["Title"] == "Right now"


def _run_row(engine, dag_id: str, run) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT status, message FROM sfsync_run WHERE run_key = :k"),
                                 {"k": f"{dag_id}:{run.run_id}"}).one()._mapping)


def test_failed_runs_are_marked_failed_with_their_cause(airflow_db, sync_env):
    """Sync now with nobody to sync, or with a record Salesforce rejects, and an initial sync
    against another org: each run fails at once (no retry) and sfsync_run says why."""
    info, engine = sync_env
    assert _dag("salesforce_incremental_sync").test().state == "success"  # the first copy
    sync_now = _dag("salesforce_sync_now")
    for conf, cause in (({"person_ids": [], "emails": []}, "the request named nobody"),
                        ({"person_ids": [], "emails": ["nobody@example.org"]},
                         "no person matches nobody@example.org")):
        run = sync_now.test(run_conf=conf)
        assert run.state == "failed"
        assert [ti.try_number for ti in run.get_task_instances()] == [1]  # not retried
        row = _run_row(engine, "salesforce_sync_now", run)
        assert row["status"] == "failed" and cause in row["message"], row
    # a restricted picklist value no value map knows: Salesforce refuses the update
    with engine.begin() as conn:
        person = conn.execute(sa.text(
            "SELECT id FROM person WHERE sfdc_type = 'Lead' AND sfdc_is_deleted = 0 "
            "ORDER BY id LIMIT 1")).scalar()
        conn.execute(sa.text("UPDATE person SET state = 'Atlantis' WHERE id = :i"), {"i": person})
    run = sync_now.test(run_conf={"person_ids": [person], "emails": []})
    assert run.state == "failed"
    assert [ti.try_number for ti in run.get_task_instances()] == [1]
    row = _run_row(engine, "salesforce_sync_now", run)
    assert row["status"] == "failed", row
    assert "rejected 1 record(s)" in row["message"]
    assert "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" in row["message"], row
    # an object the configuration does not sync: the plan fails at once (no retry)
    initial = _dag("salesforce_initial_sync")
    run = initial.test(run_conf={"objects": ["Nope__c"], "created_from": None,
                                 "created_to": None})
    assert run.state == "failed"
    failed = {ti.task_id: ti.try_number for ti in run.get_task_instances()
              if ti.state == "failed"}
    assert failed == {"plan": 1}
    # the marketing database belongs to this org: an initial sync against another one fails
    requests.patch(info["control_url"] + "/settings", json={"org_id": "00D5e0000000OTHEA2"},
                   timeout=10).raise_for_status()
    run = _dag("salesforce_initial_sync").test(run_conf={
        "objects": ["Account"], "created_from": None, "created_to": None})
    assert run.state == "failed"
    row = _run_row(engine, "salesforce_initial_sync", run)
    assert row["status"] == "failed" and "Refusing to mix two orgs' data" in row["message"], row


@pytest.mark.parametrize("dag_id, task_id", [
    ("salesforce_incremental_sync", "prepare"), ("salesforce_initial_sync", "plan"),
    ("salesforce_org_summary", "summarize_org")])
def test_a_wrong_password_logs_in_once_and_fails_saying_what_to_check(
        airflow_db, sync_env, task_log_output, monkeypatch, dag_id, task_id):
    """Retrying a refused login only brings the user closer to a lockout (10 failures lock it
    on a real org): one login attempt, one failed try, the cause on the sync run, and the
    password in no log line."""
    import json

    info, engine = sync_env
    wrong = "Wr0ng-pw-9f3Kx"
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", json.dumps({
        "conn_type": "salesforce", "login": info["username"], "password": wrong,
        "extra": {"security_token": info["security_token"], "domain": info["login_domain"],
                  "version": "59.0"}}))
    requests.delete(info["control_url"] + "/counters", timeout=10).raise_for_status()
    task_log_output()
    dag = _dag(dag_id)
    run = dag.test(run_conf={"objects": ["all"], "created_from": None, "created_to": None}
                   if dag_id == "salesforce_initial_sync" else None)
    output = task_log_output()

    assert run.state == "failed"
    failed = {ti.task_id: ti.try_number for ti in run.get_task_instances()
              if ti.state == "failed"}
    assert failed == {task_id: 1}  # not retried
    calls = requests.get(info["control_url"] + "/counters", timeout=10).json()["calls"]
    assert {k: v for k, v in calls.items() if k.startswith("login.")} == {"login.soap": 1}
    cause = (f"Salesforce refused the login of Airflow connection 'salesforce_default' (user "
             f"{info['username']}, login domain {info['login_domain']}): INVALID_LOGIN: ")
    assert cause in output
    assert "security token" in output and "My Domain" in output
    for secret in (wrong, info["security_token"]):
        assert secret not in output
    if dag_id != "salesforce_org_summary":  # the summary reads the org only: no sync run
        row = _run_row(engine, dag_id, run)
        assert row["status"] == "failed" and row["message"].startswith(cause), row
        assert wrong not in row["message"]

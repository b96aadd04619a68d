"""A three-month backfill of ``salesforce_initial_sync`` through Airflow's real backfill machinery.

A real Airflow stack (tests/airflow_stack.py: api-server, scheduler, dag-processor, LocalExecutor)
runs ``POST /api/v2/backfills`` over three consecutive months against the Salesforce emulator (a
subprocess: task processes must reach it) and a SQLite marketing database. The months are chosen
from the emulator's own export (the demo seed spreads CreatedDate over the three years before the
emulator clock), preferring months with archived activities and a converted lead whose contact was
created outside the windows.

Only the initial DAG is loaded (copied into a tmp dags folder): the incremental DAG, unpaused at
creation, would start cycles of its own. The project's plugins folder is passed as in production.

Proves: exactly three backfill runs, all successful, each copying exactly the records created in
its data interval (one done ``sfsync_copy_window`` row per object per window), progress in the
copy logs, and no incremental cursor started (history before the windows is not copied, so the
incremental DAG must not skip it).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
import requests
import sqlalchemy as sa
import yaml

from include.salesforce_emulator.demo import demo_sync_settings
from include.salesforce_emulator.process import start_emulator
from tests.airflow_stack import ROOT, AirflowStack

pytestmark = pytest.mark.integration

DAG_ID = "salesforce_initial_sync"
OBJECTS = ["User", "Account", "Lead", "Contact", "Campaign", "CampaignMember", "Opportunity",
           "OpportunityContactRole", "Task", "Event", "Webinar_Attendance__c", "Subscription__c"]
TABLES = {"User": "sales_user", "Account": "company", "Campaign": "campaign",
          "CampaignMember": "campaign_member", "Opportunity": "opportunity",
          "OpportunityContactRole": "opportunity_contact_role", "Task": "activity",
          "Event": "activity", "Webinar_Attendance__c": "webinar_attendance",
          "Subscription__c": "subscription"}
PROGRESS = re.compile(r"[\d,]+ of [\d,]+ records \([\d.]+%\), [\d,]+ records/s")


def _month(value: str) -> tuple[int, int]:
    return int(value[:4]), int(value[5:7])


def _next(month: tuple[int, int]) -> tuple[int, int]:
    year, mon = month
    return (year + 1, 1) if mon == 12 else (year, mon + 1)


def _start(month: tuple[int, int]) -> datetime:
    return datetime(month[0], month[1], 1, tzinfo=UTC)


def _created(rec: dict) -> datetime:
    return datetime.fromisoformat(rec["CreatedDate"].replace("Z", "+00:00"))


def _pick_windows(truth: dict, now: datetime) -> list[tuple[datetime, datetime]]:
    """Three consecutive whole months before the emulator's current month, with records.

    Each month must hold leads, contacts and tasks; among those, prefer windows with accounts,
    opportunities, an archived task (only ``queryAll`` returns it) and a converted lead whose
    contact was created outside the windows, then the most (month, object) pairs with records.
    """
    per_month = Counter((_month(r["CreatedDate"]), name)
                        for name, rows in truth.items() for r in rows)
    contacts = {c["Id"]: c for c in truth["Contact"]}
    first = min(m for m, _ in per_month)
    current = (now.year, now.month)
    best, best_score = None, None
    month = first
    while _next(_next(month)) < current:
        months = [month, _next(month), _next(_next(month))]
        if all(per_month[(m, n)] for m in months for n in ("Lead", "Contact", "Task")):
            inside = set(months)
            outside_contact = any(
                lead["IsConverted"] and not lead["Do_Not_Sync_Marketing__c"]
                and _month(lead["CreatedDate"]) in inside
                and _month(contacts[lead["ConvertedContactId"]]["CreatedDate"]) not in inside
                for lead in truth["Lead"] if lead["ConvertedContactId"] in contacts)
            archived = any(t["IsArchived"] and _month(t["CreatedDate"]) in inside
                           for t in truth["Task"])
            wanted = sum([any(per_month[(m, "Account")] for m in months),
                          any(per_month[(m, "Opportunity")] for m in months),
                          archived, outside_contact])
            cells = sum(1 for m in months for n in OBJECTS if per_month[(m, n)])
            score = (wanted, cells, month)
            if best_score is None or score > best_score:
                best, best_score = months, score
        month = _next(month)
    assert best is not None, "the demo org has no three consecutive months with people and tasks"
    return [(_start(m), _start(_next(m))) for m in best]


@pytest.fixture
def emulator(tmp_path):
    with start_emulator(data_dir=tmp_path / "emu", seed="demo") as emu:
        yield emu.info


def test_three_month_backfill_copies_exactly_the_windows(tmp_path, emulator, airflow_metadata_url):
    started = time.monotonic()
    info = emulator
    control = info["control_url"]
    ca = info["ca_bundle"]
    truth = requests.get(control + "/export", params={"objects": ",".join(OBJECTS)},
                         verify=ca, timeout=30).json()
    now = datetime.fromisoformat(requests.get(control + "/clock", verify=ca, timeout=10)
                                 .json()["now"].replace("Z", "+00:00"))
    windows = _pick_windows(truth, now)
    in_windows = {name: [r for r in rows if any(a <= _created(r) < b for a, b in windows)]
                  for name, rows in truth.items()}

    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(ROOT / "dags" / f"{DAG_ID}.py", dags)  # not the incremental DAG: it would run
    database = tmp_path / "marketing.db"
    config = tmp_path / "sfsync.yaml"
    config.write_text(yaml.safe_dump({**demo_sync_settings(), "bulk_poll_seconds": 0}))
    env = {
        "AIRFLOW_CONN_SALESFORCE_DEFAULT": json.dumps({
            "conn_type": "salesforce", "login": info["username"], "password": info["password"],
            "extra": {"security_token": info["security_token"], "domain": info["login_domain"],
                      "version": "59.0"}}),
        "AIRFLOW_CONN_MARKETING_DB": json.dumps({"conn_type": "sqlite", "host": str(database)}),
        "REQUESTS_CA_BUNDLE": ca,
        "SFSYNC_CONFIG": str(config),
        "PYTHONPATH": str(ROOT),
    }
    with AirflowStack(dags_folder=dags, home=tmp_path / "home", env=env,
                      pools={"salesforce_api": 2}, dag_ids=[DAG_ID],
                      plugins_folder=ROOT / "plugins",
                      metadata_url=airflow_metadata_url) as stack:
        stack_ready = time.monotonic()
        stack.backfill(DAG_ID, windows[0][0], windows[-1][0], max_active_runs=3)
        runs = stack.wait_runs(DAG_ID, run_type="backfill", count=3, timeout=240)  # ~40 s idle
        backfill_done = time.monotonic()
        tis = {r["dag_run_id"]: stack.task_instances(DAG_ID, r["dag_run_id"]) for r in runs}
        copy_logs = {
            (run_id, ti["map_index"]): stack.task_log_events(
                DAG_ID, run_id, "copy", try_number=ti["try_number"], map_index=ti["map_index"])
            for run_id, items in tis.items() for ti in items if ti["task_id"] == "copy"}
        all_runs = stack.dag_runs(DAG_ID)
    print(f"\nwindows {[(a.date().isoformat(), b.date().isoformat()) for a, b in windows]}; "
          f"stack up in {stack_ready - started:.1f}s, backfill done in "
          f"{backfill_done - stack_ready:.1f}s, total {time.monotonic() - started:.1f}s "
          f"(locked POSTs retried: {stack.lock_retries})")

    # Airflow: three backfill runs, all successful, one per window; nothing else copied.
    summary = [(r["dag_run_id"], r["state"]) for r in runs]
    assert len(runs) == 3, summary
    assert [r["state"] for r in runs] == ["success"] * 3, (summary, tis)
    assert {r["run_type"] for r in runs} == {"backfill"}
    intervals = [(datetime.fromisoformat(r["data_interval_start"]),
                  datetime.fromisoformat(r["data_interval_end"])) for r in runs]
    assert sorted(intervals) == windows
    assert [r for r in all_runs if r["run_type"] not in ("backfill", "scheduled")] == []
    for run_id, items in tis.items():
        states = Counter((ti["task_id"], ti["state"]) for ti in items)
        assert states == {("plan", "success"): 1, ("copy", "success"): len(OBJECTS),
                          ("finish", "success"): 1}, (run_id, states)
        assert {ti["pool"] for ti in items if ti["task_id"] != "finish"} == {"salesforce_api"}

    # Every copy task logged its progress: done of total, rate.
    for key, events in copy_logs.items():
        assert any(PROGRESS.search(e) for e in events), (key, events[-20:])

    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT sf_object, window_start, window_end, status, copied "
            "FROM sfsync_copy_window")).all()
        stored = {table: set(conn.execute(sa.text(f"SELECT sfdc_id FROM {table}")).scalars())
                  for table in set(TABLES.values())}
        people = conn.execute(sa.text(
            "SELECT sfdc_lead_id, sfdc_contact_id FROM person")).all()
        cursors = conn.execute(sa.text(
            "SELECT sf_object, cursor_modstamp FROM sfsync_watermark "
            "WHERE cursor_modstamp IS NOT NULL")).all()
        sync_runs = conn.execute(sa.text("SELECT kind, status FROM sfsync_run")).all()
    engine.dispose()

    # One finished copy window per object per run, with the run's data interval as bounds;
    # each read exactly the live records created in it (archived activities included).
    def as_utc(value) -> datetime:
        value = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value

    got = {(r.sf_object, as_utc(r.window_start), as_utc(r.window_end)): (r.status, r.copied)
           for r in rows}
    assert len(rows) == len(OBJECTS) * 3
    expected = {(name, a, b): ("done", sum(1 for r in truth[name] if a <= _created(r) < b))
                for name in OBJECTS for a, b in windows}
    assert got == expected

    # The marketing database holds exactly the records created in the three windows.
    for name, table in TABLES.items():
        prefix = truth[name][0]["Id"][:3] if truth[name] else None
        ids = {i for i in stored[table] if prefix and i.startswith(prefix)}
        want = {r["Id"] for r in in_windows[name]}
        assert ids == want, (name, sorted(ids - want), sorted(want - ids))
    assert in_windows["Account"] and in_windows["Task"]

    # People: synced leads and contacts created in the windows (do-not-sync ones stay out). A
    # converted lead's person carries its contact id even when that contact was created in
    # another window (or not copied at all); leads and contacts never share a row otherwise.
    leads = [r for r in in_windows["Lead"] if not r["Do_Not_Sync_Marketing__c"]]
    contacts = [r for r in in_windows["Contact"] if not r["Do_Not_Sync_Marketing__c"]]
    converted = {r["Id"]: r["ConvertedContactId"] for r in leads if r["IsConverted"]}
    lead_ids = {p.sfdc_lead_id for p in people if p.sfdc_lead_id}
    contact_ids = {p.sfdc_contact_id for p in people if p.sfdc_contact_id}
    assert lead_ids == {r["Id"] for r in leads}
    assert contact_ids == {r["Id"] for r in contacts} | set(converted.values())
    pairs = {(p.sfdc_lead_id, p.sfdc_contact_id) for p in people}
    assert {(lead, contact) for lead, contact in converted.items()} <= pairs
    assert all(p.sfdc_lead_id or p.sfdc_contact_id for p in people)
    assert len(people) == len(lead_ids | contact_ids) - len(converted)

    # History before the windows is not copied: no incremental cursor may start.
    assert cursors == []
    assert sorted(sync_runs) == [("initial", "success")] * 3

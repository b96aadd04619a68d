"""Unpausing ``salesforce_initial_sync`` and backfilling three months, through Airflow's real machinery.

A real Airflow stack (tests/airflow_stack.py: api-server, scheduler, dag-processor, LocalExecutor)
runs the DAG against the Salesforce emulator (a subprocess: task processes must reach it) and a
SQLite marketing database. The DAG is unpaused at creation, so the scheduler first creates its
scheduled run for the most recent complete month (monthly schedule, no catchup); once that run
is done, ``POST /api/v2/backfills`` covers the three months ending with that month. Airflow skips
a month that already has a run (reprocess behaviour ``none``, the UI's *Missing Runs*): the
backfill creates two runs. The bug this guards against: the scheduled run skipped every task and
showed green, so its month was never copied.

The demo seed spreads CreatedDate over the three years before the emulator clock, so the last
three months hold leads, contacts, tasks, accounts, opportunities and a converted lead whose
contact was created before them (checked). They hold no archived activity (Salesforce archives
closed ones a year after their date), so the test archives one closed task per month first:
only ``queryAll`` returns it.

Only the initial DAG is loaded (copied into a tmp dags folder): the incremental DAG, unpaused at
creation, would start cycles of its own. The project's plugins folder is passed as in production.

Proves: three runs (one scheduled, two backfill), all successful, each copying exactly the
records created in its data interval (one done ``sfsync_copy_window`` row per object per window,
every copy task calling Salesforce and recording its counts under its own run), progress in the
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


def _next(month: tuple[int, int]) -> tuple[int, int]:
    year, mon = month
    return (year + 1, 1) if mon == 12 else (year, mon + 1)


def _start(month: tuple[int, int]) -> datetime:
    return datetime(month[0], month[1], 1, tzinfo=UTC)


def _created(rec: dict) -> datetime:
    return datetime.fromisoformat(rec["CreatedDate"].replace("Z", "+00:00"))


def _previous(month: tuple[int, int]) -> tuple[int, int]:
    year, mon = month
    return (year - 1, 12) if mon == 1 else (year, mon - 1)


def _recent_windows(now: datetime) -> list[tuple[datetime, datetime]]:
    """The three whole months before ``now``'s month: the last one is the data interval of the
    run the scheduler creates when the DAG is unpaused (monthly, no catchup)."""
    last = _previous((now.year, now.month))
    months = [_previous(_previous(last)), _previous(last), last]
    return [(_start(m), _start(_next(m))) for m in months]


def _archive_one_closed_task_per_window(control: str, ca: str, truth: dict,
                                        windows: list[tuple[datetime, datetime]]) -> None:
    """A closed task dated over a year ago is archived: hidden from ``query``, not ``queryAll``."""
    for a, b in windows:
        task = next(t for t in truth["Task"] if t["IsClosed"] and a <= _created(t) < b)
        requests.patch(f"{control}/records/Task/{task['Id']}", verify=ca, timeout=10,
                       json={"values": {"ActivityDate": f"{a.year - 2}-{a.month:02d}-01",
                                        "IsArchived": True}}).raise_for_status()


def _assert_windows_cover_the_cases(truth: dict, windows: list[tuple[datetime, datetime]]) -> None:
    """What the windows must hold for the assertions below to mean something."""
    def created_in(name: str, a: datetime, b: datetime) -> list[dict]:
        return [r for r in truth[name] if a <= _created(r) < b]

    def inside(rec: dict) -> bool:
        return any(a <= _created(rec) < b for a, b in windows)

    contacts = {c["Id"]: c for c in truth["Contact"]}
    cases = {
        "leads, contacts and tasks in every month": all(
            created_in(n, a, b) for a, b in windows for n in ("Lead", "Contact", "Task")),
        "accounts": any(created_in("Account", a, b) for a, b in windows),
        "opportunities": any(created_in("Opportunity", a, b) for a, b in windows),
        "a converted lead whose contact was created outside the windows": any(
            lead["IsConverted"] and not lead["Do_Not_Sync_Marketing__c"] and inside(lead)
            and lead["ConvertedContactId"] in contacts
            and not inside(contacts[lead["ConvertedContactId"]]) for lead in truth["Lead"]),
        "an archived task in every month": all(
            any(t["IsArchived"] for t in created_in("Task", a, b)) for a, b in windows),
    }
    missing = [case for case, held in cases.items() if not held]
    assert not missing, f"the demo org's windows {windows} lack: {missing}"


@pytest.fixture
def emulator(tmp_path):
    with start_emulator(data_dir=tmp_path / "emu", seed="demo") as emu:
        yield emu.info


def test_unpaused_then_three_month_backfill_copies_every_month_once(tmp_path, emulator,
                                                                     airflow_metadata_url):
    started = time.monotonic()
    info = emulator
    control = info["control_url"]
    ca = info["ca_bundle"]

    def export() -> dict:
        return requests.get(control + "/export", params={"objects": ",".join(OBJECTS)},
                            verify=ca, timeout=30).json()

    now = datetime.fromisoformat(requests.get(control + "/clock", verify=ca, timeout=10)
                                 .json()["now"].replace("Z", "+00:00"))
    windows = _recent_windows(now)
    _archive_one_closed_task_per_window(control, ca, export(), windows)
    truth = export()
    _assert_windows_cover_the_cases(truth, windows)
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
        # Unpaused at creation: the scheduler runs the most recent complete month at once.
        [scheduled] = stack.wait_runs(DAG_ID, run_type="scheduled", count=1, timeout=120)
        scheduled_done = time.monotonic()
        body = {"dag_id": DAG_ID, "from_date": windows[0][0].isoformat(),
                "to_date": windows[-1][0].isoformat(), "run_backwards": False,
                "dag_run_conf": {}, "reprocess_behavior": "none", "max_active_runs": 3}
        planned = stack.api("POST", "/backfills/dry_run", json=body).json()["backfills"]
        stack.backfill(DAG_ID, windows[0][0], windows[-1][0], max_active_runs=3)
        backfilled = stack.wait_runs(DAG_ID, run_type="backfill", count=2, timeout=240)
        backfill_done = time.monotonic()
        runs = stack.dag_runs(DAG_ID)
        tis = {r["dag_run_id"]: stack.task_instances(DAG_ID, r["dag_run_id"]) for r in runs}
        copy_logs = {
            (run_id, ti["map_index"]): stack.task_log_events(
                DAG_ID, run_id, "copy", try_number=ti["try_number"], map_index=ti["map_index"])
            for run_id, items in tis.items() for ti in items
            if ti["task_id"] == "copy" and ti["try_number"]}  # a skipped task has no log
    print(f"\nwindows {[(a.date().isoformat(), b.date().isoformat()) for a, b in windows]}; "
          f"stack up in {stack_ready - started:.1f}s, scheduled run done in "
          f"{scheduled_done - stack_ready:.1f}s, backfill done in "
          f"{backfill_done - scheduled_done:.1f}s, total {time.monotonic() - started:.1f}s "
          f"(locked POSTs retried: {stack.lock_retries})")

    def interval(run: dict) -> tuple[datetime, datetime]:
        return (datetime.fromisoformat(run["data_interval_start"]),
                datetime.fromisoformat(run["data_interval_end"]))

    # Airflow: the scheduled run covers the last window, so the backfill skips that month and
    # runs the other two. Three runs in all, one per window, all successful.
    summary = [(r["dag_run_id"], r["run_type"], r["state"]) for r in runs]
    assert interval(scheduled) == windows[-1], summary
    assert [datetime.fromisoformat(b["logical_date"]) for b in planned] == \
        [a for a, _ in windows[:2]], planned
    assert len(backfilled) == 2, summary
    assert sorted(interval(r) for r in backfilled) == windows[:2]
    assert len(runs) == 3, summary
    assert sorted(r["run_type"] for r in runs) == ["backfill", "backfill", "scheduled"], summary
    assert [r["state"] for r in runs] == ["success"] * 3, (summary, tis)
    assert sorted(interval(r) for r in runs) == windows

    # Nothing is green without having copied: every task of every run ran and succeeded.
    for run_id, items in tis.items():
        states = Counter((ti["task_id"], ti["state"]) for ti in items)
        assert states == {("plan", "success"): 1, ("copy", "success"): len(OBJECTS),
                          ("finish", "success"): 1}, (run_id, states)
        assert {ti["pool"] for ti in items if ti["task_id"] != "finish"} == {"salesforce_api"}

    # Every copy task logged its progress: done of total, rate.
    assert len(copy_logs) == len(OBJECTS) * 3
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
        sync_runs = conn.execute(sa.text("SELECT run_key, kind, status FROM sfsync_run")).all()
        copy_calls = conn.execute(sa.text(
            "SELECT run_key, sf_object, api_calls FROM sfsync_count "
            "WHERE operation = 'copy'")).all()
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

    # Each Airflow run is one successful sync run whose every copy task recorded its calls:
    # those of a window with records read them (its count and Bulk job came from the plan
    # task, which counted every window in shared composite calls); an empty one needs none.
    run_keys = {f"{DAG_ID}:{r['dag_run_id']}" for r in runs}
    assert {r.run_key: (r.kind, r.status) for r in sync_runs} == \
        dict.fromkeys(run_keys, ("initial", "success"))
    calls = {(r.run_key, r.sf_object): r.api_calls for r in copy_calls}
    assert set(calls) == {(key, name) for key in run_keys for name in OBJECTS}
    window_of = {f"{DAG_ID}:{r['dag_run_id']}": interval(r) for r in runs}
    assert all((n > 0) == (expected[(name, *window_of[key])][1] > 0)
               for (key, name), n in calls.items()), calls

    # The marketing database holds exactly the records created in the three windows.
    for name, table in TABLES.items():
        prefix = truth[name][0]["Id"][:3] if truth[name] else None
        ids = {i for i in stored[table] if prefix and i.startswith(prefix)}
        want = {r["Id"] for r in in_windows[name]}
        assert ids == want, (name, sorted(ids - want), sorted(want - ids))
    assert in_windows["Account"] and in_windows["Task"]
    assert {t["Id"] for t in in_windows["Task"] if t["IsArchived"]} <= stored["activity"]

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

"""Issue 9's acceptance: a new user's first hours on an org we did not design.

A ``standard`` org (a fresh Enterprise org's shape: no custom object or field of ours) seeded with
50,000 records, and nothing but the README: ``admin connect``, ``admin fields --csv``,
``admin start``, then the incremental DAG as Airflow runs it (``dag.test()``): idle cycles, one
cycle with simulated sales activity and one push. The marketing database ends equal to the
emulator's exported truth under the mapping, and no default names a field the org lacks.
The figures the issue asks for are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from include.sfsync.config import load_config
from include.sfsync.context import open_context
from include.sfsync.objects import PEOPLE
from tests.fixtures_emulator import Emulator, start_emulator_server
from tests.sync.test_pull import assert_mapped

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"


@pytest.fixture
def standard_org(tmp_path, monkeypatch):
    server, info = start_emulator_server(tmp_path / "org", seed="standard:50000")
    emu = Emulator(server, info)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", info["ca_bundle"])
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", "")
    emu.airflow_connection()
    monkeypatch.setenv("AIRFLOW_CONN_MARKETING_DB", json.dumps(
        {"conn_type": "sqlite", "host": str(tmp_path / "marketing.db")}))
    # No configuration file at all: every setting is a default.
    monkeypatch.setenv("SFSYNC_CONFIG", str(tmp_path / "no-such-sfsync.yaml"))
    yield emu
    server.stop()


def admin(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "include.sfsync.admin", *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"admin {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _dag(name: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / f"{name}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(name)


def test_a_standard_org_from_nothing_but_the_readme(airflow_db, standard_org):
    org = standard_org
    truth_counts = org.control("GET", "/export", params={"objects": "Lead,Contact,Account"})
    assert sum(len(v) for v in truth_counts.values()) > 25_000

    # 1. Connect: which org, which user, API usage, what the user can see.
    report = admin("connect")
    assert "Standard Enterprise Org" in report and "production" in report.lower(), report
    assert "all are visible" in report, report

    # 2. Sync fields: every field with what the sync does with it; nothing of the demo's.
    rows = list(csv.DictReader(io.StringIO(admin("fields", "--csv"))))
    assert rows and not [r for r in rows if r["field"].endswith("__c")]
    by_key = {(r["object"], r["field"]): r for r in rows}
    assert by_key[("Lead", "Email")]["synced"] == "yes"
    assert by_key[("Lead", "Email")]["direction"] == "two-way"
    assert by_key[("Account", "BillingAddress")]["synced"] == "no"
    assert "compound" in by_key[("Account", "BillingAddress")]["reason"]
    assert by_key[("Account", "BillingCity")]["synced"] == "yes"
    assert by_key[("Opportunity", "ExpectedRevenue")]["synced"] == "no"  # a formula
    config = load_config()
    assert config.custom_objects == [] and config.sync_filters == []

    # 3. Start: the initial copy, timed.
    started = time.monotonic()
    out = admin("start")
    copy_seconds = time.monotonic() - started
    assert "Initial copy" in out and "Not complete yet" not in out, out
    # No default names a field (or object) this org lacks: no warning at all.
    assert open_context(config).catalog.warnings == []

    # 4. Incremental cycles as Airflow runs them: idle right after the copy and 10 min later.
    incremental = _dag("salesforce_incremental_sync")

    def cycle() -> tuple[int, object]:
        before = org.control("GET", "/counters")
        run = incremental.test()
        assert run.state == "success", [(t.task_id, t.state) for t in run.get_task_instances()]
        after = org.control("GET", "/counters")
        return after["api_usage"]["used"] - before["api_usage"]["used"], run

    after_copy, _ = cycle()
    org.control("POST", "/clock", json={"advance_seconds": 600})
    ten_minutes_later, _ = cycle()
    # Each cycle re-reads the 5 minutes before the last coverage (late commits): records the
    # org changed just before the copy cost a query or two until they are older than that.
    assert ten_minutes_later <= after_copy, (after_copy, ten_minutes_later)
    org.control("POST", "/clock", json={"advance_seconds": 600})
    twenty_minutes_later, _ = cycle()
    assert twenty_minutes_later == 2  # describe + probe: an idle cycle is nearly free

    # One cycle with simulated sales activity, then one push from plain SQL.
    org.control("POST", "/clock", json={"advance_seconds": 60})
    activity = org.control("POST", "/simulate", json={
        "creates": 40, "updates": 60, "deletes": 10, "merges": 2, "conversions": 3,
        "objects": ["Lead", "Contact", "Account", "Opportunity", "CampaignMember", "Task"],
        "rng_seed": 9})
    org.control("POST", "/clock", json={"advance_seconds": 60})
    busy_calls, _ = cycle()
    engine = sa.create_engine(f"sqlite:///{json.loads(os.environ['AIRFLOW_CONN_MARKETING_DB'])['host']}")
    with engine.begin() as conn:
        person, lead_id = conn.execute(sa.text(
            "SELECT id, sfdc_lead_id FROM person WHERE sfdc_type = 'Lead' AND NOT sfdc_is_deleted "
            "ORDER BY id LIMIT 1")).one()
        conn.execute(sa.text("UPDATE person SET title = 'Pushed on a standard org' "
                             "WHERE id = :i"), {"i": person})
        conn.execute(sa.text("INSERT INTO person (email, last_name, company, sync_to_salesforce)"
                             " VALUES ('first.contact@example.org', 'Contact', "
                             "'First Contact Co', true)"))
    org.control("POST", "/clock", json={"advance_seconds": 60})
    push_calls, run = cycle()
    states = {t.task_id: t.state for t in run.get_task_instances()
              if t.task_id.startswith("push.")}
    assert set(states.values()) == {"success"}, states
    org.control("POST", "/clock", json={"advance_seconds": 600})
    cycle()  # reads the echo of the push: the two sides agree

    truth = org.control("GET", "/export")
    leads = {r["Id"]: r for r in truth["Lead"]}
    assert leads[lead_id]["Title"] == "Pushed on a standard org"
    assert [r for r in leads.values() if r["Email"] == "first.contact@example.org"]

    # The marketing database equals the org under the mapping.
    ctx = open_context(load_config())
    with engine.connect() as conn:
        def rows_of(table: str, where: str = "", **params) -> dict[str, dict]:
            sql = f"SELECT * FROM {table} WHERE NOT sfdc_is_deleted" + (f" AND {where}" if where
                                                                         else "")
            return {r["sfdc_id"]: dict(r) for r in conn.execute(sa.text(sql), params).mappings()}

        for obj in ctx.catalog.ordered():
            if obj.sf_object in PEOPLE:
                continue
            where = "sfdc_object = :o" if obj.type.table == "activity" else ""
            stored = rows_of(obj.type.table, where, o=obj.sf_object)
            expected = {r["Id"]: r for r in truth[obj.sf_object]}
            assert set(stored) == set(expected), obj.sf_object
            for sf_id, rec in expected.items():
                assert_mapped(stored[sf_id], rec, obj.synced, f"{obj.sf_object} {sf_id}")
        people = [dict(r) for r in conn.execute(sa.text(
            "SELECT * FROM person WHERE NOT sfdc_is_deleted")).mappings()]
    by_contact = {p["sfdc_contact_id"]: p for p in people if p["sfdc_contact_id"]}
    by_lead = {p["sfdc_lead_id"]: p for p in people if p["sfdc_type"] == "Lead"}
    contacts = {r["Id"]: r for r in truth["Contact"]}
    open_leads = {i: r for i, r in leads.items() if not r["IsConverted"]}
    assert set(by_contact) == set(contacts)
    assert set(by_lead) == set(open_leads)
    for cid, rec in contacts.items():
        assert_mapped(by_contact[cid], rec, ctx.catalog.object("Contact").synced, cid)
    for lid, rec in open_leads.items():
        assert_mapped(by_lead[lid], rec, ctx.catalog.object("Lead").synced, lid)
    engine.dispose()

    records = sum(len(truth[o.sf_object]) for o in ctx.catalog.ordered())
    changed = sum(len(v) for k in ("created", "updated", "deleted") for v in activity[k].values())
    print(f"\nstandard:50000 org ({records:,} live records synced): initial copy (admin start) "
          f"{copy_seconds:.1f} s; API calls of an incremental DAG cycle right after the copy "
          f"{after_copy}, 10 minutes later {ten_minutes_later}, 20 minutes later "
          f"{twenty_minutes_later}; with {changed} simulated "
          f"changes {busy_calls}; with one update and one new person to push {push_calls}")

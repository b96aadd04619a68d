"""The sync on a CeleryExecutor deployment with two workers: what issue 11 asks of "Celery".

A real Airflow stack (tests/airflow_stack.py with ``executor="CeleryExecutor"``: api-server,
scheduler, dag-processor and two Celery workers, ``worker-1`` and ``worker-2``, on a Redis broker
and a PostgreSQL metadata database) runs the project's three sync DAGs against the Salesforce
emulator (a subprocess, demo org) and a **PostgreSQL** marketing database (a fresh throwaway one).

* **Configuration without a shared disk:** the sync's configuration (the demo org's custom objects
  and its "do not sync" filter) exists only as the Airflow Variable ``sfsync_config``, created
  over REST; no component has ``SFSYNC_CONFIG``. The custom objects' tables filling up, and the
  filtered people staying out, prove every worker read it.
* **Concurrent runs:** unpausing the initial-copy DAG starts its scheduled run (the last
  month) while the test triggers the whole copy: both prepare the empty database at once (org
  lock, bookkeeping, schema, describes) and copy the same records. The second incremental cycle
  and a sync now of the same people run together too. Database locks keep them apart
  (``store.engine.lock_schema`` / ``lock_table``): every run must succeed at its first try.
* **Two incremental cycles with changes on both sides:** Salesforce through the emulator's
  control API (leads created, a lead's and a contact's title changed), the marketing database
  through plain SQL (a title changed, a new person inserted). The incremental DAG is paused
  until the copy is done; unpausing it starts the first cycle, the second is triggered with a
  sync now of the people edited for it (which reads them back after the push).
* **Both workers:** the task instances of one run name both workers as their host.
* **Truth:** in the end the marketing database equals the emulator's truth (``/export``) under the
  catalog's mapping: every synced object row for row and field for field, one person per human.

Kept short (the suite has 20 minutes): one stack, the demo org, 2 task slots per worker.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from urllib.parse import urlparse

import pytest
import requests
import sqlalchemy as sa
import yaml

from include.salesforce_emulator.demo import demo_sync_settings
from include.salesforce_emulator.process import start_emulator
from tests.airflow_stack import ROOT, AirflowStack

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

INITIAL, INCREMENTAL, SYNC_NOW = ("salesforce_initial_sync", "salesforce_incremental_sync",
                                  "salesforce_sync_now")
# What every sync task imports: each worker imports it once, before it forks (``[celery] imports``).
PRELOAD = ["include.sfsync.pipeline", "include.sfsync.airflow_glue", "sfsync_operators",
           "sfsync_console"]
WORKERS = {"worker-1", "worker-2"}
REDIS_URL = os.environ.get("SFSYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _redis_or_skip() -> None:
    url = urlparse(REDIS_URL)
    try:
        with socket.create_connection((url.hostname, url.port or 6379), timeout=3) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        answer = repr(exc).encode()
    if not answer.startswith(b"+PONG"):
        message = f"Redis at {REDIS_URL} does not answer PING ({answer!r})"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: the Celery test must run, not skip)", pytrace=False)
        pytest.skip(f"{message} (start redis-server on 127.0.0.1:6379)")


class Org:
    """The emulator's control API: changes "in Salesforce" and its truth."""

    def __init__(self, info: dict):
        self.url, self.ca = info["control_url"], info["ca_bundle"]
        self.session = requests.Session()

    def call(self, method: str, path: str, **kwargs):
        resp = self.session.request(method, self.url + path, timeout=30, verify=self.ca, **kwargs)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def create(self, sobject: str, **values) -> str:
        return self.call("POST", f"/records/{sobject}", json={"records": [values]})["ids"][0]

    def update(self, sobject: str, record_id: str, **values) -> None:
        self.call("PATCH", f"/records/{sobject}/{record_id}", json={"values": values})

    def truth(self) -> dict[str, list[dict]]:
        return self.call("GET", "/export")


def _connections(info: dict, marketing_url: str) -> dict[str, str]:
    db = urlparse(marketing_url)
    return {
        "AIRFLOW_CONN_SALESFORCE_DEFAULT": json.dumps({
            "conn_type": "salesforce", "login": info["username"], "password": info["password"],
            "extra": {"security_token": info["security_token"], "domain": info["login_domain"],
                      "version": "59.0"}}),
        "AIRFLOW_CONN_MARKETING_DB": json.dumps({
            "conn_type": "postgres", "host": db.hostname, "port": db.port or 5432,
            "login": db.username or "postgres", "password": db.password or "",
            "schema": db.path.lstrip("/")}),
        "REQUESTS_CA_BUNDLE": info["ca_bundle"],
    }


def _live_lead(conn, offset: int = 0):
    return conn.execute(sa.text(
        "SELECT id, sfdc_lead_id FROM person WHERE sfdc_type = 'Lead' AND sfdc_contact_id IS NULL "
        "AND NOT sfdc_is_deleted AND email IS NOT NULL ORDER BY id LIMIT 1 OFFSET :o"),
        {"o": offset}).one()


def test_celery_two_workers_copy_cycles_and_sync_now_equal_the_truth(
        tmp_path, postgres_url, airflow_metadata_url):
    from include.sfsync.store.engine import create_engine

    _redis_or_skip()
    started = time.monotonic()
    settings = {**demo_sync_settings(), "bulk_poll_seconds": 0}
    dags = tmp_path / "dags"
    dags.mkdir()
    for dag_id in (INITIAL, INCREMENTAL, SYNC_NOW):
        shutil.copy(ROOT / "dags" / f"{dag_id}.py", dags)
    with start_emulator(data_dir=tmp_path / "emu", seed="demo") as emu:
        org = Org(emu.info)
        engine = create_engine(postgres_url)
        env = {**_connections(emu.info, postgres_url), "PYTHONPATH": str(ROOT),
               "SFSYNC_CONFIG": str(tmp_path / "not-on-this-worker.yaml"),  # the Variable wins
               "SFSYNC_INCREMENTAL_MINUTES": "60",  # one scheduled cycle: at the unpause
               "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
               # the DAG files do not change: parse them once, keep the 2 cores for the tasks
               "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600"}
        with AirflowStack(dags_folder=dags, home=tmp_path / "home", env=env,
                          executor="CeleryExecutor", celery_workers=2, worker_concurrency=2,
                          broker_url=REDIS_URL, celery_imports=PRELOAD,
                          metadata_url=airflow_metadata_url,
                          variables={"sfsync_config": yaml.safe_dump(settings)},
                          pools={"salesforce_api": 2, "salesforce_push": 1},
                          dag_ids=[INITIAL, INCREMENTAL, SYNC_NOW],
                          plugins_folder=ROOT / "plugins", startup_timeout=150) as stack:
            up = time.monotonic()
            runs: dict[str, tuple[str, str]] = {}  # label -> (dag_id, run_id)

            def finish(*labels: str, timeout: float = 150) -> None:
                for label in labels:
                    dag_id, run_id = runs[label]
                    [run] = stack.wait_runs(dag_id, run_ids=[run_id], timeout=timeout)
                    tis = stack.task_instances(dag_id, run_id)
                    retried = [(t["task_id"], t["map_index"], t["try_number"]) for t in tis
                               if (t["try_number"] or 0) > 1]
                    assert run["state"] == "success" and not retried, (
                        label, run["state"], retried,
                        [(t["task_id"], t["map_index"], t["state"], t["hostname"]) for t in tis
                         if t["state"] != "success"], stack.logs(60))

            # A fresh api-server builds its Execution API on the first request (~4 s, more under
            # load: the first task's call times out and is retried). Pay it up front.
            stack.session.get(f"{stack.base_url}/execution/health", timeout=60).raise_for_status()

            # 1. The initial copy. Unpausing its DAG starts its scheduled run (the last complete
            # month, no catchup) and the manual run (everything) starts with it: two runs prepare
            # the empty database at once and copy the same objects.
            stack.unpause(INITIAL)
            runs["copy"] = (INITIAL, stack.trigger(INITIAL))
            [month] = stack.wait_runs(INITIAL, run_type="scheduled", count=1, timeout=30,
                                      states={"queued", "running", "success", "failed"})
            runs["copy (month)"] = (INITIAL, month["dag_run_id"])
            finish("copy", "copy (month)", timeout=240)
            copied = time.monotonic()
            print(f"\ncelery: stack up {up - started:.1f} s, copy {copied - up:.1f} s")

            # 2. Changes on both sides, then the first cycle (the scheduled one, at the unpause).
            with engine.begin() as conn:
                edited = _live_lead(conn)
                conn.execute(sa.text("UPDATE person SET title = 'Marketing Edit 1' WHERE id = :i"),
                             {"i": edited.id})
                conn.execute(sa.text(
                    "INSERT INTO person (email, last_name, company, sync_to_salesforce) VALUES "
                    "('celery.cycle1@example.org', 'Worker', 'Two Workers GmbH', true)"))
                contact_id = conn.execute(sa.text(
                    "SELECT sfdc_contact_id FROM person WHERE sfdc_type = 'Contact' AND NOT "
                    "sfdc_is_deleted AND sfdc_lead_id IS NULL ORDER BY id LIMIT 1")).scalar()
                other = _live_lead(conn, offset=5)
            org.update("Lead", other.sfdc_lead_id, Title="Salesforce Edit 1")
            org.update("Contact", contact_id, Title="Salesforce Contact Edit")
            org.create("Lead", LastName="Celery", FirstName="Cycle", Company="Broker Inc",
                       Email="celery.sf1@example.org")
            stack.unpause(INCREMENTAL)
            [first] = stack.wait_runs(INCREMENTAL, run_type="scheduled", count=1, timeout=30,
                                      states={"queued", "running", "success", "failed"})
            runs["cycle 1"] = (INCREMENTAL, first["dag_run_id"])
            finish("cycle 1")

            # 3. Changes on both sides again; the second cycle and a sync now of the two people
            # edited in the marketing database, at the same time. Whichever pushes them, the sync
            # now reads them back: what Salesforce stamped on them is in the database at the end.
            with engine.begin() as conn:
                third = _live_lead(conn, offset=10)
                conn.execute(sa.text("UPDATE person SET title = 'Marketing Edit 2' WHERE id = :i"),
                             {"i": third.id})
                now_id = conn.execute(sa.text(
                    "INSERT INTO person (email, last_name, company, sync_to_salesforce) VALUES "
                    "('celery.now@example.org', 'Nowak', 'Celery Now Ltd', true) RETURNING id")
                ).scalar()
            org.update("Lead", _live_lead_id(engine, offset=15), Title="Salesforce Edit 2")
            org.create("Lead", LastName="Redis", Company="Queue Ltd",
                       Email="celery.sf2@example.org")
            stack.unpause(SYNC_NOW)
            runs["cycle 2"] = (INCREMENTAL, stack.trigger(INCREMENTAL))
            runs["sync now"] = (SYNC_NOW, stack.trigger(
                SYNC_NOW, conf={"person_ids": [third.id, now_id]}))
            finish("cycle 2", "sync now")
            done = time.monotonic()
            hosts = {label: {(t["task_id"], t["map_index"]): t["hostname"]
                             for t in stack.task_instances(dag_id, run_id) if t["hostname"]}
                     for label, (dag_id, run_id) in runs.items()}

        truth = org.truth()
        print(f"\ncelery: stack up {up - started:.1f} s, copy {copied - up:.1f} s, "
              f"cycles and sync now {done - copied:.1f} s, total "
              f"{time.monotonic() - started:.1f} s; hosts per run: "
              + "; ".join(f"{label} {sorted(set(h.values()))}" for label, h in hosts.items()))

        # Tasks of one run ran on both workers (and every task on one of them).
        assert all(set(h.values()) <= WORKERS for h in hosts.values()), hosts
        assert set(hosts["copy"].values()) == WORKERS, hosts["copy"]
        assert set(hosts["cycle 2"].values()) == WORKERS, hosts["cycle 2"]

        # The changes of both sides arrived on the other side.
        leads = {r["Id"]: r for r in truth["Lead"]}
        emails = {(r["Email"] or "").lower(): r for r in truth["Lead"]}
        assert leads[edited.sfdc_lead_id]["Title"] == "Marketing Edit 1"
        assert leads[third.sfdc_lead_id]["Title"] == "Marketing Edit 2"
        assert {"celery.now@example.org", "celery.cycle1@example.org"} <= set(emails)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT title FROM person WHERE sfdc_lead_id = :i"),
                                {"i": other.sfdc_lead_id}).scalar() == "Salesforce Edit 1"
            assert conn.execute(sa.text(
                "SELECT count(*) FROM person WHERE email IN ('celery.sf1@example.org', "
                "'celery.sf2@example.org') AND sfdc_lead_id IS NOT NULL")).scalar() == 2
            pending = conn.execute(sa.text("SELECT count(*) FROM sfsync_outbox")).scalar()
        assert pending == 0  # every local change reached Salesforce
        _assert_equals_truth(engine, settings, truth)
        engine.dispose()


def _live_lead_id(engine, offset: int) -> str:
    with engine.connect() as conn:
        return _live_lead(conn, offset).sfdc_lead_id


def _assert_equals_truth(engine, settings: dict, truth: dict[str, list[dict]]) -> None:
    """The marketing database equals the org's truth under the catalog's mapping: every synced
    object's live records one row each, field for field; people one row per human (a converted
    lead on its contact's row), the filtered ones left out."""
    from include.sfsync.config import load_config
    from include.sfsync.context import open_context
    from include.sfsync.objects import PEOPLE
    from include.sfsync.values import parse_value, same

    ctx = open_context(load_config(overrides=settings), engine=engine)
    diffs: list[str] = []

    def compare(where: str, row, rec: dict, fields) -> None:
        for f in fields:
            if f.sf_field in rec and f.column in row._mapping:
                theirs = parse_value(f.sf_type, rec[f.sf_field])
                if not same(row._mapping[f.column], theirs):
                    diffs.append(f"{where} {f.column}: {row._mapping[f.column]!r} != {theirs!r}")

    with engine.connect() as conn:
        rows = {name: conn.execute(sa.select(t)).all() for name, t in ctx.tables.items()}
    custom = [o.sf_object for o in ctx.catalog.ordered() if o.type.custom]
    assert sorted(custom) == sorted(settings["custom_objects"]), custom  # the Variable's
    for obj in ctx.catalog.ordered():
        if obj.sf_object in PEOPLE:
            continue
        mine = {r.sfdc_id: r for r in rows[obj.type.table]
                if r._mapping.get("sfdc_object", obj.sf_object) == obj.sf_object
                and not r.sfdc_is_deleted}
        theirs = {r["Id"]: r for r in truth[obj.sf_object]}
        assert theirs, obj.sf_object
        if set(mine) != set(theirs):
            diffs.append(f"{obj.sf_object}: missing {sorted(set(theirs) - set(mine))[:5]}, "
                         f"extra {sorted(set(mine) - set(theirs))[:5]}")
            continue
        for sf_id, rec in theirs.items():
            compare(f"{obj.sf_object} {sf_id}", mine[sf_id], rec, obj.synced)

    lead_obj, contact_obj = ctx.catalog.object("Lead"), ctx.catalog.object("Contact")
    lead_only = {c for c, col in ctx.catalog.tables["person"].items()
                 if all(s.startswith("Lead.") for s in col.sources)}
    people = [p for p in rows["person"] if not p.sfdc_is_deleted]
    by_lead = {p.sfdc_lead_id: p for p in people if p.sfdc_lead_id}
    by_contact = {p.sfdc_contact_id: p for p in people if p.sfdc_contact_id}
    humans = 0
    for sobject, obj, by_id in (("Contact", contact_obj, by_contact), ("Lead", lead_obj, by_lead)):
        for rec in truth[sobject]:
            row = by_id.get(rec["Id"])
            if rec.get("Do_Not_Sync_Marketing__c"):
                if row is not None:
                    diffs.append(f"{sobject} {rec['Id']}: filtered out, but has person {row.id}")
                continue
            if row is None:
                diffs.append(f"{sobject} {rec['Id']} ({rec.get('Email')}): no person row")
                continue
            if sobject == "Lead" and rec["IsConverted"]:
                compare(f"converted Lead {rec['Id']}", row, rec,
                        [f for f in obj.synced if f.column in lead_only])
                continue
            humans += 1
            compare(f"{sobject} {rec['Id']}", row, rec, obj.synced)
    if len(people) != humans:
        diffs.append(f"{len(people)} live person rows for {humans} people in Salesforce")
    assert not diffs, f"{len(diffs)} differences:\n" + "\n".join(diffs[:40])

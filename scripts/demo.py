#!/usr/bin/env python
"""`make demo`: the Salesforce emulator with a demo org, synced into a SQLite marketing database
by the real DAGs (``dag.test()`` against a local Airflow metadata database).

1. starts ``python -m include.salesforce_emulator`` (EMULATOR_SEED=demo, a free EMULATOR_PORT,
   EMULATOR_DATA=<project root>/.emulator-demo), re-seeds the demo org and waits for its
   ``SALESFORCE_EMULATOR {json}`` line;
2. sets up a local Airflow in ``.airflow-demo/`` (git-ignored): a SQLite metadata database,
   migrated on the first run only, ``dags/`` and ``plugins/`` of this project, no examples;
   points the ``salesforce_default`` connection at the emulator
   (``AIRFLOW_CONN_SALESFORCE_DEFAULT``, trusting its CA through ``REQUESTS_CA_BUNDLE``) and
   ``marketing_db`` at ``.data/demo-marketing.db`` (recreated each time); the sync's
   configuration is the demo org's (``demo_sync_settings()``, written to
   ``.airflow-demo/sfsync.yaml``, ``SFSYNC_CONFIG``);
3. runs the DAGs from ``dags/`` with ``dag.test()``, each to its end, and prints what each DAG
   run returned (its tasks' XCom), naming the DAG run and its state:
   ``salesforce_org_summary`` (record counts, API usage), ``salesforce_initial_sync`` (triggered
   with objects ``all``: New / Updated / Deleted / Skipped per object, API calls), then
   ``salesforce_incremental_sync`` twice with simulated sales activity in between (the same
   tables per cycle);
4. edits the marketing database with plain SQL (a lead's title and state code, a new person)
   and runs ``salesforce_incremental_sync`` a third time: its push tasks carry both to
   Salesforce, which the demo shows by reading the emulator's records;
5. stops the emulator.

A DAG run that does not end in ``success`` stops the demo: it prints the failed tasks and exits
non-zero. Task logs go to ``.airflow-demo/demo-tasks.log``, not to the terminal. ``dag.test()``
ignores pools, so the ``salesforce_api`` / ``salesforce_push`` pools need not exist here.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import sqlite3
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from include.salesforce_emulator.process import EmulatorStartError, start_emulator  # noqa: E402

AIRFLOW_HOME = ROOT / ".airflow-demo"
METADATA_DB = AIRFLOW_HOME / "airflow.db"
TASK_LOG = AIRFLOW_HOME / "demo-tasks.log"
MARKETING_DB = ROOT / ".data" / "demo-marketing.db"
DAG_IDS = ("salesforce_org_summary", "salesforce_initial_sync", "salesforce_incremental_sync")
ACTIVITY = [{"creates": 12, "updates": 25, "deletes": 4, "conversions": 2, "rng_seed": 1},
            {"creates": 6, "updates": 15, "deletes": 2, "undeletes": 1, "merges": 1,
             "rng_seed": 2}]


class DemoFailed(RuntimeError):
    """A DAG run of the demo did not succeed (the message names the failed tasks)."""


def connection_json(info: dict) -> str:
    """The ``AIRFLOW_CONN_SALESFORCE_DEFAULT`` value for an emulator's ready-line info."""
    return json.dumps({
        "conn_type": "salesforce",
        "login": info["username"],
        "password": info["password"],
        "extra": {"security_token": info["security_token"], "domain": info["login_domain"],
                  "version": "59.0"},
    })


def airflow_environment() -> dict[str, str]:
    """The local demo Airflow: set before airflow is first imported (it reads them at import).
    Always these values, whatever the caller's environment says (e.g. the test suite's)."""
    return {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{METADATA_DB}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # fixed demo-only secrets (dag.test's in-process Execution API signs task tokens with the
        # JWT secret; >= 64 bytes avoids InsecureKeyLengthWarning)
        "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(b"sfsync-demo-fernet-key-32-bytes!").decode(),
        "AIRFLOW__API_AUTH__JWT_SECRET": "sfsync-demo-" + "x" * 64,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


def _reset_demo_org(info: dict) -> None:
    """Every demo starts from the same org: clock back to now, demo data re-seeded."""
    from datetime import UTC, datetime

    import requests

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for path, body in (("/clock", {"set": now, "frozen": False}), ("/seed", {"size": "demo"}),
                       ("/counters", None)):
        method = "DELETE" if body is None else "POST"
        requests.request(method, info["control_url"] + path, json=body, timeout=120,
                         params={"usage": "true"} if body is None else None).raise_for_status()


@contextlib.contextmanager
def logs_to_file():
    """While Airflow works, everything written to stdout and stderr (its log lines, the tasks'
    logs, warnings) goes to TASK_LOG, so the terminal shows the tables."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with TASK_LOG.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def migrate_metadata_db() -> str:
    """Migrate the metadata database once; later demos find it at the current revision."""
    from airflow.utils import db

    try:
        db.check_migrations(timeout=0)
        return "already migrated"
    except TimeoutError:
        pass
    started = time.monotonic()
    db.upgradedb()
    return f"migrated in {time.monotonic() - started:.1f} s"


def load_dags() -> dict:
    """The DAG objects from dags/, as the DAG processor parses them."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    if bag.import_errors:
        raise DemoFailed("DAG import errors:\n" + "\n".join(
            f"  {path}: {error}" for path, error in bag.import_errors.items()))
    return {dag_id: bag.get_dag(dag_id) for dag_id in DAG_IDS}


class DagRuns:
    """Runs DAGs with ``dag.test()`` and reads what their tasks returned."""

    def __init__(self, dags: dict):
        self.dags = dags
        self.runs: list = []

    def run(self, dag_id: str, **kwargs):
        print(f"Running DAG {dag_id} (dag.test) ...", end=" ", flush=True)
        started = time.monotonic()
        with logs_to_file():
            run = self.dags[dag_id].test(**kwargs)
        state = str(run.state)
        print(f"{state} in {time.monotonic() - started:.1f} s (run {run.run_id})", flush=True)
        self.runs.append(run)
        if state != "success":
            raise DemoFailed(self.failure(run))
        return run

    @staticmethod
    def failure(run) -> str:
        """What went wrong: the failed tasks, the others left undone, the sync's recorded cause."""
        def name(ti) -> str:
            return ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else "")

        tis = run.get_task_instances()
        failed = [f"{name(ti)} (try {ti.try_number})" for ti in tis if ti.state == "failed"]
        undone = [f"{name(ti)} ({ti.state})" for ti in tis
                  if ti.state not in ("success", "skipped", "failed")]
        lines = [f"DAG run {run.dag_id} {run.run_id} ended {run.state}",
                 f"  failed tasks: {', '.join(failed) or 'none'}"]
        if undone:
            lines.append(f"  not run: {', '.join(undone)}")
        if MARKETING_DB.exists():  # the sync records a run's cause of failure there
            with contextlib.suppress(sqlite3.Error), sqlite3.connect(MARKETING_DB) as db:
                cause = db.execute("SELECT message FROM sfsync_run WHERE run_key = ?",
                                   (f"{run.dag_id}:{run.run_id}",)).fetchone()
                if cause and cause[0]:
                    lines.append(f"  cause (sfsync_run): {cause[0]}")
        raised = re.findall(r"^[A-Za-z_][\w.]*(?:Error|Exception|Failed\w*): .+$",
                            TASK_LOG.read_text(errors="replace"), re.MULTILINE)
        if raised:
            lines.append(f"  last exception in the task log: {raised[-1]}")
        lines.append(f"  task logs: {TASK_LOG.relative_to(ROOT)}")
        return "\n".join(lines)

    @staticmethod
    def returned(run, task_id: str):
        """The return value (XCom) of one task of a DAG run."""
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            row = session.scalars(XComModel.get_many(
                run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id,
                key="return_value")).first()
            if row is None:
                raise DemoFailed(f"DAG run {run.dag_id} {run.run_id}: task {task_id} returned "
                                 "nothing")
            return XComModel.deserialize_value(row)

    def returned_by_group(self, run, group_id: str) -> dict:
        """The return values of the tasks of one task group of a DAG run, by task id."""
        return {ti.task_id: self.returned(run, ti.task_id) for ti in run.get_task_instances()
                if ti.task_id.startswith(group_id + ".")}

    @staticmethod
    def label(run) -> str:
        """The line under each table: which DAG run produced it."""
        return f"DAG run {run.dag_id} {run.run_id}: {run.state}"


def main() -> int:
    os.environ.update(airflow_environment())
    AIRFLOW_HOME.mkdir(exist_ok=True)
    data_dir = ROOT / ".emulator-demo"
    print(f"Starting the Salesforce emulator (seed=demo, data={data_dir}) ...", flush=True)
    try:
        emulator = start_emulator(data_dir=data_dir, seed="demo", timeout=60)
    except EmulatorStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    with emulator:
        info = emulator.info
        print(f"Emulator ready: {info['instance_url']} (login domain {info['login_domain']}, "
              f"user {info['username']})", flush=True)
        os.environ["REQUESTS_CA_BUNDLE"] = info["ca_bundle"]
        os.environ["AIRFLOW_CONN_SALESFORCE_DEFAULT"] = connection_json(info)
        _reset_demo_org(info)
        try:
            run_demo(info)
        except DemoFailed as exc:
            print(f"\nerror: {exc}", file=sys.stderr)
            return 1
        print("Next: `make test`, or `make airflow` for the UI (DAGs salesforce_initial_sync, "
              "salesforce_incremental_sync, salesforce_sync_now).")
    return 0


def run_demo(info: dict) -> None:
    import yaml

    from include.salesforce_emulator.demo import demo_sync_settings

    MARKETING_DB.parent.mkdir(exist_ok=True)
    for leftover in MARKETING_DB.parent.glob(MARKETING_DB.name + "*"):
        leftover.unlink()
    os.environ["AIRFLOW_CONN_MARKETING_DB"] = json.dumps({"conn_type": "sqlite",
                                                          "host": str(MARKETING_DB)})
    config = AIRFLOW_HOME / "sfsync.yaml"
    config.write_text(yaml.safe_dump({**demo_sync_settings(), "bulk_poll_seconds": 0}))
    os.environ["SFSYNC_CONFIG"] = str(config)

    TASK_LOG.write_bytes(b"")
    started = time.monotonic()
    with logs_to_file():
        migrated = migrate_metadata_db()
        dags = DagRuns(load_dags())
    print(f"Airflow in {AIRFLOW_HOME.relative_to(ROOT)}/: metadata DB {METADATA_DB.name} "
          f"{migrated}, DAGs parsed from dags/ ({time.monotonic() - started:.1f} s); their "
          f"logs go to {TASK_LOG.relative_to(ROOT)}", flush=True)

    from include.sfsync.org_summary import format_summary
    from include.sfsync.report import counts_table

    run = dags.run("salesforce_org_summary")
    print()
    print("Org summary")
    print(dags.label(run))
    print(format_summary(dags.returned(run, "summarize_org")))
    print()

    initial = dags.dags["salesforce_initial_sync"]
    run = dags.run("salesforce_initial_sync", run_conf={
        "objects": initial.params["objects"], "created_from": None, "created_to": None})
    copied = dags.returned(run, "finish")
    print()
    print(counts_table(copied["counts"], api_calls=copied["api_calls"],
                       title=f"Initial copy into {MARKETING_DB.relative_to(ROOT)}\n"
                             + dags.label(run)))
    print()

    for cycle, changes in enumerate(ACTIVITY, start=1):
        control(info, "/clock", {"advance_seconds": 300})
        touched = control(info, "/simulate", changes)
        control(info, "/clock", {"advance_seconds": 60})
        run = dags.run("salesforce_incremental_sync")
        result = dags.returned(run, "finish")
        made = ", ".join(f"{k} {v}" for k, v in changes.items() if k != "rng_seed")
        print()
        print(counts_table(result["counts"], api_calls=result["api_calls"],
                           title=f"Incremental cycle {cycle} (simulated sales activity: {made}; "
                                 f"{len(touched['merged'])} merge(s))\n" + dags.label(run)))
        print()

    show_push(info, dags)
    print()
    print("DAG runs (metadata DB " + str(METADATA_DB.relative_to(ROOT)) + "):")
    for run in dags.runs:
        print(f"  {run.dag_id:<28} {run.run_id:<48} {run.state}")
    print()


def control(info: dict, path: str, body: dict) -> dict:
    """A call to the emulator's control API (``/__emulator__/...``)."""
    import requests

    resp = requests.post(info["control_url"] + path, json=body, timeout=120)
    resp.raise_for_status()
    return resp.json()


def show_push(info: dict, dags: DagRuns) -> None:
    """A marketing-side edit in plain SQL reaching Salesforce at the next cycle."""
    import requests

    with sqlite3.connect(MARKETING_DB) as db:  # any client: the triggers capture it
        person_id, lead_id = db.execute(
            "SELECT id, sfdc_lead_id FROM person WHERE sfdc_type = 'Lead' AND sfdc_is_deleted = 0 "
            "ORDER BY id LIMIT 1").fetchone()
        db.execute("UPDATE person SET title = 'VP Marketing Ops', state = 'ca' WHERE id = ?",
                   (person_id,))
        db.execute("INSERT INTO person (email, first_name, last_name, sync_to_salesforce) "
                   "VALUES ('new.prospect@example.org', 'Nia', 'Prospect', 1)")
    control(info, "/clock", {"advance_seconds": 300})
    run = dags.run("salesforce_incremental_sync")
    calls = sum(step.get("api_calls", 0) for step in dags.returned_by_group(run, "push").values())
    with sqlite3.connect(MARKETING_DB) as db:
        new_lead = db.execute("SELECT sfdc_lead_id FROM person "
                              "WHERE email = 'new.prospect@example.org'").fetchone()[0]
    truth = requests.get(info["control_url"] + "/export?objects=Lead", timeout=60).json()["Lead"]
    leads = {r["Id"]: r for r in truth}
    lead, created = leads[lead_id], leads.get(new_lead or "")
    print()
    print(f"Push (marketing database -> Salesforce, cycle 3, {calls} API call(s)):")
    print(dags.label(run))
    print(f"  UPDATE person {person_id}: title, state='ca'  ->  Lead {lead_id}: "
          f"Title={lead['Title']!r}, State={lead['State']!r}")
    if created:
        print(f"  INSERT person new.prospect@example.org  ->  new Lead {new_lead}: "
              f"LastName={created['LastName']!r}, Company={created['Company']!r}")


if __name__ == "__main__":
    sys.exit(main())

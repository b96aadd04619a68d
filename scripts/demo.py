#!/usr/bin/env python
"""`make demo`: the Salesforce emulator with a demo org, synced into a SQLite marketing database.

1. starts ``python -m include.salesforce_emulator`` (EMULATOR_SEED=demo, a free EMULATOR_PORT,
   EMULATOR_DATA=<project root>/.emulator-demo), re-seeds the demo org and waits for its
   ``SALESFORCE_EMULATOR {json}`` line;
2. points Airflow's ``salesforce_default`` connection at it (``AIRFLOW_CONN_SALESFORCE_DEFAULT``),
   trusts its CA (``REQUESTS_CA_BUNDLE``) and ``marketing_db`` at ``.data/demo-marketing.db``;
3. prints the org summary (the ``salesforce_org_summary`` DAG's task, through the SalesforceHook);
4. runs the initial copy (the ``salesforce_initial_sync`` DAG's steps), then two incremental cycles
   (the ``salesforce_incremental_sync`` DAG's steps) with simulated sales activity in between,
   printing New / Updated / Deleted / Skipped per object and the API calls of each;
5. edits the marketing database with plain SQL (a lead's title and state code, a new person)
   and runs a third cycle: the push carries both to Salesforce, which it prints;
6. stops the emulator.

No Airflow metadata database is needed: connections come from the environment.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from include.salesforce_emulator.process import EmulatorStartError, start_emulator  # noqa: E402


def connection_json(info: dict) -> str:
    """The ``AIRFLOW_CONN_SALESFORCE_DEFAULT`` value for an emulator's ready-line info."""
    return json.dumps({
        "conn_type": "salesforce",
        "login": info["username"],
        "password": info["password"],
        "extra": {"security_token": info["security_token"], "domain": info["login_domain"],
                  "version": "59.0"},
    })


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


def main() -> int:
    # Airflow writes airflow.cfg into AIRFLOW_HOME on import; keep it inside the (git-ignored) project.
    os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
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

        from include.salesforce_emulator.demo import demo_sync_settings
        from include.sfsync.org_summary import SUMMARY_OBJECTS, format_summary, summarize

        summary = summarize(conn_id="salesforce_default", objects=SUMMARY_OBJECTS + tuple(
            demo_sync_settings()["custom_objects"]))
        print()
        print(format_summary(summary))
        print()
        run_sync_demo(info)
        print("Next: `make test`, or `make airflow` for the UI (DAGs salesforce_initial_sync, "
              "salesforce_incremental_sync, salesforce_sync_now).")
    return 0


def run_sync_demo(info: dict) -> None:
    import requests

    from include.sfsync import pipeline
    from include.sfsync.admin import counts_table
    from include.sfsync.config import load_config
    from include.sfsync.context import open_context
    from include.sfsync.objects import object_names

    def control(path: str, body: dict) -> dict:
        resp = requests.post(info["control_url"] + path, json=body, timeout=120)
        resp.raise_for_status()
        return resp.json()

    database = ROOT / ".data" / "demo-marketing.db"
    database.parent.mkdir(exist_ok=True)
    for leftover in database.parent.glob(database.name + "*"):
        leftover.unlink()
    os.environ["AIRFLOW_CONN_MARKETING_DB"] = json.dumps({"conn_type": "sqlite",
                                                          "host": str(database)})
    from include.salesforce_emulator.demo import demo_sync_settings

    config = load_config(overrides={**demo_sync_settings(), "bulk_poll_seconds": 0})
    objects = pipeline.prepare_copy("demo:initial", object_names(config.custom_objects),
                                    config=config)
    ctx = open_context(config)
    for name in objects:
        pipeline.copy_object("demo:initial", name, None, None, ctx)
    summary = pipeline.finish_copy("demo:initial", objects, ctx)
    print(counts_table(summary["counts"], title="Initial copy into " + str(database.relative_to(ROOT)),
                       api_calls=summary["api_calls"]))
    activity = [{"creates": 12, "updates": 25, "deletes": 4, "conversions": 2, "rng_seed": 1},
                {"creates": 6, "updates": 15, "deletes": 2, "undeletes": 1, "merges": 1,
                 "rng_seed": 2}]
    for cycle, changes in enumerate(activity, start=1):
        control("/clock", {"advance_seconds": 300})
        touched = control("/simulate", changes)
        control("/clock", {"advance_seconds": 60})
        result = pipeline.run_cycle(f"demo:cycle{cycle}", config=config)
        made = ", ".join(f"{k} {v}" for k, v in changes.items() if k != "rng_seed")
        print()
        print(counts_table(result["counts"], api_calls=result["api_calls"],
                           title=f"Incremental cycle {cycle} (simulated sales activity: {made}; "
                                 f"{len(touched['merged'])} merge(s))"))
    print()
    show_push(info, database, config)
    print()


def show_push(info: dict, database: Path, config) -> None:
    """A marketing-side edit in plain SQL reaching Salesforce at the next cycle."""
    import sqlite3

    import requests

    from include.sfsync import pipeline

    with sqlite3.connect(database) as db:  # any client: the triggers capture it
        person_id, lead_id = db.execute(
            "SELECT id, sfdc_lead_id FROM person WHERE sfdc_type = 'Lead' AND sfdc_is_deleted = 0 "
            "ORDER BY id LIMIT 1").fetchone()
        db.execute("UPDATE person SET title = 'VP Marketing Ops', state = 'ca' WHERE id = ?",
                   (person_id,))
        db.execute("INSERT INTO person (email, first_name, last_name) "
                   "VALUES ('new.prospect@example.org', 'Nia', 'Prospect')")
    requests.post(info["control_url"] + "/clock", json={"advance_seconds": 300}, timeout=60)
    result = pipeline.run_cycle("demo:cycle3", config=config)
    calls = sum(step.get("api_calls", 0) for step in result["push"].values())
    with sqlite3.connect(database) as db:
        new_lead = db.execute("SELECT sfdc_lead_id FROM person "
                              "WHERE email = 'new.prospect@example.org'").fetchone()[0]
    truth = requests.get(info["control_url"] + "/export?objects=Lead", timeout=60).json()["Lead"]
    leads = {r["Id"]: r for r in truth}
    lead, created = leads[lead_id], leads.get(new_lead or "")
    print(f"Push (marketing database -> Salesforce, cycle 3, {calls} API call(s)):")
    print(f"  UPDATE person {person_id}: title, state='ca'  ->  Lead {lead_id}: "
          f"Title={lead['Title']!r}, State={lead['State']!r}")
    if created:
        print(f"  INSERT person new.prospect@example.org  ->  new Lead {new_lead}: "
              f"LastName={created['LastName']!r}, Company={created['Company']!r}")


if __name__ == "__main__":
    sys.exit(main())

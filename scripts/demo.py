#!/usr/bin/env python
"""`make demo`: start the Salesforce emulator with demo data and print an org summary through Airflow.

1. starts ``python -m include.salesforce_emulator`` (EMULATOR_SEED=demo, a free EMULATOR_PORT,
   EMULATOR_DATA=<project root>/.emulator-demo) and waits for its ``SALESFORCE_EMULATOR {json}`` line;
2. points Airflow's ``salesforce_default`` connection at it (``AIRFLOW_CONN_SALESFORCE_DEFAULT``) and
   trusts its CA (``REQUESTS_CA_BUNDLE``);
3. runs ``include.sfsync.org_summary.summarize`` (the task of the ``salesforce_org_summary`` DAG) through
   the Airflow ``SalesforceHook`` and prints the table;
4. stops the emulator.

No Airflow metadata database is needed: the connection comes from the environment.
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

        from include.sfsync.org_summary import format_summary, summarize

        summary = summarize(conn_id="salesforce_default")
        print()
        print(format_summary(summary))
        print()
        print("This is what the `salesforce_org_summary` DAG logs. "
              "Next: `make test`, or `make airflow` for the UI.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

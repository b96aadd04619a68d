"""
### Salesforce sync now

The reference system's "Sync with SFDC" step: push a few people to Salesforce **now** and read
them back, instead of waiting for the next incremental cycle.

* **Input (Params form, or `conf` through the REST API):** `person_ids` (the `person.id` values)
  and/or `emails` (case-insensitive). Unknown ones are listed in the result; an empty request,
  or one that matches nobody, fails at once (no retry) and says so.
* **Outcome:** a record Salesforce rejects fails the run (no retry) with Salesforce's code and
  message; the details are in `sfsync_error`, and the other people were synced.
* **What it does:** folds their captured changes, creates those not yet in Salesforce (dedupe on
  write: linked to an existing lead or contact with the same e-mail, else a new lead), pushes
  their pending changes and campaign memberships (failed or quarantined ones too: an explicit
  request retries them), then re-reads their leads and contacts and loads them. The incremental
  cursors are left alone.
* **Concurrency:** its task shares the one-slot `salesforce_push` pool with the incremental
  DAG's push tasks, so two pushes never interleave.
* **From a script:**

```bash
TOKEN=$(curl -s -X POST http://localhost:8080/auth/token -H 'Content-Type: application/json' \\
  -d '{"username": "admin", "password": "admin"}' | jq -r .access_token)
curl -X POST http://localhost:8080/api/v2/dags/salesforce_sync_now/dagRuns \\
  -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
  -d '{"logical_date": null, "conf": {"emails": ["ann@example.org"], "person_ids": [42]}}'
```
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from include.sfsync.airflow_glue import announce_retry, default_args, mark_run_failed


@task(pool="salesforce_push")
@announce_retry
def sync_people() -> dict:
    """Push the requested people (and their memberships) and read them back."""
    from include.sfsync.airflow_glue import fail_fast, run_key_of
    from include.sfsync.pipeline import sync_now

    context = get_current_context()
    params, run_key = context["params"], run_key_of(context)
    return fail_fast(lambda: sync_now(run_key, person_ids=params["person_ids"],
                                      emails=params["emails"]), run_key)


@dag(
    dag_id="salesforce_sync_now",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=4,
    tags=["sfsync", "salesforce", "push"],
    doc_md=__doc__,
    on_failure_callback=mark_run_failed,
    params={
        "person_ids": Param([], type="array", items={"type": "integer"},
                            description="person.id values to sync now"),
        "emails": Param([], type="array", items={"type": "string"},
                        description="e-mail addresses of people to sync now"),
    },
    default_args=default_args(retries=2, retry_delay=timedelta(seconds=2),
                              max_retry_delay=timedelta(seconds=30)),
)
def salesforce_sync_now():
    sync_people()


salesforce_sync_now()

"""
### Salesforce org summary

Counts the records of every object sfsync syncs (leads, contacts, accounts, users, opportunities
and their contact roles, campaigns and members, tasks, events, and the custom objects the
configuration names under `custom_objects`) and reads the org's daily API usage, through the
`salesforce_default` connection.

* **Direction:** read-only (Salesforce → task log / XCom); nothing is written anywhere.
* **When:** manual trigger only (`schedule=None`). Use it to check a new connection, or to size a
  first full copy before starting it.
* **Output:** the task log shows a table; the XCom return value is
  `{"objects": {name: count | null}, "api_usage": {"used": n, "max": n}}`. A `null` count means the
  sync user cannot see that object.
* **Retries:** 2, with exponential backoff; a failed login fails at once (retrying bad credentials
  only burns login attempts).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from airflow.sdk import dag, task

from include.sfsync.airflow_glue import announce_retry, default_args, fail_fast
from include.sfsync.org_summary import SUMMARY_OBJECTS, format_summary, summarize

log = logging.getLogger("airflow.task")


@dag(
    dag_id="salesforce_org_summary",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["sfsync", "salesforce"],
    doc_md=__doc__,
    # the task logs its own table (Object | Records, API usage)
    default_args=default_args(retries=2, retry_delay=timedelta(seconds=30),
                              max_retry_delay=timedelta(minutes=5), result_table=False),
)
def salesforce_org_summary():
    @task(pool="salesforce_api")
    @announce_retry
    def summarize_org() -> dict:
        """Count records per object and read API usage; log a table and return the counts."""
        # A refused login fails at once through fail_fast, not an ExceptionRetryPolicy: its
        # RetryRule imports string exception paths (simple-salesforce) at parse time.
        from include.sfsync.config import load_config

        summary = fail_fast(lambda: summarize(
            conn_id="salesforce_default",
            objects=SUMMARY_OBJECTS + tuple(load_config().custom_objects)))
        log.info("Salesforce org summary:\n%s", format_summary(summary))
        return summary

    summarize_org()


salesforce_org_summary()

"""
### Salesforce incremental sync

Every few minutes (`SFSYNC_INCREMENTAL_MINUTES`, default 5), moves what changed in Salesforce
into the marketing database (`marketing_db`): users, accounts, people (leads and contacts, one
`person` row per human), campaigns, campaign members, opportunities, contact roles, activities
(tasks and events) and the enabled custom objects, in that order.

* **Cost:** `prepare` describes every object (which also catches new fields) and asks the
  replication API what changed, both in the same composite calls (two for up to 12 objects);
  records already loaded inside the overlap window are not news. An idle cycle stops there:
  **2 API calls**. Objects with changes are queried together, five per composite call; large
  change sets go through Bulk API 2.0.
* **Correctness:** cursor on `SystemModstamp` with an overlap window and an `Id` tiebreak, held
  back to Salesforce's `latestDateCovered` (late-committing transactions), `queryAll` for deletes
  and merges, the deleted endpoint for purged records. Loads never overwrite a newer version.
* **Retries:** every task is idempotent. Extracts land in durable staging (`sfsync_stage`), so a
  retried filter or load never calls Salesforce. Exponential backoff; the `salesforce_api` pool
  bounds concurrent API use.
* **First run:** an object without a cursor is copied in full (Bulk above `bulk_threshold`), so
  history is never skipped; `salesforce_initial_sync` does the same by CreatedDate windows.
* **Maintenance, when due:** re-copy fields newly mapped (config change, or a new field in
  Salesforce), refresh opted-in formula fields (`formula_fields`), reconcile id sets
  (`reconcile_hours`) to catch records purged beyond the deleted endpoint's window. Every
  cycle, without an API call: bookkeeping older than `retention.days` (counts:
  `retention.count_days`) is pruned in small batches, and pending changes older than
  `retention.stale_after_hours` are flagged stale (`admin status` lists them; still pushed).
* **Push (two-way objects), after the pulls:** changes any client wrote to `person`,
  `campaign`, `campaign_member` (captured by database triggers) and `marketing_activity` rows go
  to Salesforce: dedupe on write first (link by e-mail to an existing lead or contact, create a
  lead only when nothing matches), then updates, campaigns, members, activities as Tasks.
  Conflicts follow `conflicts` (leads: marketing wins; contacts: Salesforce wins) and land in
  `sfsync_conflict`; rejected records in `sfsync_error`, quarantined after repeated failures.
  In a cycle whose changes Salesforce rejected, the last task, `rejections`, ends *skipped*:
  its log lists them and says why (Airflow 3.3 lets no task set its run's note); the run
  itself succeeds.
  Nothing to push: **0 API calls**.
* **Status:** `sfsync_run` (running / success / failed), `sfsync_count` (New / Updated / Deleted /
  Skipped / Failed per object), `sfsync_error`, `sfsync_duplicate`.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta

from airflow.sdk import chain, dag, get_current_context, task, task_group
from sfsync_operators import (
    DedupeCheckOperator,
    DedupeOnWriteOperator,
    FieldFilterOperator,
    SalesforcePushOperator,
)

from include.sfsync.airflow_glue import announce_retry, default_args, mark_run_failed
from include.sfsync.objects import standard_groups
from include.sfsync.steps import UPDATE_STEPS

# Parse time, no I/O: only the DAG processor's value sets the schedule (it serializes the DAG);
# a worker parses this file for the task code, whatever its value (README, "Celery").
INTERVAL_MINUTES = int(os.environ.get("SFSYNC_INCREMENTAL_MINUTES", "5"))
# Object groups in dependency order; custom objects are mapped at run time from the config.
GROUPS = standard_groups()


@task(pool="salesforce_api")
@announce_retry
def prepare() -> dict:
    """Org lock, describe (schema drift), schema, change probe; plans every object."""
    from include.sfsync.airflow_glue import fail_fast, run_key_of
    from include.sfsync.pipeline import prepare as prepare_run

    run_key = run_key_of(get_current_context())
    return fail_fast(lambda: prepare_run(run_key), run_key)


@task(pool="salesforce_api", map_index_template="{{ task.op_kwargs['sf_object'] }}")
@announce_retry
def extract(sf_object: str) -> dict:
    """Stage the changes the probe could not fetch (more pages, a Bulk job); no-op when idle."""
    from include.sfsync.airflow_glue import fail_fast, run_key_of
    from include.sfsync.pipeline import extract_object

    run_key = run_key_of(get_current_context())
    return fail_fast(lambda: extract_object(run_key, sf_object), run_key)


@task(map_index_template="{{ task.op_kwargs['sf_object'] }}")
@announce_retry
def load(sf_object: str) -> dict:
    """Load the filtered staging, advancing the object's cursor in the same transaction."""
    from include.sfsync.airflow_glue import run_key_of
    from include.sfsync.pipeline import load_object

    return load_object(run_key_of(get_current_context()), sf_object)


@task
@announce_retry
def enabled_custom_objects(plan: dict) -> list[str]:
    """The custom objects the configuration enables (mapped below, one task each)."""
    return plan["custom_objects"]


@task(pool="salesforce_api", trigger_rule="none_failed")
@announce_retry
def maintain() -> dict:
    """When due: re-copy newly mapped fields, refresh opted-in formulas, reconcile id sets;
    then retention: prune old bookkeeping, flag stale pending changes."""
    from include.sfsync.airflow_glue import fail_fast, run_key_of
    from include.sfsync.pipeline import maintain as maintain_run

    run_key = run_key_of(get_current_context())
    return fail_fast(lambda: maintain_run(run_key), run_key)


@task(trigger_rule="none_failed")
@announce_retry
def finish() -> dict:
    """Link people that arrived after their rows, record the run, clean the staging."""
    from include.sfsync.airflow_glue import run_key_of
    from include.sfsync.pipeline import finish as finish_run

    return finish_run(run_key_of(get_current_context()))


@task(trigger_rule="all_done")
@announce_retry
def rejections() -> None:
    """Skipped when Salesforce rejected changes of this run: its log lists each one and says
    why (the run still succeeds: it synced; the changes wait in the outbox)."""
    from include.sfsync.airflow_glue import report_rejections, run_key_of

    report_rejections(run_key_of(get_current_context()))


def _object_steps(sf_object: str):
    slug = re.sub(r"(?<!^)(?=[A-Z])", "_", sf_object).lower()
    extracted = extract.override(task_id=f"extract_{slug}")(sf_object=sf_object)
    filtered = FieldFilterOperator(task_id=f"filter_{slug}", sf_object=sf_object)
    loaded = load.override(task_id=f"load_{slug}")(sf_object=sf_object)
    chain(extracted, filtered, loaded)
    return extracted, loaded


@dag(
    dag_id="salesforce_incremental_sync",
    schedule=timedelta(minutes=INTERVAL_MINUTES),
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["sfsync", "salesforce", "incremental"],
    doc_md=__doc__,
    on_failure_callback=mark_run_failed,
    default_args=default_args(retries=3, retry_delay=timedelta(seconds=20),
                              max_retry_delay=timedelta(minutes=5)),
)
def salesforce_incremental_sync():
    plan = prepare()
    previous = plan
    for group_id, objects in GROUPS:
        @task_group(group_id=group_id)
        def group(objects=objects):
            steps = [_object_steps(name) for name in objects]
            for (_, loaded), (nxt_extract, _) in zip(steps, steps[1:], strict=False):
                loaded >> nxt_extract  # e.g. leads load before contacts
            if "Lead" in objects:
                steps[-1][1] >> DedupeCheckOperator(task_id="dedupe_check")
            return [s[0] for s in steps], steps[-1][1]

        firsts, last = group()
        previous >> firsts[0]
        previous = last

    @task_group(group_id="custom_objects")
    def custom(names):
        extracted = extract.override(task_id="extract_custom_object").expand(sf_object=names)
        filtered = FieldFilterOperator.partial(task_id="filter_custom_object").expand(
            sf_object=names)
        loaded = load.override(task_id="load_custom_object").expand(sf_object=names)
        chain(extracted, filtered, loaded)
        return extracted, loaded

    names = enabled_custom_objects(plan)
    first_custom, last_custom = custom(names)
    previous >> first_custom

    @task_group(group_id="push")
    def push():
        # one push at a time across DAGs (salesforce_sync_now too): the salesforce_push pool;
        # none_failed: with no custom object enabled (the default) their mapped tasks are
        # skipped, and the push must run all the same
        chain(DedupeOnWriteOperator(task_id="dedupe_on_write", pool="salesforce_push",
                                    trigger_rule="none_failed"),
              *[SalesforcePushOperator(task_id=step, step=step, pool="salesforce_push")
                for step in UPDATE_STEPS])

    pushed = push()
    last_custom >> pushed >> maintain() >> finish() >> rejections()


salesforce_incremental_sync()

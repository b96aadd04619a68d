"""
### Salesforce initial sync

The first full copy of the org into the marketing database (`marketing_db`), one object per
mapped task, by **CreatedDate window**.

* **Trigger** (Params form): the objects (`all`, the default: every object the configuration
  syncs, custom objects included, read when the run starts; or API names such as `Lead`) and,
  optionally, *Created from* / *Created to* (UTC; empty = unbounded). Without dates the whole
  org is copied. An unknown object fails the run at once and lists the ones it knows.
* **Backfill** (CLI `airflow backfill create --dag-id salesforce_initial_sync --from-date ...
  --to-date ...`, the REST API `POST /api/v2/backfills`, or the UI's Backfill form): one run per
  month; each copies only the records created in its data interval.
* **Scheduled runs** (monthly, no catchup) copy their data interval exactly like a backfill run:
  unpausing the DAG runs the most recent complete month at once, and a backfill over that month
  then skips it as already run (the default, *Missing Runs*), rightly: it was copied. Every run
  that exists for a month copied that month. A window of an object whose whole history is
  stored already (its incremental cursor has started) is recorded as done without calling
  Salesforce: once the org is copied, a monthly run costs only the describes.
* Each (object, window) copy commits in chunks and resumes where it stopped after a failure;
  a finished window is never copied again. Bulk API 2.0 above `bulk_threshold` records, REST
  below. The log shows progress: records done of total, rate and ETA.
* A copy never overwrites a newer version, so it may run while incremental cycles run. Once the
  copied windows cover an object's whole history, its incremental cursor starts; until then
  `salesforce_incremental_sync` copies that object itself rather than skip history.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task

from include.sfsync.airflow_glue import announce_retry, default_args, mark_run_failed
from include.sfsync.errors import InputError
from include.sfsync.objects import ALL_OBJECTS, STANDARD_OBJECTS


@task(pool="salesforce_api")
@announce_retry
def plan(params: dict | None = None) -> list[dict]:
    """Resolve the window (data interval for scheduled and backfill runs, Params otherwise), lock
    the org, evolve the schema."""
    from include.sfsync.airflow_glue import fail_fast, run_key_of
    from include.sfsync.pipeline import prepare_copy

    context = get_current_context()
    run = context["dag_run"]
    run_key = run_key_of(context)

    def window() -> tuple:
        # A scheduled run copies its month like a backfill run: a backfill skips months that
        # already have a run, so a run must never exist for a month it did not copy.
        if run.run_type in ("backfill", "scheduled"):
            return context["data_interval_start"], context["data_interval_end"]
        start = _when(params.get("created_from"), "created_from")
        end = _when(params.get("created_to"), "created_to")
        if start and end and start >= end:
            raise InputError(f"created_from {start} must be before created_to {end}")
        return start, end

    start, end = fail_fast(window, run_key)
    objects = fail_fast(lambda: prepare_copy(run_key, list(params["objects"]), start, end),
                        run_key)
    bounds = {"created_from": start.isoformat() if start else None,
              "created_to": end.isoformat() if end else None}
    return [{"sf_object": name, **bounds} for name in objects]  # one copy task each


def _when(value, name: str):
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{name}: {value!r} is not a date or datetime (YYYY-MM-DD[THH:MM])") \
            from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@task(pool="salesforce_api", map_index_template="{{ task.op_kwargs['sf_object'] }}")
@announce_retry
def copy(sf_object: str, created_from: str | None, created_to: str | None) -> dict:
    """Copy one object's records created in the window; resumable, Bulk above the threshold."""
    from include.sfsync.airflow_glue import fail_fast, run_key_of
    from include.sfsync.pipeline import copy_object

    run_key = run_key_of(get_current_context())
    return fail_fast(lambda: copy_object(run_key, sf_object, _when(created_from, "created_from"),
                                         _when(created_to, "created_to")), run_key)


@task
@announce_retry
def finish(copies: list[dict]) -> dict:
    """Link people, start incremental cursors where history is complete, close the run."""
    from include.sfsync.airflow_glue import run_key_of
    from include.sfsync.pipeline import finish_copy

    return finish_copy(run_key_of(get_current_context()), [c["sf_object"] for c in copies])


@dag(
    dag_id="salesforce_initial_sync",
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
    start_date=datetime(2015, 1, 1),
    catchup=False,
    max_active_runs=2,
    tags=["sfsync", "salesforce", "initial-copy"],
    doc_md=__doc__,
    on_failure_callback=mark_run_failed,
    params={
        "objects": Param([ALL_OBJECTS], type="array", minItems=1, items={"type": "string"},
                         title="Objects",
                         description=f"'{ALL_OBJECTS}' (every object the configuration syncs, "
                                     "read when the run starts) or API names, e.g. "
                                     + ", ".join(o.sf_object for o in STANDARD_OBJECTS)),
        "created_from": Param(None, type=["null", "string"], title="Created from (UTC)",
                              description="Copy records created at or after this date or "
                                          "datetime; empty: since the beginning"),
        "created_to": Param(None, type=["null", "string"], title="Created to (UTC)",
                            description="Copy records created before this date or datetime; "
                                        "empty: up to now"),
    },
    default_args=default_args(retries=3, retry_delay=timedelta(seconds=30),
                              max_retry_delay=timedelta(minutes=10)),
)
def salesforce_initial_sync():
    copies = plan()
    copy.expand_kwargs(copies) >> finish(copies)


salesforce_initial_sync()

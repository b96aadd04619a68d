"""What a task's log says: its result as a table (report.result_table), the retry line with the
delay Airflow itself computes (airflow_glue.next_retry_delay against airflow-core's
TaskInstance.next_retry_datetime), and the rejections summary."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from include.sfsync.airflow_glue import next_retry_delay, rejections_summary, retry_line
from include.sfsync.report import result_table

LOAD = {"object": "Lead", "new": 3, "updated": 1, "deleted": 0, "skipped": 2, "failed": 1}
FINISH = {"run_key": "salesforce_incremental_sync:manual__1", "people_linked": 2, "api_calls": 3,
          "counts": {"Account": {"new": 1, "updated": 0, "deleted": 0, "skipped": 0, "failed": 0},
                     "Lead": {"new": 1200, "updated": 4, "deleted": 1, "skipped": 2,
                              "failed": 0}}}


def test_one_objects_counts_are_one_row_with_every_count_column():
    assert result_table(LOAD).splitlines() == [
        "Object      New    Updated    Deleted    Skipped    Failed",
        "--------  -----  ---------  ---------  ---------  --------",
        "Lead          3          1          0          2         1"]
    # a result without its object's name (the initial copy) is named by the task's sf_object
    copy = {k: v for k, v in LOAD.items() if k != "object"}
    assert result_table(copy, label="Contact").splitlines()[2].split() == [
        "Contact", "3", "1", "0", "2", "1"]


def test_a_runs_counts_have_a_total_and_the_api_calls_under_the_table():
    assert result_table(FINISH).splitlines() == [
        "Object      New    Updated    Deleted    Skipped    Failed",
        "--------  -----  ---------  ---------  ---------  --------",
        "Account       1          0          0          0         0",
        "Lead      1,200          4          1          2         0",
        "--------  -----  ---------  ---------  ---------  --------",
        "Total     1,201          4          1          2         0",
        "Salesforce API calls: 3",
        "People linked: 2"]


@pytest.mark.parametrize(("result", "rows", "footer"), [
    # extract: mode, rows and API calls of one object
    ({"object": "Task", "mode": "rest", "rows": 7, "api_calls": 1},
     [["Object", "Mode", "Rows", "API", "calls"], ["Task", "rest", "7", "1"]], []),
    # the field filter
    ({"object": "Lead", "skipped": 4, "kept": 10},
     [["Object", "Kept", "Skipped"], ["Lead", "10", "4"]], []),
    # a push step: its objects' counts; what is still queued and the API calls below
    ({"step": "people", "table": "person", "api_calls": 1, "stopped": None, "pending": 0,
      "counts": {"Lead": {"new": 0, "updated": 1, "deleted": 0, "skipped": 0, "failed": 1}}},
     [["Object", "New", "Updated", "Deleted", "Skipped", "Failed"], ["Lead", "0", "1", "0", "0", "1"]],
     ["Salesforce API calls: 1", "Still queued: 0"]),
    # sync now: the people pushed, summed over its steps
    ({"counts": {}, "api_calls": 2, "people_linked": 0, "people": [7], "not_found": ["x@y.org"],
      "reloaded": 1, "push": {
          "create_people": {"counts": {"Lead": {"new": 1}}},
          "people": {"counts": {"Lead": {"new": 0, "updated": 1, "failed": 1}}}}},
     [["Object", "New", "Updated", "Deleted", "Skipped", "Failed"],
      ["Lead", "(push)", "1", "1", "0", "0", "1"]],
     ["Salesforce API calls: 2", "People linked: 0", "People re-read: 1", "Not found: x@y.org"]),
    # the plan of a cycle
    ({"objects": {"User": "idle", "Task": "changes"}, "custom_objects": [], "api_calls": 2,
      "warnings": []},
     [["Object", "Plan"], ["User", "idle"], ["Task", "changes"]], ["Salesforce API calls: 2"]),
    # dedupe check: rule -> new duplicates
    ({"same_email": 3}, [["Count"], ["same_email", "3"]], []),
])
def test_every_kind_of_result_reads_as_a_table(result, rows, footer):
    lines = result_table(result).splitlines()
    table = [line.split() for line in lines if line and not set(line) <= {"-", " "}
             and ":" not in line]
    assert table == rows
    assert [line for line in lines if ":" in line] == footer


def test_nothing_to_count_still_says_so_and_lists_are_one_line():
    assert result_table({"step": "campaigns", "api_calls": 0, "pending": 0, "counts": {}}) == (
        "Nothing to count.\nSalesforce API calls: 0\nStill queued: 0")
    assert result_table(["Webinar_Attendance__c", "Subscription__c"]) == (
        "Returned: Webinar_Attendance__c, Subscription__c")
    assert result_table(None) is None


# --- retries --------------------------------------------------------------------------------

def _tasks(**retry):
    """The same task as the worker has it (SDK) and as the scheduler reads it (serialized)."""
    from airflow.sdk import DAG
    from airflow.sdk.bases.operator import BaseOperator
    from airflow.serialization.serialized_objects import create_scheduler_operator

    with DAG("salesforce_incremental_sync", schedule=None, start_date=datetime(2025, 1, 1)):
        task = BaseOperator(task_id="people.load_lead", **retry)
    return task, create_scheduler_operator(task)


def _airflow_delay(scheduler_task, logical_date, try_number) -> timedelta:
    """airflow-core's own answer: TaskInstance.next_retry_datetime() minus the try's end date."""
    from airflow.models.taskinstance import TaskInstance

    end = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    ti = SimpleNamespace(retry_delay_override=None, end_date=end, task=scheduler_task,
                         dag_id="salesforce_incremental_sync", task_id="people.load_lead",
                         logical_date=logical_date, try_number=try_number,
                         log=logging.getLogger("test"))
    return TaskInstance.next_retry_datetime(ti) - end


@pytest.mark.parametrize("retry", [
    {"retries": 3, "retry_delay": timedelta(seconds=20), "retry_exponential_backoff": 2.0,
     "max_retry_delay": timedelta(minutes=5)},
    {"retries": 2, "retry_delay": timedelta(seconds=2), "retry_exponential_backoff": 2.0,
     "max_retry_delay": timedelta(seconds=30)},
    {"retries": 6, "retry_delay": timedelta(seconds=30), "retry_exponential_backoff": True},
    {"retries": 6, "retry_delay": timedelta(seconds=7), "retry_exponential_backoff": 3.5},
    {"retries": 3, "retry_delay": timedelta(seconds=20)},  # no backoff: the delay itself
    {"retries": 3, "retry_delay": timedelta(seconds=0), "retry_exponential_backoff": 2.0},
], ids=["incremental", "sync-now", "backoff-true", "multiplier-3.5", "constant", "zero"])
@pytest.mark.parametrize("logical_date", [
    datetime(2026, 3, 1, 11, 55, 0, tzinfo=UTC),
    datetime(2026, 3, 1, 11, 55, 3, 123456, tzinfo=UTC),
    None,  # a manual run triggered through the REST API with "logical_date": null
], ids=["date", "microseconds", "no-date"])
def test_the_retry_delay_is_the_one_airflow_computes(retry, logical_date):
    task, scheduler_task = _tasks(**retry)
    for try_number in range(1, 8):
        ours = next_retry_delay(task, dag_id="salesforce_incremental_sync",
                                task_id="people.load_lead", logical_date=logical_date,
                                try_number=try_number)
        assert ours == _airflow_delay(scheduler_task, logical_date, try_number), try_number


def _context(task, *, try_number, max_tries):
    ti = SimpleNamespace(dag_id="salesforce_incremental_sync", task_id="people.load_lead",
                         try_number=try_number, max_tries=max_tries)
    run = SimpleNamespace(logical_date=datetime(2026, 3, 1, 11, 55, tzinfo=UTC))
    return {"ti": ti, "task": task, "dag_run": run}


def test_the_retry_line_counts_retries_and_says_why():
    from airflow.sdk.exceptions import AirflowFailException

    task, scheduler_task = _tasks(retries=3, retry_delay=timedelta(seconds=20),
                                  retry_exponential_backoff=2.0,
                                  max_retry_delay=timedelta(minutes=5))
    when = datetime(2026, 3, 1, 11, 55, tzinfo=UTC)
    error = ConnectionError("Salesforce did not answer\n(read timeout)")
    for try_number in (1, 2, 3):
        seconds = int(_airflow_delay(scheduler_task, when, try_number).total_seconds())
        assert retry_line(_context(task, try_number=try_number, max_tries=3), error) == (
            f"retry {try_number} of 3 in {seconds} s: "
            "ConnectionError: Salesforce did not answer (read timeout)")
    assert 20 <= int(_airflow_delay(scheduler_task, when, 1).total_seconds()) < 40
    # the last try, and errors Airflow never retries: no line
    assert retry_line(_context(task, try_number=4, max_tries=3), error) is None
    assert retry_line(_context(task, try_number=1, max_tries=3),
                      AirflowFailException("wrong org")) is None
    # a cleared task instance: its tries go on counting, its retries start again
    assert retry_line(_context(task, try_number=5, max_tries=7), error).startswith(
        "retry 1 of 3 in ")


def test_the_rejections_summary_names_the_first_five():
    rejected = [f"Lead 00Q00000000000{i}: INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: bad value"
                for i in range(7)]
    assert rejections_summary(rejected[:1]) == (
        "1 change rejected by Salesforce: Lead 00Q000000000000: "
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: bad value")
    summary = rejections_summary(rejected)
    assert summary.startswith("7 changes rejected by Salesforce: Lead 00Q000000000000: ")
    assert summary.count("INVALID_OR_NULL") == 5 and summary.endswith("; and 2 more")

"""What the sync DAGs' task logs say, from real dag.test() runs (the emulator org in, SQLite out):

* every task's log ends with its result as a small table, never "Returned value was: {...}";
* a retry is announced in one line before the stack trace, with the delay Airflow then waits;
* changes Salesforce rejects show on the Airflow run: the incremental run's ``rejections``
  task ends skipped, saying why and listing them (the run succeeds: it synced); sync now fails
  its one task with them (as it did before).
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
import requests
import sqlalchemy as sa

from include.sfsync.report import result_table
from tests.dags.helpers import load_dag, task_logs

pytestmark = pytest.mark.integration
GLUE = "include.sfsync.airflow_glue"


def _returned(ti):
    return ti.xcom_pull(task_ids=ti.task_id, map_indexes=ti.map_index)


def _check_tables(run, output: str) -> int:
    """Every task of the run ends its (last try's) log with its result as a table; returns how
    many tasks did."""
    logs = task_logs(output)
    checked = 0
    for ti in run.get_task_instances():
        events = logs[(ti.task_id, ti.map_index)][-1]
        assert not [e for e in events if "Returned value was" in e.message], ti.task_id
        result = _returned(ti)
        if result is None:
            continue
        # the task's last line before Airflow's folded "Post Execute" group ("Pushing xcom")
        done = next(i for i, e in enumerate(events) if e.message == "::group::Post Execute")
        assert "Pushing xcom" in [e.message for e in events[done:]]
        last = events[done - 1]
        assert (last.logger, last.message) == (GLUE, "Result:\n" + result_table(
            result, label=ti.rendered_map_index)), ti.task_id
        checked += 1
    return checked


def _last_table(events) -> str:
    return [e.message for e in events if e.message.startswith("Result:\n")][-1]


def _rows(message: str) -> dict[str, list[str]]:
    """The rows of a logged table: {first cell: the other cells}."""
    return {cells[0]: cells[1:] for line in message.splitlines()[3:]
            if (cells := line.split()) and not set(line) <= {"-", " "} and ":" not in line}


def test_task_logs_end_with_a_table_of_counts(airflow_db, sync_env, task_log_output):
    info, engine = sync_env
    run = load_dag("salesforce_incremental_sync").test()  # the first cycle copies everything
    assert run.state == "success"
    output = task_log_output()
    assert _check_tables(run, output) == len(run.get_task_instances()) - 1  # all but rejections

    # the numbers are the XCom's, under their headings (the load of leads, the run's total)
    logs = task_logs(output)
    counts = _returned(run.get_task_instance("people.load_lead"))
    assert counts["new"] > 0
    table = _last_table(logs[("people.load_lead", -1)][-1])
    assert table.splitlines()[1].split() == ["Object", "New", "Updated", "Deleted", "Skipped",
                                             "Failed"]
    assert _rows(table)["Lead"] == [f"{counts[k]:,}" for k in
                                    ("new", "updated", "deleted", "skipped", "failed")]
    finish = _returned(run.get_task_instance("finish"))
    table = _last_table(logs[("finish", -1)][-1])
    rows = _rows(table)
    assert set(rows) == set(finish["counts"]) | {"Total"}
    assert rows["Total"][0] == f"{sum(c['new'] for c in finish['counts'].values()):,}"
    assert f"Salesforce API calls: {finish['api_calls']:,}" in table.splitlines()

    # the initial copy: its plan is a list, a copy task's counts do not name their object (the
    # table takes it from the task's sf_object, which is also its map index)
    run = load_dag("salesforce_initial_sync").test(run_conf={
        "objects": ["all"], "created_from": None, "created_to": None})
    assert run.state == "success"
    copies = [ti for ti in run.get_task_instances() if ti.task_id == "copy"]
    assert _check_tables(run, task_log_output()) == len(copies) + 2  # + plan, finish


def _airflow_retry_delay(dag, run, task_id: str, try_number: int) -> tuple[timedelta, object]:
    """The delay airflow-core computes for a try (TaskInstance.next_retry_datetime, with the
    task as the scheduler reads it), and that try's history row."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.serialization.serialized_objects import create_scheduler_operator
    from airflow.utils.session import create_session

    with create_session() as session:
        tried = session.scalars(sa.select(TaskInstanceHistory).where(
            TaskInstanceHistory.dag_id == run.dag_id, TaskInstanceHistory.run_id == run.run_id,
            TaskInstanceHistory.task_id == task_id,
            TaskInstanceHistory.try_number == try_number)).one()
        ti = session.scalars(sa.select(TaskInstance).where(
            TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id,
            TaskInstance.task_id == task_id)).one()
        session.expunge_all()
    assert tried.retry_delay_override is None
    core = SimpleNamespace(retry_delay_override=None, end_date=tried.end_date,
                           task=create_scheduler_operator(dag.get_task(task_id)),
                           dag_id=run.dag_id, task_id=task_id, logical_date=ti.logical_date,
                           try_number=try_number, log=logging.getLogger(__name__))
    return TaskInstance.next_retry_datetime(core) - tried.end_date, (tried, ti)


def test_a_retry_says_when_and_why_before_the_stack_trace(airflow_db, sync_env,
                                                          task_log_output):
    info, engine = sync_env
    assert load_dag("salesforce_incremental_sync").test().state == "success"  # the first copy
    with engine.begin() as conn:
        person = conn.execute(sa.text(
            "SELECT id FROM person WHERE sfdc_type = 'Lead' AND sfdc_is_deleted = 0 "
            "ORDER BY id LIMIT 1")).scalar()
        conn.execute(sa.text("UPDATE person SET title = 'Retried' WHERE id = :i"), {"i": person})
    # Salesforce answers the next API call with a 503: the task fails once, then succeeds
    requests.post(info["control_url"] + "/faults", json={"kind": "http_503", "count": 1},
                  timeout=10).raise_for_status()
    task_log_output()
    dag = load_dag("salesforce_sync_now")
    run = dag.test(run_conf={"person_ids": [person], "emails": []})
    output = task_log_output()

    assert run.state == "success"
    assert run.get_task_instance("sync_people").try_number == 2
    first, second = task_logs(output)[("sync_people", -1)]
    lines = [e for e in first + second if e.logger == GLUE and e.message.startswith("retry ")]
    assert len(lines) == 1 and lines[0] in first and lines[0].level == "warning"
    line = lines[0].message
    match = re.fullmatch(r"retry 1 of 2 in (\d+) s: (\S+: .+)", line)
    assert match, line
    assert "503" in match[2] and "\n" not in line
    # the number is the delay Airflow computes for this try, and the one dag.test() waited
    delay, (tried, retried) = _airflow_retry_delay(dag, run, "sync_people", 1)
    assert delay == timedelta(seconds=int(match[1]))
    assert 2 <= delay.total_seconds() < 4  # sync now: 2 s doubled per try, jitter below 2 s
    assert tried.end_date + delay <= retried.start_date < tried.end_date + delay + timedelta(
        seconds=15)
    # one line before the stack trace: the task runner logs the failure right after it
    failed = next(i for i, e in enumerate(first) if e.message == "Task failed with exception")
    assert first.index(lines[0]) == failed - 1
    assert not [e for e in first[:failed] if e.trailer]  # no stack trace before the line
    assert any("Traceback" in t for t in first[failed].trailer)
    with engine.connect() as conn:
        title_in_db = conn.execute(sa.text("SELECT title FROM person WHERE id = :i"),
                                   {"i": person}).scalar()
    assert title_in_db == "Retried"


def _run_row(engine, dag_id: str, run) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT status, message FROM sfsync_run WHERE "
                                         "run_key = :k"),
                                 {"k": f"{dag_id}:{run.run_id}"}).one()._mapping)


def test_rejected_changes_show_on_the_airflow_run(airflow_db, sync_env, task_log_output):
    info, engine = sync_env
    incremental = load_dag("salesforce_incremental_sync")
    assert incremental.test().state == "success"  # the first copy
    assert _ti_states(incremental.test())[("rejections", -1)] == ("success", 1)  # none rejected
    with engine.begin() as conn:
        person, lead_id = conn.execute(sa.text(
            "SELECT id, sfdc_lead_id FROM person WHERE sfdc_type = 'Lead' "
            "AND sfdc_is_deleted = 0 ORDER BY id LIMIT 1")).one()
        # a restricted picklist value no value map knows: Salesforce refuses the update
        conn.execute(sa.text("UPDATE person SET state = 'Atlantis' WHERE id = :i"),
                     {"i": person})
    task_log_output()
    run = incremental.test()
    output = task_log_output()

    # the cycle synced (the run and the sync run succeed); its rejections task is skipped,
    # saying why, and lists each rejection
    assert run.state == "success"
    states = _ti_states(run)
    assert {k: v for k, v in states.items() if v[0] != "success"} == {
        ("rejections", -1): ("skipped", 1)}
    assert _run_row(engine, "salesforce_incremental_sync", run) == {"status": "success",
                                                                    "message": None}
    rejection = f"Lead {lead_id}: INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: "
    (events,) = task_logs(output)[("rejections", -1)]
    listed = [e for e in events if e.logger == GLUE and e.level == "warning"]
    assert len(listed) == 1 and listed[0].message.splitlines()[1].startswith(rejection)
    skipped = next(e for e in events if e.message == "Skipping task.")
    assert skipped.extra.startswith(f"reason='1 change rejected by Salesforce: {rejection}")

    # the rejected change waits for its row to change again: the next cycle rejects nothing
    assert _ti_states(incremental.test())[("rejections", -1)] == ("success", 1)

    # sync now retries it explicitly: its one task fails with the rejection (as it always did)
    task_log_output()
    run = load_dag("salesforce_sync_now").test(run_conf={"person_ids": [person], "emails": []})
    output = task_log_output()
    assert run.state == "failed"
    assert _ti_states(run) == {("sync_people", -1): ("failed", 1)}
    (events,) = task_logs(output)[("sync_people", -1)]
    failed = next(e for e in events if e.message == "Task failed with exception")
    assert (f"Salesforce rejected 1 record(s): {rejection}") in "\n".join(failed.trailer)
    assert not [e for e in events if e.message.startswith("retry ")]


def _ti_states(run) -> dict:
    return {(ti.task_id, ti.map_index): (ti.state, ti.try_number)
            for ti in run.get_task_instances()}

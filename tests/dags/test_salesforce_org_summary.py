"""Run the salesforce_org_summary DAG with dag.test() against the emulator's demo org (a refused
login: tests/dags/test_sync_dags.py)."""

from __future__ import annotations

import pytest
import requests

from include.salesforce_emulator.demo import demo_sync_settings
from include.sfsync.org_summary import SUMMARY_OBJECTS
from tests.dags.helpers import load_dag

pytestmark = pytest.mark.integration


def test_dag_test_runs_summary(airflow_db, sync_env):
    info, _engine = sync_env
    run = load_dag("salesforce_org_summary").test()

    assert run.state == "success"
    ti = run.get_task_instance("summarize_org")
    assert ti.state == "success"
    summary = ti.xcom_pull(task_ids="summarize_org")
    custom = tuple(demo_sync_settings()["custom_objects"])
    assert list(summary["objects"]) == list(SUMMARY_OBJECTS + custom)
    truth = requests.get(info["control_url"] + "/export",
                         params={"objects": "Account,Lead," + ",".join(custom)}, timeout=30).json()
    assert {name: summary["objects"][name] for name in truth} == {
        name: len(records) for name, records in truth.items()}
    usage = requests.get(info["control_url"] + "/counters", timeout=10).json()["api_usage"]
    # read from the limits resource, itself one of the calls counted
    assert summary["api_usage"] == {"used": usage["used"], "max": usage["max"]}

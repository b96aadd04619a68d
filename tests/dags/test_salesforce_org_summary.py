"""Run the salesforce_org_summary DAG with dag.test() against a stand-in Salesforce client."""

from __future__ import annotations

from pathlib import Path

import pytest

from include.sfsync.org_summary import SUMMARY_OBJECTS

pytestmark = pytest.mark.integration
DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "salesforce_org_summary.py"


class FakeSalesforce:
    api_usage: dict = {}

    def query(self, soql):
        return {"totalSize": len(soql), "done": True, "records": []}

    def limits(self):
        return {"DailyApiRequests": {"Max": 15000, "Remaining": 14000}}


def test_dag_test_runs_summary(airflow_db, monkeypatch, caplog):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.salesforce.hooks import salesforce as hook_module

    class FakeHook:
        def __init__(self, salesforce_conn_id):
            assert salesforce_conn_id == "salesforce_default"
            self.conn = FakeSalesforce()

    monkeypatch.setattr(hook_module, "SalesforceHook", FakeHook)
    dag = DagBag(dag_folder=str(DAG_FILE)).get_dag("salesforce_org_summary")

    run = dag.test()

    assert run.state == "success"
    ti = run.get_task_instance("summarize_org")
    assert ti.state == "success"
    summary = ti.xcom_pull(task_ids="summarize_org")
    assert summary == {
        "objects": {name: len(f"SELECT COUNT() FROM {name}") for name in SUMMARY_OBJECTS},
        "api_usage": {"used": 1000, "max": 15000},
    }

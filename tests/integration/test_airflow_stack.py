"""Proves tests/airflow_stack.py: a real Airflow 3.3 stack runs a REST backfill and a manual trigger.

A throwaway DAG is written into a tmp dags folder (never into the project's dags/). Its task writes
data_interval_start/end and run_type of its run to ``$SFSYNC_STACK_PROBE_OUT/<run_id>.json``; the folder
reaches the task through the stack's ``env`` extras.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from tests.airflow_stack import AirflowStack, safe_run_id

pytestmark = pytest.mark.integration

DAG_ID = "stack_probe"
PROBE_DAG = textwrap.dedent('''
    import json
    import os
    import re
    from datetime import datetime
    from pathlib import Path

    from airflow.sdk import CronDataIntervalTimetable, dag, get_current_context, task


    def _iso(value):
        return None if value is None else value.isoformat()


    @dag(dag_id="stack_probe", schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
         start_date=datetime(2025, 1, 1), catchup=False, max_active_runs=3, tags=["test"])
    def stack_probe():
        @task(pool="probe_pool")
        def record():
            ctx = get_current_context()
            run = ctx["dag_run"]
            run_type = getattr(run.run_type, "value", run.run_type)
            out = Path(os.environ["SFSYNC_STACK_PROBE_OUT"])
            out.mkdir(parents=True, exist_ok=True)
            (out / (re.sub(r"[^A-Za-z0-9_.-]", "_", run.run_id) + ".json")).write_text(json.dumps({
                "run_id": run.run_id,
                "run_type": str(run_type),
                # absent from the context for a manual run with logical_date=None
                "data_interval_start": _iso(ctx.get("data_interval_start")),
                "data_interval_end": _iso(ctx.get("data_interval_end")),
                "conf": dict(run.conf or {}),
            }))

        record()


    stack_probe()
''')


@pytest.fixture(scope="module")
def stack(tmp_path_factory, airflow_metadata_url):
    base = tmp_path_factory.mktemp("airflow-stack")
    dags = base / "dags"
    dags.mkdir()
    (dags / "stack_probe.py").write_text(PROBE_DAG)
    out = base / "out"
    with AirflowStack(dags_folder=dags, home=base / "home", pools={"probe_pool": 3},
                      env={"SFSYNC_STACK_PROBE_OUT": str(out)}, dag_ids=[DAG_ID],
                      metadata_url=airflow_metadata_url) as running:
        running.out = out
        print(f"\nAirflowStack started in {running.timings['total']:.1f}s "
              f"({', '.join(f'{k} {v:.1f}s' for k, v in running.timings.items())})")
        yield running


def _probe(stack: AirflowStack, run_id: str) -> dict:
    path: Path = stack.out / f"{safe_run_id(run_id)}.json"
    assert path.exists(), f"task wrote no probe file for {run_id}"
    return json.loads(path.read_text())


def test_rest_backfill_three_days(stack):
    started = time.monotonic()
    backfill_id = stack.backfill(DAG_ID, "2025-03-01", "2025-03-03", conf={"source": "rest-backfill"},
                                 max_active_runs=3)
    runs = stack.wait_runs(DAG_ID, run_type="backfill", count=3, timeout=60)
    print(f"\nbackfill {backfill_id}: 3 runs done in {time.monotonic() - started:.1f}s "
          f"(POSTs retried on a locked SQLite DB so far: {stack.lock_retries})")

    assert len(runs) == 3, runs
    assert [r["state"] for r in runs] == ["success"] * 3, [(r["dag_run_id"], r["state"]) for r in runs]
    assert {r["run_type"] for r in runs} == {"backfill"}
    assert all(r["conf"] == {"source": "rest-backfill"} for r in runs)

    expected = [("2025-03-01T00:00:00+00:00", "2025-03-02T00:00:00+00:00"),
                ("2025-03-02T00:00:00+00:00", "2025-03-03T00:00:00+00:00"),
                ("2025-03-03T00:00:00+00:00", "2025-03-04T00:00:00+00:00")]
    seen = []
    for run in runs:
        probe = _probe(stack, run["dag_run_id"])
        assert probe["run_type"] == "backfill"
        assert probe["conf"] == {"source": "rest-backfill"}
        seen.append((probe["data_interval_start"], probe["data_interval_end"]))
    assert sorted(seen) == expected

    for run in runs:
        [ti] = stack.task_instances(DAG_ID, run["dag_run_id"])
        assert (ti["task_id"], ti["state"], ti["pool"]) == ("record", "success", "probe_pool")
    assert "Done. Returned value was: None" in stack.task_log_events(DAG_ID, runs[0]["dag_run_id"], "record")
    assert stack.backfill_info(backfill_id)["dag_id"] == DAG_ID  # completed_at: set up to 30 s later


def test_manual_trigger_through_scheduler(stack):
    started = time.monotonic()
    run_id = stack.trigger(DAG_ID, conf={"source": "manual"})
    [run] = stack.wait_runs(DAG_ID, run_ids=[run_id], timeout=30, poll=0.1)
    latency = time.monotonic() - started
    [ti] = stack.task_instances(DAG_ID, run_id)
    print(f"\nmanual trigger -> success: {latency:.2f}s (task ran {ti['duration']:.2f}s)")

    assert run["state"] == "success", (run, stack.logs())
    assert run["run_type"] == "manual"
    probe = _probe(stack, run_id)
    assert probe["run_type"] == "manual"
    assert probe["conf"] == {"source": "manual"}
    print(f"manual run (logical_date=None) sees data interval "
          f"{probe['data_interval_start']} .. {probe['data_interval_end']}")
    assert stack.check_alive() is None

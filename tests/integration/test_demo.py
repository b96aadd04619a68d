"""`make demo` end to end: scripts/demo.py against the real emulator, through the real DAGs."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from include.sfsync.org_summary import SUMMARY_OBJECTS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
METADATA_DB = ROOT / ".airflow-demo" / "airflow.db"
MARKETING_DB = ROOT / ".data" / "demo-marketing.db"
EXPECTED_RUNS = ["salesforce_org_summary", "salesforce_initial_sync"] + [
    "salesforce_incremental_sync"] * 3


def _dag_runs(stdout: str) -> list[tuple[str, str, str]]:
    """The demo's closing list: (dag_id, run_id, state) of every DAG run it made."""
    section = stdout.split("DAG runs (metadata DB .airflow-demo/airflow.db):", 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if not line.startswith("  "):
            break
        dag_id, run_id, state = line.split()
        rows.append((dag_id, run_id, state))
    return rows


def test_demo_runs_the_dags_and_prints_their_tables():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "Emulator ready: https://127.0.0.1:" in out
    for name in SUMMARY_OBJECTS:
        assert name in out
    assert "API requests (24 h):" in out
    assert "Initial copy into .data/demo-marketing.db" in out
    for cycle in ("Incremental cycle 1", "Incremental cycle 2"):
        section = out.split(cycle, 1)[1].split("Salesforce API calls:", 1)[0]
        total = next(line for line in section.splitlines() if line.startswith("Total")).split()
        new, updated = int(total[1]), int(total[2])
        assert new + updated > 0, section  # the simulated activity arrived
    push = out.split("Push (marketing database -> Salesforce", 1)[1]
    assert "Title='VP Marketing Ops', State='California'" in push, push
    assert "new Lead 00Q" in push and "Company='[not provided]'" in push, push
    assert "[info" not in out and "[warning" not in out, out  # Airflow's logs go to the log file

    # Every table names the DAG run it came from, and those runs are in the demo's metadata DB.
    runs = _dag_runs(out)
    assert [dag_id for dag_id, _, _ in runs] == EXPECTED_RUNS, out
    assert all(state == "success" for _, _, state in runs), runs
    titles = ["Org summary", "Initial copy into", "Incremental cycle 1", "Incremental cycle 2",
              "Push (marketing database -> Salesforce"]
    lines = out.splitlines()
    for title, (dag_id, run_id, state) in zip(titles, runs, strict=True):
        at = next(i for i, line in enumerate(lines) if line.startswith(title))
        assert lines[at + 1] == f"DAG run {dag_id} {run_id}: {state}", lines[at:at + 2]
    with sqlite3.connect(METADATA_DB) as meta:
        for dag_id, run_id, _ in runs:
            state, triggered_by = meta.execute(
                "SELECT state, triggered_by FROM dag_run WHERE dag_id = ? AND run_id = ?",
                (dag_id, run_id)).fetchone()
            assert (state, triggered_by) == ("success", "TEST"), (dag_id, run_id)  # dag.test()
            tasks = dict(meta.execute(
                "SELECT state, COUNT(*) FROM task_instance WHERE dag_id = ? AND run_id = ? "
                "GROUP BY state", (dag_id, run_id)).fetchall())
            assert tasks.get("success", 0) > 0 and set(tasks) <= {"success", "skipped"}, tasks
        pushed = {task_id for (task_id,) in meta.execute(
            "SELECT task_id FROM task_instance WHERE dag_id = ? AND run_id = ? AND state = "
            "'success' AND task_id LIKE 'push.%'", runs[-1][:2])}
        assert {"push.dedupe_on_write", "push.people"} <= pushed, pushed
    # ... and the sync recorded its work under those runs (run key "<dag_id>:<run_id>").
    with sqlite3.connect(MARKETING_DB) as marketing:
        recorded = dict(marketing.execute("SELECT run_key, status FROM sfsync_run").fetchall())
    for dag_id, run_id, _ in runs[1:]:
        assert recorded.get(f"{dag_id}:{run_id}") == "success", (dag_id, run_id, recorded)
    assert re.search(r"metadata DB airflow\.db (migrated in [\d.]+ s|already migrated)", out), out

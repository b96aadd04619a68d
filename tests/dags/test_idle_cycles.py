"""What an idle cycle costs through the real DAGs (dag.test()), counted by the emulator: the
same 2 API calls as the engine's own cycle (``tests/sync/test_pull.py``), also while the last
cycle's changes are inside the overlap window."""

from __future__ import annotations

import pytest
import requests
import sqlalchemy as sa

from tests.dags.conftest import emulated_org
from tests.dags.helpers import load_dag

pytestmark = pytest.mark.integration


def test_idle_cycles_after_a_cycle_with_changes_cost_two_calls(airflow_db, tmp_path,
                                                               monkeypatch):
    # an org we did not design, synced with every default
    server, info, engine = emulated_org(tmp_path, monkeypatch, seed="standard",
                                        settings={"bulk_poll_seconds": 0})
    control = info["control_url"]

    def calls() -> int:
        return requests.get(control + "/counters", timeout=10).json()["total"]

    def advance(seconds: int) -> None:
        requests.post(control + "/clock", json={"advance_seconds": seconds},
                      timeout=10).raise_for_status()

    def cycle() -> tuple[int, int]:
        """One incremental run: (its API calls, the records its change queries read)."""
        before = calls()
        run = incremental.test()
        assert run.state == "success"
        with engine.connect() as conn:
            read = conn.execute(sa.text(
                "SELECT COALESCE(SUM(rows), 0) FROM sfsync_extract WHERE run_key = :k"),
                {"k": f"salesforce_incremental_sync:{run.run_id}"}).scalar()
        return calls() - before, read

    try:
        initial = load_dag("salesforce_initial_sync")
        run = initial.test(run_conf={"objects": ["all"], "created_from": None,
                                     "created_to": None})
        assert run.state == "success"
        incremental = load_dag("salesforce_incremental_sync")
        advance(600)
        cycle()  # reads what changed while the copy ran
        advance(600)
        assert cycle() == (2, 0)

        advance(600)
        made = requests.post(control + "/simulate", json={
            "updates": 970, "creates": 20, "deletes": 10, "rng_seed": 7}, timeout=120).json()
        assert sum(len(ids) for ids in made["updated"].values()) == 970
        advance(120)  # Salesforce's coverage (whole minutes) passes the changes
        spent, read = cycle()
        assert spent >= 3 and read > 300
        # Within the overlap window (300 s) and after it: nothing read again, 2 calls each.
        idle = []
        for seconds in (60, 120, 420):
            advance(seconds)
            idle.append(cycle())
        assert idle == [(2, 0), (2, 0), (2, 0)]
    finally:
        server.stop()

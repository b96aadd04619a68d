"""The console's Initial copy page on a standard org copied one month at a time: the months
copied, the months missing, and the Backfill button creating Airflow's backfill of exactly the
missing months (one run per month, in the metadata database the scheduler reads)."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from tests.dags.conftest import emulated_org
from tests.dags.helpers import load_dag

pytestmark = pytest.mark.integration


class _User:
    def get_name(self) -> str:
        return "tester"


def _month_start(year: int, month: int) -> datetime:
    while month < 1:
        year, month = year - 1, month + 12
    return datetime(year, month, 1, tzinfo=UTC)


@pytest.fixture
def standard_org(tmp_path, monkeypatch, airflow_db):
    server, _, engine = emulated_org(tmp_path, monkeypatch, seed="standard", settings=None)
    yield engine
    server.stop()


def test_backfill_button_creates_a_run_per_missing_month(standard_org, monkeypatch):
    from airflow.models.backfill import Backfill, BackfillDagRun
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from fastapi.testclient import TestClient

    from include.sfsync.console import copy_coverage

    with create_session() as session:  # earlier runs (this Airflow home is reused) would
        # refuse our backfill (one running already) or leave months "in flight"
        session.execute(sa.update(Backfill).where(Backfill.completed_at.is_(None))
                        .values(completed_at=datetime.now(UTC)))
        session.execute(sa.delete(DagRun).where(DagRun.dag_id == "salesforce_initial_sync"))
    now = datetime.now(UTC)
    copied = _month_start(now.year, now.month - 2)
    dag = load_dag("salesforce_initial_sync")
    run = dag.test(run_conf={"objects": ["Lead"], "created_from": copied.isoformat(),
                             "created_to": _month_start(now.year, now.month - 1).isoformat()})
    assert str(run.state) == "success"

    coverage = copy_coverage(standard_org, months=6)
    assert coverage.objects["Lead"]["months"][copied][0] == "done"
    assert coverage.objects["Contact"]["months"][copied][0] == "missing"
    first, last = _month_start(now.year, now.month - 5), _month_start(now.year, now.month - 1)
    assert (coverage.missing_from, coverage.missing_until) == (first, last)

    console_app = importlib.import_module("sfsync_console.app")
    console_app._engines.clear()
    console_app.app.dependency_overrides = {console_app.reader_user: _User,
                                            console_app.editor_user: _User}
    monkeypatch.setattr(console_app, "may", lambda user, method: True)
    try:
        client = TestClient(console_app.app)
        page = client.get("/initial-copy?months=6")
        assert page.status_code == 200 and 'id="backfill"' in page.text
        assert f"Missing: {first:%Y-%m} to {last:%Y-%m}" in page.text
        answer = client.post("/initial-copy/backfill", data={"months": "6"},
                             follow_redirects=False)
        assert answer.status_code == 303 and "backfill=" in answer.headers["location"], \
            answer.headers["location"]
        backfill_id = int(answer.headers["location"].rsplit("backfill=", 1)[1])
        with create_session() as session:
            backfill = session.get(Backfill, backfill_id)
            assert (backfill.dag_id, backfill.from_date, backfill.to_date) == (
                "salesforce_initial_sync", first, last)
            planned = session.query(BackfillDagRun).filter(
                BackfillDagRun.backfill_id == backfill_id).all()
            assert [p.exception_reason for p in planned] == [None] * len(planned)
            months = sorted(r.logical_date for r in session.query(DagRun).filter(
                DagRun.backfill_id == backfill_id))
        assert months == [_month_start(now.year, now.month - k) for k in range(5, 0, -1)]
        # A second press while it runs: Airflow refuses, and the page says why in one line.
        again = client.post("/initial-copy/backfill", data={"months": "6"},
                            follow_redirects=False)
        refused = parse_qs(urlsplit(again.headers["location"]).query)["refused"][0]
        assert refused.startswith("AlreadyRunningBackfill: Another backfill is running")
        shown = client.get("/initial-copy", params={"months": 6, "refused": refused})
        assert f"Airflow refused the backfill: {refused}" in shown.text
    finally:
        console_app.app.dependency_overrides = {}
        console_app._engines.clear()

"""scripts/load_airflow_settings.py against a real (test) Airflow metadata DB: 3 CLI calls, idempotent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_loader_imports_into_airflow_and_is_rerunnable(airflow_db):
    from airflow.models.connection import Connection
    from airflow.models.pool import Pool
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    for attempt in (1, 2):  # the second run must overwrite cleanly
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "load_airflow_settings.py")],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"run {attempt}:\n{proc.stdout}\n{proc.stderr}"
        assert "Loaded 2 connection(s), 2 variable(s), 2 pool(s)" in proc.stdout

    with create_session() as session:
        sf = session.query(Connection).filter_by(conn_id="salesforce_default").one()
        assert (sf.conn_type, sf.login, sf.password) == ("salesforce", "sync.user@sfsync-demo.example",
                                                         "sfsync-demo-pw")
        assert sf.extra_dejson == {"security_token": "DEMOTOKEN0123456789", "domain": "127.0.0.1:8443/emu",
                                   "version": "59.0"}
        db = session.query(Connection).filter_by(conn_id="marketing_db").one()
        assert (db.conn_type, db.host) == ("sqlite", str(ROOT / ".data" / "marketing.db"))
        pool = session.query(Pool).filter_by(pool="salesforce_api").one()
        assert pool.slots == 2
        assert session.query(Pool).filter_by(pool="salesforce_push").one().slots == 1
        variable = session.query(Variable).filter_by(key="sfsync_incremental_interval_minutes").one()
        assert variable.val == "5"

"""Test-wide Airflow environment and shared fixtures.

Airflow reads its configuration when it is first imported, so the environment is set at the top
of this module, before any test (or plugin) imports airflow. Changing AIRFLOW__* variables later
silently keeps the old settings.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# One Airflow home (metadata DB) per pytest-xdist worker: dag.test() runs must not share SQLite.
TEST_HOME = ROOT / ".airflow-test" / os.environ.get("PYTEST_XDIST_WORKER", "main")
TEST_HOME.mkdir(parents=True, exist_ok=True)

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # include.* importable in this process

AIRFLOW_TEST_ENV = {
    "AIRFLOW_HOME": str(TEST_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{TEST_HOME}/airflow.db",
    # Fixed test-only secrets. The fernet key must not come from airflow.cfg: on a fresh checkout that file
    # is written by the `airflow db migrate` subprocess *after* this process loaded its (key-less) config.
    "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(b"sfsync-test-fernet-key-32-bytes!").decode(),
    # A >= 64-byte secret avoids InsecureKeyLengthWarning.
    "AIRFLOW__API_AUTH__JWT_SECRET": "sfsync-tests-" + "x" * 64,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}
if "airflow" in sys.modules:  # pragma: no cover - would make every setting below a no-op
    raise RuntimeError("airflow was imported before tests/conftest.py could configure it")
os.environ.update(AIRFLOW_TEST_ENV)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
POSTGRES_ADMIN_URL = os.environ.get("SFSYNC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """An initialised Airflow metadata DB (SQLite in .airflow-test). Only dag.test() needs it."""
    proc = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"airflow db migrate failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return TEST_HOME / "airflow.db"


def _postgres_unavailable(reason: str):
    message = f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable: {reason}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: postgres tests must run, not skip)", pytrace=False)
    pytest.skip(f"{message} (start PostgreSQL on 127.0.0.1:5432, trust auth, user postgres)")


@contextlib.contextmanager
def throwaway_postgres():
    """Create a fresh PostgreSQL database and drop it afterwards; yields its URL.

    Fails (CI=true) or skips (locally) when PostgreSQL is unreachable.
    """
    import psycopg
    from psycopg import sql

    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        _postgres_unavailable(str(exc).strip())
    name = f"sfsync_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
            yield f"{base}/{name}"
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def postgres_url():
    """URL of a fresh throwaway PostgreSQL database, dropped after the test."""
    with throwaway_postgres() as url:
        yield url


@pytest.fixture(scope="module")
def airflow_metadata_url():
    """A throwaway PostgreSQL database for a real Airflow stack's metadata (one per module)."""
    with throwaway_postgres() as url:
        yield "postgresql+psycopg2://" + url.split("://", 1)[1]


# The longest test files (minutes each, mostly waiting on Airflow components), longest first:
# pytest-xdist hands out whole files in collection order (--dist loadfile), so starting these
# first keeps one of them from running alone at the end. Measured with --durations.
LONGEST_FIRST = [
    "tests/browser/test_console_backlog.py", "tests/browser/test_console.py",
    "tests/integration/test_celery.py",
    "tests/dags/test_sync_dags.py", "tests/integration/test_first_contact.py",
    "tests/integration/test_initial_backfill.py", "tests/dags/test_idle_cycles.py",
    "tests/dags/test_task_logs.py", "tests/chaos/test_chaos.py",
    "tests/integration/test_make_airflow.py", "tests/integration/test_airflow_stack.py",
    "tests/sync/test_lost_creates.py", "tests/integration/test_demo.py",
]


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}

    def key(item):
        path = Path(str(item.fspath)).resolve().relative_to(ROOT).as_posix()
        return rank.get(path, len(rank))

    items.sort(key=key)  # stable: the other files keep their order

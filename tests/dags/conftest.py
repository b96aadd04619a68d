"""Fixtures of the tests that run the sync DAGs with dag.test()."""

from __future__ import annotations

import json
import logging
import sys

import pytest
import sqlalchemy as sa
import yaml

from include.salesforce_emulator.demo import demo_sync_settings
from include.salesforce_emulator.server import EmulatorServer


def emulated_org(tmp_path, monkeypatch, *, seed: str, settings: dict | None):
    """An in-process emulator org (``seed``) and an empty SQLite marketing database, both
    reached through the DAGs' Airflow connections; ``settings``: the sync's configuration file
    (None: no file, every default). Returns (server, emulator info, marketing engine)."""
    server = EmulatorServer(tmp_path / "org", port=0, seed=seed)
    info = server.start()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", info["ca_bundle"])
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", json.dumps({
        "conn_type": "salesforce", "login": info["username"], "password": info["password"],
        "extra": {"security_token": info["security_token"], "domain": info["login_domain"],
                  "version": "59.0"}}))
    database = tmp_path / "marketing.db"
    monkeypatch.setenv("AIRFLOW_CONN_MARKETING_DB",
                       json.dumps({"conn_type": "sqlite", "host": str(database)}))
    config = tmp_path / "sfsync.yaml"
    if settings is not None:
        config.write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("SFSYNC_CONFIG", str(config))
    return server, info, sa.create_engine(f"sqlite:///{database}")


@pytest.fixture
def sync_env(tmp_path, monkeypatch):
    """The demo org with the demo settings; yields (emulator info, marketing engine)."""
    server, info, engine = emulated_org(
        tmp_path, monkeypatch, seed="demo",
        settings={**demo_sync_settings(), "bulk_poll_seconds": 0})
    yield info, engine
    server.stop()


class _CurrentStdout:
    """Writes to whatever sys.stdout is when it writes (pytest swaps it between phases)."""

    def write(self, text):
        return sys.stdout.write(text)

    def flush(self):
        sys.stdout.flush()


@pytest.fixture
def task_log_output(capfd):
    """What dag.test() logs from here on, the tasks' own logs included, in order: call it to
    read what was logged since the last call.

    dag.test() runs tasks in this process. Airflow configures logging once per process, and its
    root handler keeps writing to the sys.stdout of that moment (an earlier test's capture);
    Airflow's structlog loggers take sys.stdout anew under pytest. The handler writes to the
    current sys.stdout meanwhile, so both land in one stream, in order."""
    import airflow.settings  # noqa: F401 - logging configured before its handler is pointed

    handlers = [h for h in logging.getLogger().handlers if h.get_name() == "default"
                and isinstance(h, logging.StreamHandler)]
    assert handlers, "Airflow's root log handler ('default') is gone: see airflow/_shared/logging"
    before = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = _CurrentStdout()  # not setStream(): it flushes the old (closed) one
    capfd.readouterr()
    yield lambda: capfd.readouterr().out
    for handler, stream in zip(handlers, before, strict=True):
        handler.stream = stream

"""The marketing database from its Airflow connection: every form a user writes, or one clear
error that names the connection (never a silent in-memory database)."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from include.sfsync.errors import ConfigError
from include.sfsync.store.engine import engine_for


def _write_and_read(engine) -> int:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS probe (x INTEGER)")
        conn.exec_driver_sql("INSERT INTO probe VALUES (1)")
    engine.dispose()
    return 1


@pytest.mark.parametrize("form", ["airflow_json", "sqlalchemy_uri", "airflow_uri"])
def test_sqlite_connection_forms_open_the_file(form, tmp_path, monkeypatch):
    path = tmp_path / "sub dir" / "marketing.db"
    path.parent.mkdir()
    value = {"airflow_json": json.dumps({"conn_type": "sqlite", "host": str(path)}),
             "sqlalchemy_uri": f"sqlite:///{path}",  # sqlite:////abs/path: the path is the schema
             "airflow_uri": "sqlite://" + str(path).replace("/", "%2F").replace(" ", "%20")}[form]
    monkeypatch.setenv("AIRFLOW_CONN_MARKETING_DB", value)
    engine = engine_for("marketing_db")
    _write_and_read(engine)
    # the rows are in the file, not in a database that vanished with the engine
    check = sa.create_engine(f"sqlite:///{path}")
    with check.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM probe").scalar() == 1
    check.dispose()


@pytest.mark.parametrize("value", ["sqlite://", json.dumps({"conn_type": "sqlite"}),
                                   json.dumps({"conn_type": "sqlite", "host": ":memory:"})])
def test_a_sqlite_connection_without_a_file_is_refused_by_name(value, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_MARKETING_DB", value)
    with pytest.raises(ConfigError, match="connection 'marketing_db': no SQLite database file"):
        engine_for("marketing_db")


def test_an_unsupported_connection_type_names_the_connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_MARKETING_DB", "mysql://u:p@127.0.0.1/db")
    with pytest.raises(ConfigError, match="connection 'marketing_db' has type 'mysql'"):
        engine_for("marketing_db")

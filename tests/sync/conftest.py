"""Fixtures for the pull-sync integration tests: a private emulator org per test and a
marketing database on SQLite and on PostgreSQL (every test runs on both)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa

from tests.fixtures_emulator import Emulator, start_emulator_server


@pytest.fixture
def org(request, tmp_path, monkeypatch):
    """A private org, the demo unless parametrized (``@on_demo_and_standard_orgs``); the Airflow
    connection ``salesforce_default`` points at it."""
    server, info = start_emulator_server(tmp_path / "org", seed=getattr(request, "param", "demo"))
    emu = Emulator(server, info)
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", "")  # restored after the test
    emu.airflow_connection()
    yield emu
    server.stop()


@dataclass
class MarketingDB:
    kind: str
    engine: sa.engine.Engine
    conn: dict = field(default_factory=dict)

    def rows(self, table: str, where: str = "", order: str = "id", **params) -> list[dict]:
        sql = f'SELECT * FROM "{table}"' + (f" WHERE {where}" if where else "") + \
            f" ORDER BY {order}"
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]

    def one(self, table: str, where: str, **params) -> dict:
        found = self.rows(table, where, **params)
        assert len(found) == 1, f"{table} where {where} {params}: {len(found)} rows"
        return found[0]

    def scalar(self, sql: str, **params):
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()

    def execute(self, sql: str, **params) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)

    def columns(self, table: str) -> dict[str, object]:
        return {c["name"]: c["type"] for c in sa.inspect(self.engine).get_columns(table)}

    def snapshot(self) -> dict[str, list[tuple]]:
        """Every synced table's rows (bookkeeping and timestamps of the sync itself left out)."""
        out = {}
        names = [n for n in sa.inspect(self.engine).get_table_names()
                 if not n.startswith("sfsync_")]
        for name in sorted(names):
            cols = [c for c in self.columns(name) if c not in {"sfsync_updated_at",
                                                               "sfsync_created_at"}]
            with self.engine.connect() as conn:
                out[name] = [tuple(r) for r in conn.execute(sa.text(
                    f'SELECT {", ".join(chr(34) + c + chr(34) for c in cols)} FROM "{name}" '
                    "ORDER BY id"))]
        return out


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def marketing_db(request, tmp_path, monkeypatch):
    """The Airflow connection ``marketing_db`` on a fresh SQLite file or PostgreSQL database."""
    from include.sfsync.store.engine import engine_for

    if request.param == "sqlite":
        conn = {"conn_type": "sqlite", "host": str(tmp_path / "mk.db")}
    else:
        url = request.getfixturevalue("postgres_url")
        conn = {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres",
                "schema": url.rsplit("/", 1)[1]}
    monkeypatch.setenv("AIRFLOW_CONN_MARKETING_DB", json.dumps(conn))
    engine = engine_for("marketing_db")
    yield MarketingDB(request.param, engine, conn)
    engine.dispose()

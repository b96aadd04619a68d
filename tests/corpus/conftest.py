"""The bad-input corpus (issue 12): every case gives the sync one bad input and asserts

* the one-line message (no traceback) that names the culprit: the key and the value, the
  connection, the table, the row and the field, the call and the object; and
* that nothing is half-written: data, cursors, outbox entries and org lock as they were (or as
  the documented recovery leaves them), the run marked failed with the cause in ``sfsync_run``.

Speed: each module shares one emulator org (the plain ``standard`` profile: nothing of our
demo's custom objects or fields) and one marketing database per backend (SQLite, then
PostgreSQL); a case that breaks something repairs it before the next one runs.
"""

from __future__ import annotations

import contextlib
import json

import pytest
import sqlalchemy as sa

from include.sfsync import pipeline as P
from include.sfsync.airflow_glue import fail_fast
from tests.conftest import throwaway_postgres
from tests.fixtures_emulator import Emulator, start_emulator_server
from tests.sync.conftest import MarketingDB
from tests.sync.test_pull import Sync


@pytest.fixture(scope="module")
def corpus_org(tmp_path_factory):
    """One plain org (``standard``) for the module; ``salesforce_default`` points at it."""
    server, info = start_emulator_server(tmp_path_factory.mktemp("org"), seed="standard")
    emu = Emulator(server, info)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", "")  # restored after the module
        emu.airflow_connection()
        yield emu
    server.stop()


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def corpus_db(request, tmp_path_factory):
    """One marketing database (``marketing_db``) per backend for the module."""
    from include.sfsync.store.engine import engine_for

    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            conn = {"conn_type": "sqlite", "host": str(tmp_path_factory.mktemp("mk") / "mk.db")}
        else:
            url = stack.enter_context(throwaway_postgres())
            conn = {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432,
                    "login": "postgres", "schema": url.rsplit("/", 1)[1]}
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        mp.setenv("AIRFLOW_CONN_MARKETING_DB", json.dumps(conn))
        engine = engine_for("marketing_db")
        yield MarketingDB(request.param, engine, conn)
        engine.dispose()


@pytest.fixture(scope="module")
def synced(corpus_org, corpus_db):
    """The org copied once into the module's marketing database."""
    sync = Sync(corpus_org, corpus_db)
    sync.cycle("corpus-initial")
    return sync


def one_line(message: str) -> str:
    assert message and "Traceback" not in message and len(message.splitlines()) == 1, message
    return message


def fails(sync: Sync, run_key: str, *, engine=None, **overrides) -> tuple[BaseException, str]:
    """One incremental cycle as the DAG's tasks run it (``airflow_glue.fail_fast``: an error
    that is never retried marks the run failed with its cause); it must fail. Returns the
    error the task ends with and its one-line message."""
    config = sync.config(**overrides)
    with pytest.raises(Exception) as failed:  # noqa: B017 - every case names its own
        fail_fast(lambda: P.run_cycle(run_key, config=config, engine=engine or sync.mdb.engine),
                  run_key)
    error = failed.value
    del failed  # its frames hold the run's Salesforce session open
    return error, one_line(str(error))


def run_row(mdb: MarketingDB, run_key: str) -> dict:
    return mdb.one("sfsync_run", "run_key = :k", order="run_key", k=run_key)


def books(mdb: MarketingDB) -> dict[str, list[tuple]]:
    """The bookkeeping a failed run must leave alone: cursors, outbox entries, org lock."""
    out = {}
    for table, order in (("sfsync_watermark", "sf_object"), ("sfsync_outbox", "table_name, row_id"),
                         ("sfsync_org_lock", "id")):
        with mdb.engine.connect() as conn:
            if not sa.inspect(conn).has_table(table):
                out[table] = None
                continue
            cols = [c["name"] for c in sa.inspect(conn).get_columns(table)
                    if c["name"] not in {"updated_at", "locked_at", "formula_refreshed_at",
                                         "reconciled_at"}]
            out[table] = [tuple(r) for r in conn.execute(sa.text(
                f'SELECT {", ".join(chr(34) + c + chr(34) for c in cols)} FROM "{table}" '
                f"ORDER BY {order}"))]
    return out


def state(mdb: MarketingDB) -> dict:
    """Every synced table's rows and the bookkeeping of :func:`books`."""
    return {**mdb.snapshot(), **books(mdb)}

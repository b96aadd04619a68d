"""Bookkeeping tables made by an older sfsync gain the columns a newer one added."""

from __future__ import annotations

import sqlalchemy as sa

from include.sfsync.store.engine import create_engine
from include.sfsync.store.tables import bookkeeping, create_tables


def test_missing_columns_are_added_and_rows_kept(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:  # sfsync_run as an older version made it
        conn.exec_driver_sql("CREATE TABLE sfsync_run (run_key TEXT PRIMARY KEY, dag_id TEXT, "
                             "kind TEXT, status TEXT NOT NULL, started_at DATETIME, "
                             "ended_at DATETIME, message TEXT)")
        conn.exec_driver_sql("INSERT INTO sfsync_run (run_key, status) VALUES ('old', 'success')")
    books = bookkeeping(sa.MetaData())
    create_tables(engine, books.values())
    create_tables(engine, books.values())  # idempotent
    columns = {c["name"] for c in sa.inspect(engine).get_columns("sfsync_run")}
    assert {"api_calls", "push_stopped"} <= columns
    with engine.connect() as conn:
        row = conn.execute(sa.select(books["run"])).one()
    assert (row.run_key, row.api_calls, row.push_stopped) == ("old", 0, None)

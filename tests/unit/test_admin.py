"""The admin commands: sync status and deliberate re-pointing of the org lock."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from include.sfsync import admin
from include.sfsync.store.engine import create_engine, utcnow
from include.sfsync.store.tables import ensure_bookkeeping


@pytest.fixture
def database(tmp_path, monkeypatch):
    path = tmp_path / "mk.db"
    monkeypatch.setenv("AIRFLOW_CONN_MARKETING_DB",
                       json.dumps({"conn_type": "sqlite", "host": str(path)}))
    engine = create_engine(f"sqlite:///{path}")
    books = ensure_bookkeeping(engine)
    with engine.begin() as conn:
        conn.execute(books["org_lock"].insert().values(id=1, org_id="00D5e0000000SFEEA2",
                                                       instance_url="https://x", locked_at=utcnow()))
        conn.execute(books["watermark"].insert().values(sf_object="Lead", cursor_modstamp=utcnow()))
        conn.execute(books["run"].insert().values(run_key="r1", status="success",
                                                  started_at=utcnow(), ended_at=utcnow()))
        conn.execute(books["count"].insert().values(run_key="r1", sf_object="Lead",
                                                    operation="pull", new=3, updated=1))
    return engine, books


def test_status_shows_lock_last_sync_and_counts(database, capsys):
    assert admin.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "Org: 00D5e0000000SFEEA2" in out and "Last synced" in out
    assert "Lead" in out and "Total" in out


def test_repoint_needs_confirmation_and_drops_cursors(database, capsys):
    engine, books = database
    with pytest.raises(SystemExit):
        admin.main(["repoint-org", "--org-id", "00D5e0000000OTHEA2"])
    assert "add --yes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        admin.main(["repoint-org", "--org-id", "nope", "--yes"])
    assert admin.main(["repoint-org", "--org-id", "00D5e0000000OTHEA2", "--yes"]) == 0
    with engine.connect() as conn:
        assert conn.execute(sa.select(books["org_lock"].c.org_id)).scalar() == "00D5e0000000OTHEA2"
        assert conn.execute(sa.select(sa.func.count()).select_from(books["watermark"])).scalar() == 0


def test_outbox_lists_rejected_changes_and_release_retries_them(database, capsys):
    engine, _books = database
    from include.sfsync.store.outbox import outbox_t

    outbox_t.create(engine, checkfirst=True)
    with engine.begin() as conn:
        for row_id, status in ((1, "quarantined"), (2, "failed"), (3, "pending")):
            conn.execute(outbox_t.insert().values(
                table_name="person", row_id=row_id, op="upsert", created=False,
                columns='["title"]', base="{}", status=status, attempts=3,
                last_error="FIELD_CUSTOM_VALIDATION_EXCEPTION: Lead Score must be between"))
    assert admin.main(["outbox"]) == 0
    out = capsys.readouterr().out
    assert "person 1: quarantined" in out and "person 2: failed" in out
    assert "person 3" not in out and "Lead Score" in out
    assert admin.main(["status"]) == 0
    assert "Push backlog: person failed 1, person pending 1, person quarantined 1" in \
        capsys.readouterr().out
    with pytest.raises(SystemExit):
        admin.main(["release"])
    assert admin.main(["release", "--quarantined"]) == 0
    assert "1 change(s)" in capsys.readouterr().out
    assert admin.main(["release", "--table", "person", "--row-id", "2"]) == 0
    with engine.connect() as conn:
        assert set(conn.execute(sa.select(outbox_t.c.status)).scalars()) == {"pending"}


def test_a_missing_connection_is_one_clear_line(tmp_path, monkeypatch, capsys):
    config = tmp_path / "sfsync.yaml"  # a connection id defined nowhere (env, metadata DB)
    config.write_text("marketing_conn_id: sfsync_test_undefined_db\n")
    monkeypatch.setenv("SFSYNC_CONFIG", str(config))
    assert admin.main(["status"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("error: the Airflow connection 'sfsync_test_undefined_db' is not "
                          "defined: set AIRFLOW_CONN_SFSYNC_TEST_UNDEFINED_DB"), err


def test_connections_come_from_the_airflow_metadata_database(airflow_db, tmp_path, monkeypatch,
                                                             capsys):
    """As after `. scripts/airflow_env.sh`: no AIRFLOW_CONN_* variable, the connection is in
    the metadata database `make airflow` loaded airflow_settings.yaml into."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    path = tmp_path / "from-metadata.db"
    ensure_bookkeeping(create_engine(f"sqlite:///{path}"))
    monkeypatch.delenv("AIRFLOW_CONN_MARKETING_DB", raising=False)
    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id == "marketing_db").delete()
        session.add(Connection(conn_id="marketing_db", conn_type="sqlite", host=str(path)))
    try:
        assert admin.main(["status"]) == 0
        assert "Status: never synced" in capsys.readouterr().out
    finally:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == "marketing_db").delete()

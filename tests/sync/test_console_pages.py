"""The console's figures against the tables they come from, on SQLite and PostgreSQL: a standard
org copied by `admin start`, cycles that pull, push and get a change rejected, then every page
of the console app rendered (FastAPI's TestClient, the Airflow login replaced by a user that may
everything: the browser test covers the login and the permissions)."""

from __future__ import annotations

import importlib
import re
from datetime import UTC, datetime

import pytest
import yaml

from include.sfsync import admin, console, pipeline
from include.sfsync.config import load_config

pytestmark = pytest.mark.integration


class _User:
    def get_name(self) -> str:
        return "tester"


@pytest.fixture
def synced(org, marketing_db, tmp_path, monkeypatch, airflow_db):
    config = tmp_path / "sfsync.yaml"
    config.write_text(yaml.safe_dump({"bulk_poll_seconds": 0}))
    monkeypatch.setenv("SFSYNC_CONFIG", str(config))
    assert admin.main(["start"]) == 0
    org.control("POST", "/simulate", json={"creates": 20, "updates": 30, "deletes": 3,
                                           "rng_seed": 5})
    org.control("POST", "/clock", json={"advance_seconds": 120})
    pipeline.run_cycle("salesforce_incremental_sync:busy", config=load_config())
    lead = marketing_db.rows("person", "sfdc_type = 'Lead' AND NOT sfdc_is_deleted")[0]
    marketing_db.execute("UPDATE person SET state = 'Atlantis' WHERE id = :i", i=lead["id"])
    org.control("POST", "/clock", json={"advance_seconds": 120})
    pipeline.run_cycle("salesforce_incremental_sync:rejected", config=load_config())
    return lead


@pytest.fixture
def client(monkeypatch):
    from fastapi.testclient import TestClient

    console_app = importlib.import_module("sfsync_console.app")  # the package shadows it

    console_app._engines.clear()
    console_app.app.dependency_overrides = {console_app.reader_user: _User,
                                            console_app.editor_user: _User}
    monkeypatch.setattr(console_app, "may", lambda user, method: True)
    yield TestClient(console_app.app)
    console_app.app.dependency_overrides = {}
    console_app._engines.clear()


@pytest.mark.parametrize("org", ["standard"], indirect=True)
def test_every_page_shows_what_the_tables_hold(org, synced, marketing_db, client):
    engine = marketing_db.engine
    lead = synced
    # API usage: the org's usage as Salesforce's latest answer reported it, per day the calls.
    usage = console.api_usage(engine)
    org_usage = org.control("GET", "/counters")["api_usage"]  # the emulator's own figures
    assert (usage["used"], usage["max"]) == (org_usage["used"], org_usage["max"])
    assert usage["today_sync_calls"] == marketing_db.scalar(
        "SELECT sum(api_calls) FROM sfsync_run")
    # Objects: the records of each table, the counts of the last days.
    rows = {r["sf_object"]: r for r in console.object_rows(engine)}
    assert rows["Lead"]["records"] == marketing_db.scalar("SELECT count(*) FROM person")
    assert rows["Account"]["records"] == marketing_db.scalar("SELECT count(*) FROM company")
    today = rows["Lead"]["days"][-1]
    assert today["new"] == marketing_db.scalar(
        "SELECT sum(new) FROM sfsync_count WHERE sf_object = 'Lead'")
    assert rows["Lead"]["lag_seconds"] is not None
    # Backlog: one point per incremental cycle, the rejected change failed.
    flow = console.throughput(engine)
    assert len(flow.cycles) == marketing_db.scalar(
        "SELECT count(*) FROM sfsync_run WHERE kind = 'incremental'")
    assert flow.now["failed"] == 1 and flow.cycles["failed"].tolist()[-1] == 1
    assert flow.cycles["pulled"].sum() == marketing_db.scalar(
        "SELECT sum(new + updated + deleted) FROM sfsync_count c JOIN sfsync_run r "
        "ON r.run_key = c.run_key WHERE r.kind = 'incremental' AND c.operation LIKE 'pull%'")
    # Errors: the rejected change, with the person's e-mail and its state.
    [issue] = console.error_issues(engine)
    assert (issue["sfdc_id"], issue["email"], issue["status"], issue["attempts"]) \
        == (lead["sfdc_lead_id"], lead["email"], "failed", 1)
    assert issue["error_code"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    # People: by e-mail, by Salesforce id; the details carry the pending change and the error.
    [found] = console.find_people(engine, lead["email"])
    assert found["id"] == lead["id"]
    assert console.find_people(engine, lead["sfdc_lead_id"])[0]["id"] == lead["id"]
    details = console.person_details(engine, found)
    assert [p["status"] for p in details["pending"]] == ["failed"]
    marketing_db.execute("UPDATE person SET title = 'Captured' WHERE id = :i", i=lead["id"])
    assert [(p["status"], p["columns"]) for p in console.person_details(engine, found)[
        "pending"]] == [("failed", '["state"]'), ("pending", "title")]
    assert [e["error_code"] for e in details["errors"]] == [issue["error_code"]]
    # Initial copy: `admin start` copied every object's whole history: nothing missing.
    coverage = console.copy_coverage(engine)
    assert coverage.missing_from is None and not coverage.running
    assert all(o["complete"] for o in coverage.objects.values())

    # Every page renders; the figures above are what they show.
    pages = {}
    for path in ("/", "/objects", "/backlog", "/errors", "/errors?tab=jobs",
                 "/errors?tab=conflicts", "/errors?tab=duplicates", "/people",
                 f"/people?q={lead['email']}", "/initial-copy", "/dictionary",
                 "/dictionary?q=compound", "/api/state", "/errors.csv", "/dictionary.csv"):
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:500])
        assert "<script src" not in answer.text  # nothing loaded from elsewhere
        pages[path] = answer.text
    assert f"{usage['used']:,} of {usage['max']:,} daily requests" in pages["/"]
    assert pages["/"].count("<svg") == 2
    assert "Salesforce rejected 1 change(s) in the latest run" in pages["/"]
    lead_row = re.search(r"<tr><td>Lead</td><td>person</td><td class=\"n\">([\d,]+)</td>",
                         pages["/objects"])
    assert lead_row and lead_row.group(1) == f"{rows['Lead']['records']:,}"
    assert 'id="failed">1<' in pages["/backlog"] and pages["/backlog"].count("<svg") == 5
    assert lead["sfdc_lead_id"] in pages["/errors"] and lead["email"] in pages["/errors"]
    assert "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" in pages[f"/people?q={lead['email']}"]
    assert 'id="coverage-complete"' in pages["/initial-copy"]
    assert datetime.now(UTC).strftime("%Y-%m") in pages["/initial-copy"]

    # Retry a selection: the failed change is pending again.
    answer = client.post("/retry", data={"row": [f"person:{lead['id']}"]},
                         follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/sfsync/errors?released=1"
    assert marketing_db.scalar("SELECT status FROM sfsync_outbox WHERE row_id = :i",
                               i=lead["id"]) == "pending"
    assert client.post("/retry", data={"row": ["person:x"]}).status_code == 400

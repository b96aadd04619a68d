"""The sync console in a real Airflow (api-server, scheduler, dag-processor) with the project's
plugins, driven in Debian's chromium by Playwright as a user clicks: log in, open "Salesforce
Sync" in the navigation, see *Last synced* and the latest cycle's counts and the data
dictionary (and its CSV export); see a change Salesforce rejected in Errors (and its CSV), fix it
in the database, press Retry and see it cleared after the next cycle; a viewer cannot retry.
Screenshots of every page go to ``.screenshots/`` (git-ignored; CI keeps them as artifacts)."""

from __future__ import annotations

import csv
import io

import pytest
import requests
import sqlalchemy as sa

from tests.browser.conftest import (
    SHOTS,
    SYNC_NOW,
    cycle,
    engine_of,
    login,
    open_page,
    org_truth,
)

pytestmark = pytest.mark.integration


def test_the_console_shows_the_sync_as_a_user_sees_it(console, browser):
    from playwright.sync_api import expect

    SHOTS.mkdir(exist_ok=True)
    # Without a login the console's own URLs send the browser to Airflow's login page.
    anonymous = requests.get(console.base_url + "/sfsync/", allow_redirects=False, timeout=30)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/api/v2/auth/login?next=%2Fsfsync%2F")

    context, page = login(browser, console, "admin")
    nav = page.get_by_role("link", name="Salesforce Sync")
    expect(nav).to_be_visible()
    frame = page.frame_locator("iframe")
    expect(frame.locator("#sync-status")).to_contain_text("Last synced", timeout=30_000)
    engine = sa.create_engine(f"sqlite:///{console.database}")
    with engine.connect() as conn:
        latest = conn.execute(sa.text("SELECT run_key FROM sfsync_run ORDER BY started_at DESC "
                                      "LIMIT 1")).scalar()
        recorded = {r.sf_object: [f"{getattr(r, k):,}" for k in
                                  ("new", "updated", "deleted", "skipped", "failed")]
                    for r in conn.execute(sa.text(
                        "SELECT * FROM sfsync_count WHERE run_key = :k AND operation = 'pull'"),
                        {"k": latest})}
        fields = conn.execute(sa.text("SELECT sf_object, sf_field, synced FROM sfsync_field "
                                      "ORDER BY sf_object, sf_field")).all()
    engine.dispose()
    # The table is the latest run's recorded counts, row for row.
    expect(frame.locator("main")).to_contain_text(latest)
    shown = {cells[0]: cells[1:] for cells in (
        row.split("\t") for row in frame.locator("#counts tbody tr").all_inner_texts())
        if cells[0] != "Total"}
    assert len(recorded) >= 10 and shown == recorded, (shown, recorded)
    assert any(cells != ["0"] * 5 for cells in recorded.values())  # the activity arrived
    expect(frame.locator("#org")).to_contain_text("Standard Enterprise Org")
    expect(frame.locator("#org")).to_contain_text("production")
    expect(frame.locator("#api-usage")).to_contain_text("daily requests")
    page.screenshot(path=str(SHOTS / "console-overview.png"), full_page=True)

    open_page(frame, "Objects")
    expect(frame.locator("#objects")).to_contain_text("CampaignMember")
    page.screenshot(path=str(SHOTS / "console-objects.png"), full_page=True)
    open_page(frame, "Initial copy")
    expect(frame.locator("#coverage-complete")).to_be_visible()  # the whole org was copied
    page.screenshot(path=str(SHOTS / "console-initial-copy.png"), full_page=True)
    for tab, name in (("jobs", "Failed runs"), ("conflicts", "Conflicts"),
                      ("duplicates", "Duplicates")):
        open_page(frame, "Errors")
        frame.get_by_role("link", name=name, exact=True).click()
        expect(frame.get_by_role("heading", name=name)).to_be_visible()
        page.screenshot(path=str(SHOTS / f"console-errors-{tab}.png"), full_page=True)

    open_page(frame, "Errors")
    expect(frame.get_by_role("heading", name="Record errors")).to_be_visible()
    page.screenshot(path=str(SHOTS / "console-errors.png"), full_page=True)

    open_page(frame, "Data dictionary")
    expect(frame.locator("#dictionary")).to_contain_text("BillingAddress")
    frame.get_by_role("searchbox").fill("compound")
    frame.get_by_role("button", name="Search").click()
    expect(frame.locator("#dictionary tbody tr").first).to_contain_text("compound")
    page.screenshot(path=str(SHOTS / "console-dictionary.png"), full_page=True)

    # The CSV export is the dictionary table, row for row.
    exported = context.request.get(console.base_url + "/sfsync/dictionary.csv")
    assert exported.ok, exported.status
    rows = list(csv.DictReader(io.StringIO(exported.text())))
    assert [(r["sf_object"], r["sf_field"], r["synced"] in ("True", "1", "true")) for r in rows] \
        == [(o, f, bool(s)) for o, f, s in fields]

    # A change Salesforce rejects: listed in Errors with Salesforce's code and message.
    engine = sa.create_engine(f"sqlite:///{console.database}")
    with engine.begin() as conn:
        person, lead_id = conn.execute(sa.text(
            "SELECT id, sfdc_lead_id FROM person WHERE sfdc_type = 'Lead' AND NOT "
            "sfdc_is_deleted ORDER BY id LIMIT 1")).one()
        conn.execute(sa.text("UPDATE person SET state = 'Atlantis' WHERE id = :i"),
                     {"i": person})
    cycle(console)
    open_page(frame, "Errors")
    rejected = frame.locator("#rejected tbody tr", has_text="Atlantis")
    expect(rejected).to_contain_text("failed")
    expect(rejected).to_contain_text(lead_id)  # the record's Salesforce id
    expect(frame.locator("#errors")).to_contain_text("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")
    page.screenshot(path=str(SHOTS / "console-errors-rejected.png"), full_page=True)
    exported = context.request.get(console.base_url + "/sfsync/errors.csv")
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT sfdc_id, error_code FROM sfsync_error "
                                      "ORDER BY created_at DESC, id DESC")).all()
    assert [(r["sfdc_id"], r["error_code"]) for r in csv.DictReader(
        io.StringIO(exported.text()))] == [tuple(r) for r in stored]

    # A viewer sees it but cannot retry: the button is disabled and the action refused.
    viewer, viewer_page = login(browser, console, "viewer")
    viewer_frame = viewer_page.frame_locator("iframe")
    expect(viewer_frame.locator("#sync-status")).to_contain_text("Last synced")
    open_page(viewer_frame, "Errors")
    expect(viewer_frame.locator("#rejected tbody tr").first.get_by_role(
        "button", name="Retry")).to_be_disabled()
    refused = viewer.request.post(console.base_url + "/sfsync/retry",
                                  form={"table": "person", "row_id": str(person)})
    assert refused.status == 403, refused.status
    viewer.close()

    # Fixed in the database, retried, and gone after the next cycle.
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE person SET state = 'Ohio' WHERE id = :i"), {"i": person})
    engine.dispose()
    rejected.get_by_role("button", name="Retry").click()
    expect(frame.locator("#released")).to_contain_text("1 change(s) will be pushed again")
    cycle(console)
    open_page(frame, "Errors")
    expect(frame.get_by_text("Nothing rejected.")).to_be_visible()
    truth = requests.get(console.emulator["control_url"] + "/export",
                         params={"objects": "Lead"}, verify=console.emulator["ca_bundle"],
                         timeout=30).json()["Lead"]
    assert next(r for r in truth if r["Id"] == lead_id)["State"] == "Ohio"
    context.close()


def test_sync_now_from_the_people_page(console, browser):
    """Find a person by e-mail, press Sync now: the run ends and Salesforce has the change."""
    from playwright.sync_api import expect

    engine = engine_of(console)
    with engine.begin() as conn:
        person, email, lead_id = conn.execute(sa.text(
            "SELECT id, email, sfdc_lead_id FROM person WHERE sfdc_type = 'Lead' AND NOT "
            "sfdc_is_deleted AND email IS NOT NULL ORDER BY id DESC LIMIT 1")).one()
        conn.execute(sa.text("UPDATE person SET title = 'Synced from the console' "
                             "WHERE id = :i"), {"i": person})
    engine.dispose()
    context, page = login(browser, console, "admin")
    frame = page.frame_locator("iframe")
    open_page(frame, "People")
    frame.get_by_role("searchbox").fill(email)
    frame.get_by_role("button", name="Find").click()
    expect(frame.locator("#person")).to_contain_text(lead_id)
    expect(frame.locator("#pending")).to_contain_text("title")  # the change waits
    frame.get_by_role("button", name="Sync now").click()
    expect(frame.locator("#sync-state")).to_have_text("success", timeout=180_000)
    expect(frame.locator("#sync-result")).to_contain_text(lead_id)
    page.screenshot(path=str(SHOTS / "console-people.png"), full_page=True)
    assert org_truth(console, "Lead")[lead_id]["Title"] == "Synced from the console"

    # A change Salesforce refuses: the run fails, the page shows Salesforce's error, and the
    # overview says Failed with a link to the failing task's log.
    engine = engine_of(console)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE person SET state = 'Narnia' WHERE id = :i"), {"i": person})
    engine.dispose()
    frame.get_by_role("button", name="Sync now").click()
    expect(frame.locator("#sync-state")).to_have_text("failed", timeout=180_000)
    expect(frame.locator("#sync-error")).to_contain_text(
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")
    page.screenshot(path=str(SHOTS / "console-people-rejected.png"), full_page=True)
    open_page(frame, "Overview")
    expect(frame.locator("#sync-status")).to_contain_text("Failed")
    expect(frame.locator("#failure")).to_contain_text("Narnia")
    frame.locator("#failure-log").click()  # the task's log, as Airflow's log reader has it
    expect(frame.get_by_role("heading", name="Log of sync_people, try 1")).to_be_visible()
    expect(frame.locator("#task-log")).to_contain_text("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")
    expect(frame.locator("#airflow-log-link")).to_contain_text(
        f"/dags/{SYNC_NOW}/runs/")
    page.screenshot(path=str(SHOTS / "console-task-log.png"), full_page=True)
    with engine.begin() as conn:  # fixed: the next cycle pushes it
        conn.execute(sa.text("UPDATE person SET state = 'Ohio' WHERE id = :i"), {"i": person})
    engine.dispose()
    context.close()

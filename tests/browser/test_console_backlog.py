"""The console's Backlog and throughput page in a real Airflow and chromium, on its own
stack (tests/browser/conftest.py) so that it runs beside tests/browser/test_console.py."""

from __future__ import annotations

import pytest
import requests
import sqlalchemy as sa

from tests.browser.conftest import (
    DAG_ID,
    SHOTS,
    cycle,
    engine_of,
    login,
    open_page,
    org_truth,
)

pytestmark = pytest.mark.integration


def test_the_backlog_grows_while_pushes_are_refused_and_drains(console, browser):
    """Salesforce refuses every write (REQUEST_LIMIT_EXCEEDED) for three cycles while people
    keep changing: the backlog page flags it Growing; once writes pass, one cycle drains it."""
    from playwright.sync_api import expect

    SHOTS.mkdir(exist_ok=True)
    control, ca = console.emulator["control_url"], console.emulator["ca_bundle"]
    requests.post(control + "/faults", json={"endpoint": "composite.sobjects",
                                             "kind": "request_limit", "count": 100_000},
                  verify=ca, timeout=30).raise_for_status()
    engine = engine_of(console)
    with engine.connect() as conn:
        people = conn.execute(sa.text(
            "SELECT id, sfdc_lead_id FROM person WHERE sfdc_type = 'Lead' AND NOT "
            "sfdc_is_deleted ORDER BY id LIMIT 12 OFFSET 20")).all()
    with engine.connect() as conn:
        before = conn.execute(sa.text(
            "SELECT count(*) FROM sfsync_outbox WHERE status = 'pending'")).scalar() + \
            conn.execute(sa.text("SELECT count(DISTINCT row_id) FROM sfsync_change WHERE "
                                 "processed_at IS NULL")).scalar()
    changed = []
    try:
        for batch in (people[0:2], people[2:6], people[6:12]):  # 2, then 6, then 12 waiting
            with engine.begin() as conn:
                for person, lead_id in batch:
                    conn.execute(sa.text("UPDATE person SET title = :t WHERE id = :i"),
                                 {"t": f"Backlog {person}", "i": person})
                    changed.append(lead_id)
            cycle(console)
        with engine.connect() as conn:
            waiting = conn.execute(sa.text(
                "SELECT count(*) FROM sfsync_outbox WHERE status = 'pending'")).scalar()
        assert waiting == before + len(changed), (waiting, before)
        context, page = login(browser, console, "admin")
        frame = page.frame_locator("iframe")
        open_page(frame, "Backlog and throughput")
        expect(frame.locator("#growing")).to_have_text("\u25b2 Growing")
        expect(frame.locator("#pending")).to_have_text(str(waiting))
        page.screenshot(path=str(SHOTS / "console-backlog-growing.png"), full_page=True)
    finally:
        requests.delete(control + "/faults", verify=ca, timeout=30).raise_for_status()
    # The draining cycle, watched from the overview while it runs.
    run_id = console.trigger(DAG_ID)
    open_page(frame, "Overview")  # it refreshes itself: seen as soon as the scheduler starts it
    expect(frame.locator("#sync-status")).to_contain_text("Sync in progress", timeout=90_000)
    expect(frame.locator("#running-1")).to_contain_text(run_id)
    page.screenshot(path=str(SHOTS / "console-overview-running.png"), full_page=True)
    [run] = console.wait_runs(DAG_ID, run_ids=[run_id], timeout=300)
    assert run["state"] == "success", console.task_instances(DAG_ID, run["dag_run_id"])
    open_page(frame, "Backlog and throughput")
    expect(frame.locator("#pending")).to_have_text("0")
    expect(frame.locator("#growing")).to_have_text("Not growing")
    page.screenshot(path=str(SHOTS / "console-backlog-drained.png"), full_page=True)
    truth = org_truth(console, "Lead")
    assert all(truth[lead_id]["Title"].startswith("Backlog ") for lead_id in changed)
    engine.dispose()
    context.close()

"""The sync console in a real Airflow (api-server, scheduler, dag-processor) with the project's
plugins, driven in Debian's chromium by Playwright as a user clicks: log in, open "Salesforce
Sync" in the navigation, see *Last synced* and the latest cycle's counts and the data
dictionary (and its CSV export); see a change Salesforce rejected in Errors (and its CSV), fix it
in the database, press Retry and see it cleared after the next cycle; a viewer cannot retry.
Screenshots of every page go to ``.screenshots/`` (git-ignored; CI keeps them as artifacts)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from include.salesforce_emulator.process import start_emulator
from tests.airflow_stack import AirflowStack
from tests.conftest import IN_CI

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / ".screenshots"
DAG_ID = "salesforce_incremental_sync"
SYNC_NOW = "salesforce_sync_now"
USERS = {"admin": ("admin", "admin-pw"), "viewer": ("viewer", "viewer-pw")}


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if IN_CI:
            pytest.fail(message + " (CI=true: browser tests must run, not skip)", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def console(tmp_path_factory, airflow_metadata_url):
    """A synced standard org behind a real Airflow with the console plugin."""
    base = tmp_path_factory.mktemp("console")
    dags = base / "dags"
    dags.mkdir()
    for dag_id in (DAG_ID, SYNC_NOW):
        shutil.copy(ROOT / "dags" / f"{dag_id}.py", dags)
    database = base / "marketing.db"
    with start_emulator(data_dir=base / "emu", seed="standard") as emu:
        info = emu.info
        env = {
            "AIRFLOW_CONN_SALESFORCE_DEFAULT": json.dumps({
                "conn_type": "salesforce", "login": info["username"],
                "password": info["password"],
                "extra": {"security_token": info["security_token"],
                          "domain": info["login_domain"], "version": "59.0"}}),
            "REQUESTS_CA_BUNDLE": info["ca_bundle"],
            "SFSYNC_CONFIG": str(base / "defaults-only.yaml"),  # no file: every default
            "SFSYNC_INCREMENTAL_MINUTES": "1440",  # cycles run when the test triggers them
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # until marketing_db exists
        }
        with AirflowStack(dags_folder=dags, home=base / "home", env=env,
                          pools={"salesforce_api": 2, "salesforce_push": 1},
                          dag_ids=[DAG_ID, SYNC_NOW],
                          plugins_folder=ROOT / "plugins", users=USERS,
                          metadata_url=airflow_metadata_url) as stack:
            # marketing_db lives in Airflow's metadata database, as `make airflow` and the UI
            # keep it: the tasks and the console (in the api-server) must both find it there
            stack.api("POST", "/connections", json={
                "connection_id": "marketing_db", "conn_type": "sqlite", "host": str(database)})
            stack.unpause(SYNC_NOW)  # the People page's Sync now triggers it
            stack.unpause(DAG_ID)  # its scheduled run copies the org (no prior copy)
            [run] = stack.wait_runs(DAG_ID, run_type="scheduled", count=1, timeout=300)
            assert run["state"] == "success", stack.task_instances(DAG_ID, run["dag_run_id"])
            # Sales activity, then a cycle that carries it: the latest run has counts to show.
            control = info["control_url"]
            for path, body in (("/simulate", {"creates": 30, "updates": 40, "deletes": 5,
                                              "rng_seed": 3}),
                               ("/clock", {"advance_seconds": 120})):
                requests.post(control + path, json=body, verify=info["ca_bundle"],
                              timeout=60).raise_for_status()
            [run] = stack.wait_runs(DAG_ID, run_ids=[stack.trigger(DAG_ID)], timeout=300)
            assert run["state"] == "success", stack.task_instances(DAG_ID, run["dag_run_id"])
            stack.database, stack.emulator = database, info
            yield stack


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable,
                                     args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


def _open(frame, page: str) -> None:
    """Open a console page from its navigation (a link may also say "Errors" in the text)."""
    frame.get_by_role("navigation").get_by_role("link", name=page, exact=True).click()


def _cycle(stack: AirflowStack) -> None:
    [run] = stack.wait_runs(DAG_ID, run_ids=[stack.trigger(DAG_ID)], timeout=300)
    assert run["state"] == "success", stack.task_instances(DAG_ID, run["dag_run_id"])


def _login(browser, stack: AirflowStack, user: str):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(stack.base_url + "/plugin/sfsync")  # not logged in: Airflow's login page
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", USERS[user][1])
    page.click("button[type=submit]")
    page.wait_for_url("**/plugin/sfsync**", timeout=30_000)
    return context, page


def test_the_console_shows_the_sync_as_a_user_sees_it(console, browser):
    from playwright.sync_api import expect

    SHOTS.mkdir(exist_ok=True)
    # Without a login the console's own URLs send the browser to Airflow's login page.
    anonymous = requests.get(console.base_url + "/sfsync/", allow_redirects=False, timeout=30)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/api/v2/auth/login?next=%2Fsfsync%2F")

    context, page = _login(browser, console, "admin")
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

    _open(frame, "Objects")
    expect(frame.locator("#objects")).to_contain_text("CampaignMember")
    page.screenshot(path=str(SHOTS / "console-objects.png"), full_page=True)
    _open(frame, "Initial copy")
    expect(frame.locator("#coverage-complete")).to_be_visible()  # the whole org was copied
    page.screenshot(path=str(SHOTS / "console-initial-copy.png"), full_page=True)
    for tab, name in (("jobs", "Failed runs"), ("conflicts", "Conflicts"),
                      ("duplicates", "Duplicates")):
        _open(frame, "Errors")
        frame.get_by_role("link", name=name, exact=True).click()
        expect(frame.get_by_role("heading", name=name)).to_be_visible()
        page.screenshot(path=str(SHOTS / f"console-errors-{tab}.png"), full_page=True)

    _open(frame, "Errors")
    expect(frame.get_by_role("heading", name="Record errors")).to_be_visible()
    page.screenshot(path=str(SHOTS / "console-errors.png"), full_page=True)

    _open(frame, "Data dictionary")
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
    _cycle(console)
    _open(frame, "Errors")
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
    viewer, viewer_page = _login(browser, console, "viewer")
    viewer_frame = viewer_page.frame_locator("iframe")
    expect(viewer_frame.locator("#sync-status")).to_contain_text("Last synced")
    _open(viewer_frame, "Errors")
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
    _cycle(console)
    _open(frame, "Errors")
    expect(frame.get_by_text("Nothing rejected.")).to_be_visible()
    truth = requests.get(console.emulator["control_url"] + "/export",
                         params={"objects": "Lead"}, verify=console.emulator["ca_bundle"],
                         timeout=30).json()["Lead"]
    assert next(r for r in truth if r["Id"] == lead_id)["State"] == "Ohio"
    context.close()


def _engine(stack):
    return sa.create_engine(f"sqlite:///{stack.database}")


def _truth(stack, sf_object: str) -> dict[str, dict]:
    rows = requests.get(stack.emulator["control_url"] + "/export", params={"objects": sf_object},
                        verify=stack.emulator["ca_bundle"], timeout=30).json()[sf_object]
    return {r["Id"]: r for r in rows}


def test_sync_now_from_the_people_page(console, browser):
    """Find a person by e-mail, press Sync now: the run ends and Salesforce has the change."""
    from playwright.sync_api import expect

    engine = _engine(console)
    with engine.begin() as conn:
        person, email, lead_id = conn.execute(sa.text(
            "SELECT id, email, sfdc_lead_id FROM person WHERE sfdc_type = 'Lead' AND NOT "
            "sfdc_is_deleted AND email IS NOT NULL ORDER BY id DESC LIMIT 1")).one()
        conn.execute(sa.text("UPDATE person SET title = 'Synced from the console' "
                             "WHERE id = :i"), {"i": person})
    engine.dispose()
    context, page = _login(browser, console, "admin")
    frame = page.frame_locator("iframe")
    _open(frame, "People")
    frame.get_by_role("searchbox").fill(email)
    frame.get_by_role("button", name="Find").click()
    expect(frame.locator("#person")).to_contain_text(lead_id)
    expect(frame.locator("#pending")).to_contain_text("title")  # the change waits
    frame.get_by_role("button", name="Sync now").click()
    expect(frame.locator("#sync-state")).to_have_text("success", timeout=180_000)
    expect(frame.locator("#sync-result")).to_contain_text(lead_id)
    page.screenshot(path=str(SHOTS / "console-people.png"), full_page=True)
    assert _truth(console, "Lead")[lead_id]["Title"] == "Synced from the console"

    # A change Salesforce refuses: the run fails, the page shows Salesforce's error, and the
    # overview says Failed with a link to the failing task's log.
    engine = _engine(console)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE person SET state = 'Narnia' WHERE id = :i"), {"i": person})
    engine.dispose()
    frame.get_by_role("button", name="Sync now").click()
    expect(frame.locator("#sync-state")).to_have_text("failed", timeout=180_000)
    expect(frame.locator("#sync-error")).to_contain_text(
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")
    page.screenshot(path=str(SHOTS / "console-people-rejected.png"), full_page=True)
    _open(frame, "Overview")
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


def test_the_backlog_grows_while_pushes_are_refused_and_drains(console, browser):
    """Salesforce refuses every write (REQUEST_LIMIT_EXCEEDED) for three cycles while people
    keep changing: the backlog page flags it Growing; once writes pass, one cycle drains it."""
    from playwright.sync_api import expect

    control, ca = console.emulator["control_url"], console.emulator["ca_bundle"]
    requests.post(control + "/faults", json={"endpoint": "composite.sobjects",
                                             "kind": "request_limit", "count": 100_000},
                  verify=ca, timeout=30).raise_for_status()
    engine = _engine(console)
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
            _cycle(console)
        with engine.connect() as conn:
            waiting = conn.execute(sa.text(
                "SELECT count(*) FROM sfsync_outbox WHERE status = 'pending'")).scalar()
        assert waiting == before + len(changed), (waiting, before)
        context, page = _login(browser, console, "admin")
        frame = page.frame_locator("iframe")
        _open(frame, "Backlog and throughput")
        expect(frame.locator("#growing")).to_have_text("\u25b2 Growing")
        expect(frame.locator("#pending")).to_have_text(str(waiting))
        page.screenshot(path=str(SHOTS / "console-backlog-growing.png"), full_page=True)
    finally:
        requests.delete(control + "/faults", verify=ca, timeout=30).raise_for_status()
    # The draining cycle, watched from the overview while it runs.
    run_id = console.trigger(DAG_ID)
    _open(frame, "Overview")  # it refreshes itself: seen as soon as the scheduler starts it
    expect(frame.locator("#sync-status")).to_contain_text("Sync in progress", timeout=90_000)
    expect(frame.locator("#running-1")).to_contain_text(run_id)
    page.screenshot(path=str(SHOTS / "console-overview-running.png"), full_page=True)
    [run] = console.wait_runs(DAG_ID, run_ids=[run_id], timeout=300)
    assert run["state"] == "success", console.task_instances(DAG_ID, run["dag_run_id"])
    _open(frame, "Backlog and throughput")
    expect(frame.locator("#pending")).to_have_text("0")
    expect(frame.locator("#growing")).to_have_text("Not growing")
    page.screenshot(path=str(SHOTS / "console-backlog-drained.png"), full_page=True)
    truth = _truth(console, "Lead")
    assert all(truth[lead_id]["Title"].startswith("Backlog ") for lead_id in changed)
    engine.dispose()
    context.close()

"""The console's browser tests share one stack per test file: a synced standard org behind a real
Airflow (api-server, scheduler, dag-processor) with the project's plugins (``console``), and
Debian's chromium driven by Playwright (``browser``). Module-scoped: the files run in parallel
on separate pytest-xdist workers, each with its own stack."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from include.salesforce_emulator.process import start_emulator
from tests.airflow_stack import AirflowStack
from tests.conftest import IN_CI

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


def open_page(frame, page: str) -> None:
    """Open a console page from its navigation (a link may also say "Errors" in the text)."""
    frame.get_by_role("navigation").get_by_role("link", name=page, exact=True).click()


def cycle(stack: AirflowStack) -> None:
    [run] = stack.wait_runs(DAG_ID, run_ids=[stack.trigger(DAG_ID)], timeout=300)
    assert run["state"] == "success", stack.task_instances(DAG_ID, run["dag_run_id"])


def login(browser, stack: AirflowStack, user: str):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(stack.base_url + "/plugin/sfsync")  # not logged in: Airflow's login page
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", USERS[user][1])
    page.click("button[type=submit]")
    page.wait_for_url("**/plugin/sfsync**", timeout=30_000)
    return context, page



def engine_of(stack):
    return sa.create_engine(f"sqlite:///{stack.database}")


def org_truth(stack, sf_object: str) -> dict[str, dict]:
    rows = requests.get(stack.emulator["control_url"] + "/export", params={"objects": sf_object},
                        verify=stack.emulator["ca_bundle"], timeout=30).json()[sf_object]
    return {r["Id"]: r for r in rows}

"""The sync console's pages: a FastAPI app mounted by Airflow's api-server under ``/sfsync``.

Every page needs an Airflow login (the UI's ``_token`` cookie or a Bearer token) and the right to
read the sync DAGs' runs; a browser without a login is sent to Airflow's login page and back.
Pages read the marketing database's bookkeeping (``include.sfsync.console``) and never call
Salesforce. Airflow's server modules are imported inside the routes: every Airflow component
imports this plugin, and only the api-server serves it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.templating import Jinja2Templates

PREFIX = "/sfsync"
SYNC_DAG = "salesforce_incremental_sync"  # whose runs a user must be allowed to read

app = FastAPI(title="Salesforce Sync console", docs_url=None, redoc_url=None, openapi_url=None)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def _number(value) -> str:
    return "" if value is None else f"{value:,.0f}" if isinstance(value, float) else f"{value:,}"


def _duration(seconds) -> str:
    """3 d 4 h, 2 h 5 min, 4 min 10 s, 12 s."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    for unit, size, small, small_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60),
                                          ("min", 60, "s", 1)):
        if seconds >= size:
            return f"{seconds // size} {unit} {seconds % size // small_size} {small}"
    return f"{seconds} s"


def _when(value) -> str:
    return "" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


templates.env.filters.update(number=_number, duration=_duration, when=_when)
_bearer = HTTPBearer(auto_error=False)
REJECTED_SHOWN = 500  # rejected changes listed on the Errors page (Retry all covers the rest)
_engines: dict = {}


class LoginRequired(Exception):
    pass


@app.exception_handler(LoginRequired)
def _to_login(request: Request, _exc: LoginRequired):
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/api/v2/auth/login?" + urlencode({"next": target}), status_code=303)


async def _user(request: Request, creds: HTTPAuthorizationCredentials | None):
    from airflow.api_fastapi.core_api.security import get_user

    try:
        return await get_user(request, None, creds)
    except HTTPException:
        raise LoginRequired() from None


def may(user, method: str) -> bool:
    """May ``user`` read (GET) or trigger and clear (POST) the sync DAG's runs?"""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )

    return get_auth_manager().is_authorized_dag(method=method, access_entity=DagAccessEntity.RUN,
                                                details=DagDetails(id=SYNC_DAG), user=user)


def _allowed(method: str, refusal: str):
    """A dependency: the logged-in Airflow user (else the login page), allowed ``method`` on the
    sync DAG's runs (else 403 with ``refusal``)."""
    async def user_allowed(request: Request,
                           creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]):
        user = await _user(request, creds)
        if not may(user, method):
            raise HTTPException(403, f"Forbidden: {refusal} {SYNC_DAG}")
        return user
    return user_allowed


# Pages need read access to the sync DAG's runs; actions (Retry, Sync now) the right to trigger it.
reader_user = _allowed("GET", "the console needs read access to")
editor_user = _allowed("POST", "this action needs the right to trigger")


ReaderUser = Annotated[Any, Depends(reader_user)]
EditorUser = Annotated[Any, Depends(editor_user)]


def marketing_engine():
    """The marketing database (the ``marketing_db`` connection), one engine per process."""
    from include.sfsync.admin import use_airflow_connections
    from include.sfsync.config import load_config
    from include.sfsync.store.engine import engine_for

    conn_id = load_config().marketing_conn_id
    if conn_id not in _engines:
        # outside a task, Airflow's SDK reads only AIRFLOW_CONN_*: look in the metadata
        # database (and secrets backends) too, where `make airflow` and the UI keep it
        use_airflow_connections(conn_id)
        _engines[conn_id] = engine_for(conn_id)
    return _engines[conn_id]


def _page(request: Request, name: str, **context) -> HTMLResponse:
    from include.sfsync.console import LABELS

    return templates.TemplateResponse(request, name, {"page": name.split(".")[0],
                                                      "labels": LABELS, **context})


def _form_number(form, name: str, default: str = "") -> int:
    """A whole number from a posted form, else 400 naming the field and the value."""
    value = str(form.get(name, default))
    if not value.isdigit():
        raise HTTPException(400, f"{name} must be a number, not {value!r}")
    return int(value)


def _csv(rows: list[dict], columns: tuple[str, ...], filename: str) -> Response:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _days(rows: list[dict]) -> list[str]:
    return [f"{r['day']:%a %d}" for r in rows]


@app.get("/", response_class=HTMLResponse)
def overview(request: Request, user: ReaderUser):
    from include.sfsync.console import api_usage, sync_state
    from include.sfsync.store.ledger import COUNT_KEYS
    from sfsync_console import airflow_state, charts

    engine = marketing_engine()
    state = sync_state(engine)
    totals = {k: sum(c.get(k, 0) for c in state.counts.values()) for k in COUNT_KEYS}
    usage = api_usage(engine)
    next_at, paused = airflow_state.next_cycle()
    return _page(request, "overview.html", state=state, keys=COUNT_KEYS, totals=totals,
                 usage=usage, running=airflow_state.running_runs(), next_at=next_at,
                 paused=paused, user=user.get_name(),
                 failed=airflow_state.failed_task(state.run_key)
                 if state.status == "failed" else None,
                 usage_chart=charts.bars("Sync API calls per day", _days(usage["days"]),
                                         [d["sync_calls"] for d in usage["days"]]),
                 peak_chart=charts.bars("Org's daily API usage (highest seen)",
                                        _days(usage["days"]),
                                        [d["org_peak"] for d in usage["days"]]))


@app.get("/api/state")
def state_json(user: ReaderUser):
    from dataclasses import asdict

    from include.sfsync.console import sync_state

    state = sync_state(marketing_engine())
    body = asdict(state)
    body["backlog"] = [{"table": t, "status": s, "rows": n} for (t, s), n in state.backlog.items()]
    body["headline"] = state.headline
    return JSONResponse(jsonable_encoder(body))


@app.get("/objects", response_class=HTMLResponse)
def objects(request: Request, user: ReaderUser):
    from include.sfsync.console import object_rows
    from include.sfsync.store.ledger import COUNT_KEYS
    from sfsync_console import charts

    rows = object_rows(marketing_engine())
    for r in rows:
        r["chart"] = charts.sparkline([d["new"] + d["updated"] + d["deleted"] for d in r["days"]],
                                      f"{r['sf_object']} changes per day")
    days = [d["day"] for d in rows[0]["days"]] if rows else []
    return _page(request, "objects.html", rows=rows, keys=COUNT_KEYS, days=days,
                 user=user.get_name())


@app.get("/backlog", response_class=HTMLResponse)
def backlog(request: Request, user: ReaderUser, hours: int = 24):
    from include.sfsync.console import GROWING_CYCLES, throughput
    from sfsync_console import charts

    flow = throughput(marketing_engine(), hours=max(1, min(hours, 24 * 30)))
    cycles = flow.cycles
    labels = [f"{t:%d %H:%M}" for t in cycles["started_at"]]
    hour_labels = [f"{t:%d %H:00}" for t in flow.hours["hour"]]

    def series(frame, column):
        return [None if v != v else int(v) for v in frame[column]]  # NaN (v != v): no point

    return _page(
        request, "backlog.html", flow=flow, hours=hours, growing_cycles=GROWING_CYCLES,
        user=user.get_name(),
        recent=cycles.tail(12).iloc[::-1].to_dict("records"),
        charts=[charts.line("Changes waiting for Salesforce (pending, per cycle)", labels,
                            series(cycles, "pending")),
                charts.line("Records pulled per cycle (Salesforce to database)", labels,
                            series(cycles, "pulled")),
                charts.line("Records pushed per cycle (database to Salesforce)", labels,
                            series(cycles, "pushed")),
                charts.bars("Records pulled per hour", hour_labels,
                            series(flow.hours, "pulled"), width=760),
                charts.bars("Records pushed per hour", hour_labels,
                            series(flow.hours, "pushed"), width=760)])


@app.get("/errors", response_class=HTMLResponse)
def errors(request: Request, user: ReaderUser, tab: str = "records", sf_object: str = "",
           code: str = "", q: str = "", released: int | None = None):
    from include.sfsync import console
    from sfsync_console import airflow_state

    engine = marketing_engine()
    context = {"tab": tab, "sf_object": sf_object, "code": code, "q": q, "released": released,
               "can_retry": may(user, "POST"), "user": user.get_name(),
               "instance_url": console.sync_state(engine).instance_url}
    if tab == "jobs":
        runs = console.failed_runs(engine)
        for r in runs:
            r["task"] = airflow_state.failed_task(r["run_key"])
        context["runs"] = runs
    elif tab == "conflicts":
        context.update(rows=console.conflict_rows(engine), columns=console.CONFLICT_COLUMNS)
    elif tab == "duplicates":
        context["rows"] = console.duplicate_rows(engine)
    else:
        context.update(rejected=console.rejected_changes(engine, limit=REJECTED_SHOWN + 1),
                       rejected_shown=REJECTED_SHOWN,
                       rejected_columns=console.REJECTED_COLUMNS,
                       issues=console.error_issues(engine, sf_object=sf_object, code=code, q=q),
                       issue_columns=console.ISSUE_COLUMNS, filters=console.error_filters(engine))
    return _page(request, "errors.html", **context)


@app.post("/retry")
async def retry(request: Request, user: EditorUser):
    """Rejected changes become pending again (one row, the selected ones, or every quarantined
    one): the next cycle pushes them. What ``admin release`` does."""
    from include.sfsync.console import release

    form = await request.form()
    picked = form.getlist("row")  # "table:row_id" of the ticked rows
    if form.get("row_id"):
        picked.append(f"{form.get('table')}:{form['row_id']}")
    engine = marketing_engine()
    if picked:
        n = 0
        for item in picked:
            table, _, row_id = str(item).rpartition(":")
            if not table or not row_id.isdigit():
                raise HTTPException(400, f"not a table:row id: {item!r}")
            n += release(engine, table=table, row_id=int(row_id))
    else:
        n = release(engine)
    return RedirectResponse(f"{PREFIX}/errors?released={n}", status_code=303)


@app.get("/errors.csv")
def errors_csv(user: ReaderUser):
    """Every record error, streamed: 100,000 rows never sit in memory at once."""
    from include.sfsync.console import ERROR_COLUMNS, error_export

    def lines():
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(ERROR_COLUMNS)
        for rows in error_export(marketing_engine()):
            writer.writerows(rows)
            yield out.getvalue()
            out.seek(0)
            out.truncate()
        yield out.getvalue()

    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": 'attachment; filename="sfsync-errors.csv"'})


@app.get("/people", response_class=HTMLResponse)
def people(request: Request, user: ReaderUser, q: str = "", run: str = ""):
    from include.sfsync import console
    from sfsync_console import airflow_state

    engine = marketing_engine()
    found = console.find_people(engine, q) if q else []
    person = found[0] if len(found) == 1 else None
    outcome = None
    if run:
        outcome = airflow_state.dag_run(airflow_state.SYNC_NOW_DAG, run) or {"state": "unknown"}
        outcome["errors"] = console.run_errors(engine, f"{airflow_state.SYNC_NOW_DAG}:{run}")
    return _page(request, "people.html", q=q, found=found, person=person,
                 details=console.person_details(engine, person) if person else None,
                 run=run, outcome=outcome, can_sync=may(user, "POST"), user=user.get_name(),
                 sync_now_paused=airflow_state.is_paused(airflow_state.SYNC_NOW_DAG),
                 instance_url=console.sync_state(engine).instance_url)


@app.post("/people/sync")
async def sync_person(request: Request, user: EditorUser):
    """Sync now: trigger ``salesforce_sync_now`` for one person; the page follows the run."""
    from sfsync_console import airflow_state

    person_id = _form_number(await request.form(), "person_id")
    run_id = airflow_state.trigger_sync_now(person_id, user.get_name())
    return RedirectResponse(f"{PREFIX}/people?" + urlencode({"q": person_id, "run": run_id}),
                            status_code=303)


@app.get("/initial-copy", response_class=HTMLResponse)
def initial_copy(request: Request, user: ReaderUser, months: int = 12,
                 backfill: int | None = None, refused: str = ""):
    from include.sfsync.console import copy_coverage

    months = max(1, min(months, 240))
    return _page(request, "initial_copy.html",
                 coverage=copy_coverage(marketing_engine(), months=months), months=months,
                 can_backfill=may(user, "POST"), backfill=backfill, refused=refused,
                 user=user.get_name())


@app.post("/initial-copy/backfill")
async def backfill_missing(request: Request, user: EditorUser):
    """Backfill the initial copy over the months the page shows missing (one run per month)."""
    from airflow.exceptions import AirflowException
    from airflow.models.backfill import NoBackfillRunsToCreate

    from include.sfsync.console import copy_coverage
    from sfsync_console import airflow_state

    months = _form_number(await request.form(), "months", "12")
    page = f"{PREFIX}/initial-copy?months={months}"
    coverage = copy_coverage(marketing_engine(), months=months)
    if coverage.missing_from is None:
        return RedirectResponse(page, status_code=303)
    try:
        backfill_id = airflow_state.backfill_initial_copy(
            coverage.missing_from, coverage.missing_until, user.get_name())
    except (AirflowException, NoBackfillRunsToCreate) as exc:  # one running already, ...
        return RedirectResponse(page + "&" + urlencode({"refused": f"{type(exc).__name__}: "
                                                                  f"{exc}"}), status_code=303)
    return RedirectResponse(f"{page}&backfill={backfill_id}", status_code=303)


@app.get("/log", response_class=HTMLResponse)
def task_log(request: Request, user: ReaderUser, run_key: str):
    """The log of the task that failed a sync run, read by Airflow's own log reader: the
    console opens inside Airflow's sandboxed frame, which may not navigate the UI itself."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )

    from sfsync_console import airflow_state

    failed = airflow_state.failed_task(run_key)
    if failed is None:
        raise HTTPException(404, f"no failed task in run {run_key!r}")
    if not get_auth_manager().is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.TASK_LOGS,
            details=DagDetails(id=failed.dag_id), user=user):
        raise HTTPException(403, f"Forbidden: reading {failed.dag_id}'s task logs")
    return _page(request, "log.html", failed=failed, run_key=run_key,
                 lines=airflow_state.task_log_lines(failed), user=user.get_name())


@app.get("/dictionary", response_class=HTMLResponse)
def dictionary(request: Request, user: ReaderUser, q: str = ""):
    from include.sfsync.console import DICTIONARY_COLUMNS, dictionary_rows

    rows = dictionary_rows(marketing_engine())
    if q:
        needle = q.lower()
        rows = [r for r in rows if any(needle in str(v).lower() for v in r.values())]
    return _page(request, "dictionary.html", rows=rows, columns=DICTIONARY_COLUMNS, q=q,
                 user=user.get_name())


@app.get("/dictionary.csv")
def dictionary_csv(user: ReaderUser):
    from include.sfsync.console import DICTIONARY_COLUMNS, dictionary_rows

    return _csv(dictionary_rows(marketing_engine()), DICTIONARY_COLUMNS, "sfsync-fields.csv")

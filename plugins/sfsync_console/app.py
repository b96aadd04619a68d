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
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.templating import Jinja2Templates

PREFIX = "/sfsync"
SYNC_DAG = "salesforce_incremental_sync"  # whose runs a user must be allowed to read

app = FastAPI(title="Salesforce Sync console", docs_url=None, redoc_url=None, openapi_url=None)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
_bearer = HTTPBearer(auto_error=False)
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


def _csv(rows: list[dict], columns: tuple[str, ...], filename: str) -> Response:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@app.get("/", response_class=HTMLResponse)
def overview(request: Request, user: ReaderUser):
    from include.sfsync.console import sync_state
    from include.sfsync.store.ledger import COUNT_KEYS

    state = sync_state(marketing_engine())
    totals = {k: sum(c.get(k, 0) for c in state.counts.values()) for k in COUNT_KEYS}
    return _page(request, "overview.html", state=state, keys=COUNT_KEYS, totals=totals,
                 user=user.get_name())


@app.get("/api/state")
def state_json(user: ReaderUser):
    from dataclasses import asdict

    from include.sfsync.console import sync_state

    state = sync_state(marketing_engine())
    body = asdict(state)
    body["backlog"] = [{"table": t, "status": s, "rows": n} for (t, s), n in state.backlog.items()]
    body["headline"] = state.headline
    return JSONResponse(jsonable_encoder(body))


@app.get("/errors", response_class=HTMLResponse)
def errors(request: Request, user: ReaderUser, released: int | None = None):
    from include.sfsync.console import (
        ERROR_COLUMNS,
        REJECTED_COLUMNS,
        error_rows,
        rejected_changes,
    )

    engine = marketing_engine()
    return _page(request, "errors.html", rows=error_rows(engine, limit=1000),
                 columns=ERROR_COLUMNS, rejected=rejected_changes(engine),
                 rejected_columns=REJECTED_COLUMNS, can_retry=may(user, "POST"),
                 released=released, user=user.get_name())


@app.post("/retry")
async def retry(request: Request, user: EditorUser):
    """Rejected changes become pending again (one row, or every quarantined one): the next
    cycle pushes them. What ``admin release`` does."""
    from include.sfsync.console import release

    form = await request.form()
    if form.get("row_id"):
        try:
            row_id = int(form["row_id"])
        except ValueError:
            raise HTTPException(400, f"row_id must be a number, not {form['row_id']!r}") \
                from None
        n = release(marketing_engine(), table=str(form.get("table")), row_id=row_id)
    else:
        n = release(marketing_engine())
    return RedirectResponse(f"errors?released={n}", status_code=303)


@app.get("/errors.csv")
def errors_csv(user: ReaderUser):
    from include.sfsync.console import ERROR_COLUMNS, error_rows

    return _csv(error_rows(marketing_engine()), ERROR_COLUMNS, "sfsync-errors.csv")


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

"""HTTPS server: the route table, request dispatch (auth, limits, faults, counters) and the
uvicorn runner used by ``python -m include.salesforce_emulator`` and the test fixtures."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from email.utils import formatdate
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn

from . import auth, bulk2, control, rest
from .errors import ApiError, not_found
from .http import (
    JSON_TYPE,
    MAX_VERSION,
    MIN_VERSION,
    Request,
    Response,
    error_response,
    json_response,
    match,
)
from .http import route as R
from .store import Org
from .tls import ensure_certificates

log = logging.getLogger("salesforce_emulator")

D = "/services/data/{v}"
ROUTES = [
    R("POST", r".*/services/Soap/u/(?P<v>\d+\.\d)", auth.soap_login, "login.soap", "login"),
    R("POST", r".*/services/oauth2/token", auth.oauth_token, "login.oauth", "login"),
    R("GET", r"/services/data/?", rest.versions, "versions", "open"),
    R("GET", D + r"/?", rest.resources, "resources"),
    R("GET", D + r"/limits/?", rest.limits, "limits"),
    R("GET", D + r"/limits/recordCount/?", rest.record_count, "limits.recordCount"),
    R("GET", D + r"/query/?", rest.query, "query"),
    R("GET", D + r"/queryAll/?", rest.query_all, "queryAll"),
    R("GET", D + r"/(?:query|queryAll)/(?P<locator>01g[A-Za-z0-9]+-\d+)", rest.query_more,
      "queryMore"),
    R("GET", D + r"/sobjects/?", rest.describe_global, "describeGlobal"),
    R("GET", D + r"/sobjects/(?P<o>\w+)/describe/?", rest.describe, "describe"),
    R("GET", D + r"/sobjects/(?P<o>\w+)/updated/?", rest.updated, "updated"),
    R("GET", D + r"/sobjects/(?P<o>\w+)/deleted/?", rest.deleted, "deleted"),
    R("GET", D + r"/sobjects/(?P<o>\w+)/?", rest.basic_info, "sobject.info"),
    R("POST", D + r"/sobjects/(?P<o>\w+)/?", rest.create, "sobject.create"),
    R("GET|PATCH|DELETE", D + r"/sobjects/(?P<o>\w+)/(?P<id>[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?)/?",
      rest.record, "sobject.record"),
    R("GET|PATCH|DELETE|POST", D + r"/sobjects/(?P<o>\w+)/(?P<f>\w+)(?:/(?P<val>[^/]*))?/?",
      rest.by_external_id, "sobject.externalId"),
    R("GET|POST|PATCH|DELETE", D + r"/composite/sobjects(?:/(?P<o>\w+)(?:/(?P<f>\w+))?)?/?",
      rest.collections, "composite.sobjects"),
    R("POST", D + r"/composite/batch/?", rest.composite_batch, "composite.batch"),
    R("POST", D + r"/composite/?", rest.composite, "composite"),
    R("POST", D + r"/jobs/query/?", bulk2.create_query_job, "bulk2.query.create"),
    R("GET", D + r"/jobs/query/?", lambda o, r: bulk2.list_jobs(o, r, "query"), "bulk2.query.list"),
    R("GET|PATCH|DELETE", D + r"/jobs/query/(?P<job>750\w+)/?", bulk2.query_job, "bulk2.query.job"),
    R("GET", D + r"/jobs/query/(?P<job>750\w+)/results/?", bulk2.query_results,
      "bulk2.query.results"),
    R("POST", D + r"/jobs/ingest/?", bulk2.create_ingest_job, "bulk2.ingest.create"),
    R("GET", D + r"/jobs/ingest/?", lambda o, r: bulk2.list_jobs(o, r, "ingest"),
      "bulk2.ingest.list"),
    R("PUT", D + r"/jobs/ingest/(?P<job>750\w+)/batches/?", bulk2.upload, "bulk2.ingest.upload"),
    R("GET|PATCH|DELETE", D + r"/jobs/ingest/(?P<job>750\w+)/?", bulk2.ingest_job,
      "bulk2.ingest.job"),
    R("GET", D + r"/jobs/ingest/(?P<job>750\w+)/(?P<segment>(?i:successfulResults|failedResults|"
      r"unprocessedRecords))/?", bulk2.ingest_results, "bulk2.ingest.results"),
]
C = "/__emulator__"
CONTROL_ROUTES = [
    R("GET", C + r"/?", control.info, "control.info", "control"),
    R("POST", C + r"/seed", control.seed, "control.seed", "control"),
    R("POST", C + r"/simulate", control.simulate, "control.simulate", "control"),
    R("POST", C + r"/records/(?P<o>\w+)", control.records, "control.records", "control"),
    R("PATCH|DELETE", C + r"/records/(?P<o>\w+)/(?P<id>\w+)", control.records,
      "control.records", "control"),
    R("POST", C + r"/late-commit", control.late_commit, "control.late_commit", "control"),
    R("POST", C + r"/undelete", control.undelete, "control.undelete", "control"),
    R("POST", C + r"/merge", control.merge, "control.merge", "control"),
    R("POST", C + r"/convert-lead", control.convert_lead, "control.convert_lead", "control"),
    R("POST", C + r"/purge", control.purge, "control.purge", "control"),
    R("GET|POST", C + r"/clock", control.clock, "control.clock", "control"),
    R("GET|PATCH", C + r"/settings", control.settings, "control.settings", "control"),
    R("GET|POST|DELETE", C + r"/faults", control.faults, "control.faults", "control"),
    R("POST", C + r"/sessions/expire", control.expire_sessions, "control.sessions", "control"),
    R("GET|DELETE", C + r"/counters", control.counters, "control.counters", "control"),
    R("GET", C + r"/export", control.export, "control.export", "control"),
    R("GET", C + r"/deleted-log", control.deleted_log, "control.deleted_log", "control"),
    R("POST", C + r"/schema/(?P<o>\w+)/fields", control.schema_field, "control.schema",
      "control"),
    R("PATCH|DELETE", C + r"/schema/(?P<o>\w+)/fields/(?P<f>\w+)", control.schema_field,
      "control.schema", "control"),
]
ALL_ROUTES = CONTROL_ROUTES + ROUTES
ENDPOINTS = sorted({r.endpoint for r in ROUTES if r.kind == "rest"})
_SERVER_ERRORS = {
    "http_500": ApiError(500, "UNKNOWN_EXCEPTION", "An unexpected error occurred. Please include "
                         "this ErrorId if you contact support: 1751382871-emulated (-1)"),
    "http_503": ApiError(503, "SERVER_UNAVAILABLE", "Server temporarily unavailable, please "
                         "retry your request."),
}

# The call ran, but its answer is a 200 whose body is not the JSON it should be, as a proxy, a
# maintenance page or a dropped connection upstream produce.
_MALFORMED = {
    "html_page": lambda r: Response(200, b"<!DOCTYPE html><html><head><title>Service "
                                    b"Unavailable</title></head><body><h1>Down for maintenance"
                                    b"</h1></body></html>", "text/html;charset=UTF-8", r.headers),
    "empty_body": lambda r: Response(200, b"", r.content_type or JSON_TYPE, r.headers),
    "truncated_json": lambda r: Response(200, r.body[:len(r.body) // 2], r.content_type,
                                         r.headers),
}


def _creates(endpoint: str, req: Request) -> bool:
    """Whether the request creates records (faults may be armed on creates only): a create,
    a collection of creates, or an upsert by external id (single or collection)."""
    if endpoint == "sobject.create":
        return True
    if endpoint == "composite.sobjects":
        return req.method == "POST" or (req.method == "PATCH" and bool(req.params.get("f")))
    if endpoint == "sobject.externalId":
        return req.method == "PATCH" or (req.method == "POST" and not req.params.get("val"))
    return False


class Dispatcher:
    def __init__(self, org: Org):
        self.org = org

    def __call__(self, req: Request) -> Response:
        route, params, path_known = match(ALL_ROUTES, req.method, req.path)
        if route is None:
            if path_known:
                return json_response(405, [{"errorCode": "METHOD_NOT_ALLOWED", "message":
                                            f"HTTP Method '{req.method}' not allowed. Allowed are "
                                            "GET,PATCH,POST,DELETE"}])
            return error_response(not_found())
        req.params = params
        try:
            if route.kind == "rest":
                return self._rest(route, req, count=True)
            with self.org.lock:
                return self._call(route, req)
        except ApiError as err:
            response = error_response(err)
            if route.kind == "rest":
                with self.org.lock:
                    response.headers["Sforce-Limit-Info"] = self.org.limit_info()
            return response
        finally:
            if route.kind in {"rest", "login"}:
                with self.org.lock:
                    self.org.flush_usage()

    def _call(self, route, req: Request) -> Response:
        handler = route.handler
        if handler in (rest.composite_batch, rest.composite):
            return handler(self.org, req, self.sub_request)
        if route.kind == "login":
            self.org.calls[route.endpoint] = self.org.calls.get(route.endpoint, 0) + 1
        return handler(self.org, req)

    def _rest(self, route, req: Request, *, count: bool) -> Response:
        org = self.org
        version = int(req.params["v"].split(".")[0])
        if not MIN_VERSION <= version <= MAX_VERSION:
            raise not_found()
        delay = 0.0
        create = _creates(route.endpoint, req)
        with org.lock:
            if req.session is None:
                token = auth.bearer_token(req)
                req.session = org.check_session(token)
                if org.take_fault(route.endpoint, {"session_expiry"}, create=create):
                    org.expire_sessions(token)
                    raise ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")
            if org.take_fault(route.endpoint, {"request_limit"}, create=create):
                raise ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            org.purge_expired()
            if count:
                org.count_call(route.endpoint,
                               api_calls=0 if route.endpoint == "composite.batch" else 1)
            server_error = org.take_fault(route.endpoint, {"http_500", "http_503"}, create=create)
            if server_error:
                raise _SERVER_ERRORS[server_error.kind]
            slow = org.take_fault(route.endpoint, {"slow"}, create=create)
            if slow:
                delay = slow.delay_seconds
        if delay:
            time.sleep(delay)
        with org.lock:
            response = self._call(route, req)
            response.headers.setdefault("Sforce-Limit-Info", org.limit_info())
            # the call ran (and committed): its answer may be held back, as a slow network or
            # a busy server does; a client that dies meanwhile never learns what it did
            late = org.take_fault(route.endpoint, {"slow_answer"}, create=create)
            if late:
                req.answer_delay = max(req.answer_delay, late.delay_seconds)
            # a composite's sub-requests answer inside its JSON: only a whole answer is mangled
            malformed = None if req.internal or response.status >= 300 else org.take_fault(
                route.endpoint, set(_MALFORMED))
            if malformed:
                response = _MALFORMED[malformed.kind](response)
        if req.answer_delay and not req.internal:  # outside the lock: the org serves others
            time.sleep(req.answer_delay)
        return response

    def sub_request(self, parent: Request, method: str, url: str, body, *, count: bool) -> Response:
        """A composite or batch sub-request, run with the parent's session."""
        parts = urlsplit(url.replace(" ", "%20"))
        sub = Request(method=method, path=parts.path, query_string=parts.query,
                      headers=parent.headers, session=parent.session, internal=True,
                      body=b"" if body is None else json.dumps(body).encode())
        route, params, _ = match(ROUTES, method, sub.path)
        if route is None or route.kind != "rest":
            return error_response(not_found())
        sub.params = params
        try:
            return self._rest(route, sub, count=count)
        except ApiError as err:
            response = error_response(err)
            response.headers.setdefault("Sforce-Limit-Info", self.org.limit_info())
            return response
        finally:  # a held-back answer holds back the whole composite's
            parent.answer_delay = max(parent.answer_delay, sub.answer_delay)


class AsgiApp:
    def __init__(self, org: Org):
        self.dispatch = Dispatcher(org)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        req = Request(method=scope["method"], path=scope.get("raw_path", b"").decode("latin-1")
                      .split("?", 1)[0] or scope["path"],
                      query_string=scope.get("query_string", b"").decode("latin-1"),
                      headers=headers, body=b"".join(chunks))
        try:
            response = await asyncio.to_thread(self.dispatch, req)
        except Exception:  # noqa: BLE001 - never show a stack trace to a client
            log.exception("unhandled error for %s %s", req.method, req.path)
            response = error_response(ApiError(500, "UNKNOWN_EXCEPTION",
                                               "An unexpected error occurred."))
        # Salesforce's casing (Sforce-Locator, Sforce-Limit-Info, Content-Type): some clients
        # look headers up case-sensitively.
        out_headers = [(k.encode(), str(v).encode()) for k, v in response.headers.items()]
        # The org's clock, as a real server's Date header carries the server's time.
        out_headers.append((b"Date", formatdate(self.dispatch.org.now().timestamp(),
                                                usegmt=True).encode()))
        if response.content_type:
            out_headers.append((b"Content-Type", response.content_type.encode()))
        await send({"type": "http.response.start", "status": response.status,
                    "headers": out_headers})
        await send({"type": "http.response.body", "body": response.body})


class EmulatorServer:
    """Runs the emulator on 127.0.0.1 in a background thread (``port=0`` picks a free port)."""

    def __init__(self, data_dir: Path, *, port: int = 0, seed: str | int | None = None):
        self.data_dir = Path(data_dir)
        self.org = Org(self.data_dir)
        self.requested_port = port
        self.seed = seed
        self.tls = ensure_certificates(self.data_dir)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def prepare_org(self) -> None:
        """Seed a brand-new org; an existing one keeps its state across restarts."""
        from .seed import seed_org

        has_users = self.org.db.execute('SELECT COUNT(*) FROM "User"').fetchone()[0]
        if not has_users:
            seed_org(self.org, self.seed if self.seed is not None else "demo")

    def _config(self) -> uvicorn.Config:
        return uvicorn.Config(AsgiApp(self.org), host="127.0.0.1", port=self.requested_port,
                              ssl_certfile=str(self.tls["cert"]), ssl_keyfile=str(self.tls["key"]),
                              # h11 writes header names as given (httptools lowercases them)
                              http="h11", log_level="warning", access_log=False, lifespan="off",
                              timeout_keep_alive=30, date_header=False,
                              timeout_graceful_shutdown=1)

    def _bound_port(self) -> int:
        return self._server.servers[0].sockets[0].getsockname()[1]

    def _publish(self, port: int) -> dict:
        s = self.org.settings
        base = f"https://127.0.0.1:{port}"
        self.org.instance_url = base
        self.org.public_info = {
            "instance_url": base, "login_domain": f"127.0.0.1:{port}/emu",
            "username": s.username, "password": s.password, "security_token": s.security_token,
            "consumer_key": s.consumer_key, "consumer_secret": s.consumer_secret,
            "ca_bundle": str(self.tls["ca"].resolve()), "control_url": base + "/__emulator__",
            "api_version": "59.0",
        }
        return self.org.public_info

    def start(self, timeout: float = 30) -> dict:
        self.prepare_org()
        self._server = uvicorn.Server(self._config())
        self._server.install_signal_handlers = lambda: None  # not the main thread
        self._thread = threading.Thread(target=self._server.run, name="salesforce-emulator",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Salesforce emulator did not start")
            time.sleep(0.02)
        return self._publish(self._bound_port())

    def stop(self) -> None:
        if self._server:
            self._server.should_exit = True
        if self._thread:
            self._thread.join(3)
            if self._thread.is_alive():  # a client still holds a connection open: cut it
                self._server.force_exit = True
                self._thread.join(10)
        with self.org.lock:
            self.org.flush_usage()

    async def serve_forever(self, on_ready) -> None:
        self.prepare_org()
        self._server = uvicorn.Server(self._config())
        task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if task.done():
                await task
                raise RuntimeError("the Salesforce emulator did not start")
            await asyncio.sleep(0.02)
        on_ready(self._publish(self._bound_port()))
        await task
        with self.org.lock:
            self.org.flush_usage()

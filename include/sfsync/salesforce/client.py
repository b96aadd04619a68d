"""The sync's Salesforce client: Airflow's SalesforceHook underneath, every API call counted.

API calls are money, so everything that can share a call does: describes for all objects go in
one ``/composite`` request, and so do the change probes (replication ``updated``/``deleted``
sub-requests) and up to five queries.

A refused login raises :class:`LoginFailed` (never retried); an answer whose body is not JSON
raises :class:`SalesforceCallError` naming the call and its objects (retried like a 5xx).
"""

from __future__ import annotations

import csv
import io
import json
import queue
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qs, quote, urlsplit

import requests

from include.sfsync.errors import LoginFailed, SalesforceCallError, SalesforceUnreachable
from include.sfsync.salesforce.soql import select
from include.sfsync.values import CSV_TYPED, csv_value

API_VERSION = "59.0"
COMPOSITE_LIMIT = 25  # sub-requests per /composite call
COMPOSITE_QUERY_LIMIT = 5  # of which queries or collections
FIRST_PAGE = 2_000  # records in a Bulk query's first results page; each next one doubles


def limit_hit(exc: Exception) -> bool:
    """The exception is Salesforce's REQUEST_LIMIT_EXCEEDED (a 403 of simple-salesforce)."""
    return "REQUEST_LIMIT_EXCEEDED" in str(getattr(exc, "content", "")) + str(exc)


def daily_api_usage(sf) -> tuple[int | None, int | None]:
    """(used, max) of the org's daily API requests (a simple-salesforce ``Salesforce``): the
    limits resource, else the ``Sforce-Limit-Info`` header of its last answer."""
    daily = (sf.limits() or {}).get("DailyApiRequests") or {}
    if "Max" in daily and "Remaining" in daily:
        return int(daily["Max"]) - int(daily["Remaining"]), int(daily["Max"])
    usage = (sf.api_usage or {}).get("api-usage")
    return (usage.used, usage.total) if usage is not None else (None, None)


class CountingSession(requests.Session):
    """Counts the requests that Salesforce bills as API calls (logins are free); an API answer
    that is not JSON fails, when it is read, naming the call (:func:`_checked_json`)."""

    def __init__(self):
        super().__init__()
        self.api_calls = 0
        self.server_date: str | None = None  # the Date header of the latest answer
        self.api_usage: tuple[int, int] | None = None  # (used, max) today, from the latest
        self.last_path: str | None = None  # the path of the latest call (never its query)
        self.page_records: str | None = None  # Sforce-NumberOfRecords of the latest answer
        self.job_objects: dict[str, str] = {}  # Bulk job id -> its object (errors name it)

    # (connect, read) seconds: a call that gets no answer fails instead of hanging the task
    timeout: tuple[float, float] = (30.0, 600.0)

    def request(self, method, url, *args, **kwargs):
        api = "/services/data/" in str(url) or "/services/async/" in str(url)
        if api:
            self.api_calls += 1
        kwargs.setdefault("timeout", self.timeout)

        def what() -> str:
            return _describe_call(method, url, kwargs, self.job_objects)

        try:
            response = super().request(method, url, *args, **kwargs)
        except requests.RequestException as exc:  # refused, reset, timed out: no answer
            raise SalesforceUnreachable(what(), _no_answer(exc)) from exc
        self.last_path = urlsplit(str(url)).path
        self.page_records = response.headers.get("Sforce-NumberOfRecords")
        self.server_date = response.headers.get("Date") or self.server_date
        self.api_usage = parse_limit_info(response.headers.get("Sforce-Limit-Info")) \
            or self.api_usage
        if api:
            if method == "POST" and response.status_code < 300 and _JOB_CREATE.search(
                    self.last_path):
                self._remember_job(response, what())
            response.json = _checked_json(response, what)
            if response.status_code >= 300 and response.status_code != 401:
                _raise_naming_the_call(response, what)
        return response

    def _remember_job(self, response: requests.Response, what: str) -> None:
        """A new Bulk job's object, for the calls that name the job by its id only."""
        try:
            job_id = response.json().get("id")
        except (ValueError, AttributeError):
            return  # not JSON: the caller's parse fails, naming the call
        objects = what.partition(" (")[2].rstrip(")")
        if job_id and objects:
            self.job_objects[str(job_id)] = objects


_JOB_CREATE = re.compile(r"/jobs/(query|ingest)/?$")
_JOB_ID = re.compile(r"/jobs/(?:query|ingest)/(\w+)")


def _raise_naming_the_call(response: requests.Response, what):
    """The exception simple-salesforce raises for an error answer (same class and attributes:
    callers and its 401 re-login are unchanged), its message naming the call and its objects
    (:func:`_describe_call`) instead of the whole URL (whose query string may hold personal
    data) or, for a 5xx, nothing at all."""
    from simple_salesforce.exceptions import SalesforceError
    from simple_salesforce.util import exception_handler

    try:
        exception_handler(response)
    except SalesforceError as exc:
        content = exc.content
        if isinstance(content, list) and all(isinstance(e, dict) for e in content):
            said = "; ".join(f"{e.get('errorCode')}: {e.get('message')}" for e in content)
        else:
            said = str(content)[:300] or "(no body)"
        said = " ".join(said.split())  # one line
        text = f"{what()}: HTTP {response.status_code} {said}"
        exc.message = text.replace("{", "{{").replace("}", "}}")  # every class formats it
        raise


def _no_answer(exc: BaseException) -> str:
    """Why a request got no answer, in a few words (never its URL: the query string may hold
    personal data): ``connection refused``, ``connection reset by peer``, ``read timed out``."""
    if isinstance(exc, requests.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.Timeout):
        return "read timed out (no answer within the client's timeout)"
    seen, todo = set(), [exc]
    while todo:
        err = todo.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, OSError) and err.strerror:  # "Connection refused", "[SSL: ...] ..."
            return err.strerror[:1].lower() + err.strerror[1:]
        if type(err).__name__ == "RemoteDisconnected":
            return "connection closed without an answer"
        todo += [a for a in getattr(err, "args", ()) if isinstance(a, BaseException)]
        todo += [getattr(err, "reason", None), err.__cause__, err.__context__]
    return type(exc).__name__


def _checked_json(response: requests.Response, what):
    """``response.json`` that raises :class:`SalesforceCallError` naming the call
    (:func:`_describe_call`) for a body that is not JSON: an HTML page, nothing, JSON cut short.
    simple-salesforce parses every answer with ``response.json()`` and would let a bare
    JSONDecodeError through, naming neither Salesforce nor the call."""
    parse = response.json

    def json_or_error(**options):
        try:
            return parse(**options)
        except requests.JSONDecodeError as exc:
            raise SalesforceCallError(what(), {
                "status": response.status_code,
                "body": f"not JSON ({response.headers.get('Content-Type') or 'no content type'}, "
                        f"{len(response.content)} bytes): {exc}"}) from exc

    return json_or_error


_SOBJECT_PATH = re.compile(r"/sobjects/(\w+)")
_SUBQUERY = re.compile(r"\([^()]*\)")
_FROM = re.compile(r"\bFROM\s+(\w+)", re.IGNORECASE)


def soql_object(soql: str) -> str:
    """The object a SOQL query reads (not those of its sub-queries and semi-joins)."""
    while _SUBQUERY.search(soql):
        soql = _SUBQUERY.sub("", soql)
    return next(iter(_FROM.findall(soql)), "?")


def _describe_call(method: str, url: str, request: dict, jobs: dict | None = None) -> str:
    """``Salesforce GET /services/data/v59.0/query (Lead)``: the method, the path (never the
    query string: its SOQL may hold e-mail addresses and other personal data) and the objects
    the request names (sObject paths, the main object of its SOQL, the records' types, a Bulk
    job's object); none for a query locator or a job id."""
    names: list[str] = []

    def from_url(address: str) -> None:
        parts = urlsplit(address)
        names.extend(_SOBJECT_PATH.findall(parts.path))
        for soql in parse_qs(parts.query).get("q", []):
            from_soql(soql)

    def from_soql(soql: str) -> None:
        while _SUBQUERY.search(soql):  # sub-queries and semi-joins name other objects
            soql = _SUBQUERY.sub("", soql)
        names.extend(_FROM.findall(soql)[:1])

    from_url(str(url))
    params, body = request.get("params"), request.get("json")
    if isinstance(params, dict) and params.get("q"):
        from_soql(str(params["q"]))
    if body is None and isinstance(request.get("data"), str):  # Bulk 2.0 job requests
        try:
            body = json.loads(request["data"])
        except ValueError:
            body = None
    if isinstance(body, dict):
        for sub in body.get("compositeRequest") or ():
            from_url(sub.get("url", ""))
            names.extend(r.get("attributes", {}).get("type", "")
                         for r in (sub.get("body") or {}).get("records") or ())
        names.extend(r.get("attributes", {}).get("type", "") for r in body.get("records") or ())
        names.append(body.get("object") or "")
        if body.get("query"):
            from_soql(str(body["query"]))
    job = _JOB_ID.search(urlsplit(str(url)).path)
    if job and jobs and job[1] in jobs:  # a Bulk job's later calls: its object
        names.append(jobs[job[1]])
    objects = [n for n in dict.fromkeys(names) if n]
    return (f"Salesforce {method} {urlsplit(str(url)).path}"
            + (f" ({', '.join(objects)})" if objects else ""))


def parse_limit_info(header: str | None) -> tuple[int, int] | None:
    """(used, max) from ``Sforce-Limit-Info: api-usage=18/15000`` (free with every answer)."""
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        used, _, most = value.partition("/")
        if name == "api-usage" and used.isdigit() and most.isdigit():
            return int(used), int(most)
    return None


def _login_failure(hook, exc) -> str:
    """One line on a refused login: the Airflow connection, its user and login domain,
    Salesforce's code and message, and what to check (no password, token or key)."""
    conn = hook.get_connection(hook.conn_id)
    extras = conn.extra_dejson
    domain = hook._get_field(extras, "domain") or "login"  # simple-salesforce's default
    if hook._get_field(extras, "consumer_key"):
        check = ("the connected app's consumer key and secret (or the private key of its "
                 "certificate), its permitted users and IP relaxation")
    else:
        check = "the user name, the password and the security token"
    said = " ".join(f"{exc.code or ''}: {exc.auth_message}".split())[:300].rstrip(".")
    return (f"Salesforce refused the login of Airflow connection {hook.conn_id!r} (user "
            f"{conn.login or '(none: the connected app runs as its user)'}, login domain "
            f"{domain}): {said}. Check {check}, the domain (login for production, test for a "
            "sandbox, or the org's My Domain) and the user's login IP ranges. Not retried: "
            "repeated failed logins lock the user out")


def _login_call(hook) -> str:
    """``Salesforce login of Airflow connection 'salesforce_default' (login domain login)``."""
    domain = hook._get_field(hook.get_connection(hook.conn_id).extra_dejson, "domain") or "login"
    return f"Salesforce login of Airflow connection {hook.conn_id!r} (login domain {domain})"


def _check_page(page: str, announced: str | None, describe_fields: dict[str, dict]
                ) -> tuple[list[str] | None, str | None]:
    """(the header, what is wrong with the page or None) of a Bulk CSV results page.

    A page is checked whole before its records count: an HTML page, an empty body or CSV cut
    short (a proxy, a dropped connection) fails the read, naming the call, instead of passing
    for fewer records while the cursor moves on. The check reads the rows without keeping them
    (a page's cells would take several times its text's memory)."""
    expected = int(announced or 0)
    reader = csv.reader(io.StringIO(page, newline=""))
    header = next(reader, None)
    if not header and not expected:
        return None, None
    fields = [h for h in header or () if h in describe_fields or "." in h]
    if not header or fields != header:
        return header, f"empty ({expected} records announced)" if not page.strip() else \
            f"not the CSV of the fields asked for (it begins {page[:60]!r})"
    rows, width, ragged = 0, len(header), False
    for row in reader:
        rows += 1
        ragged = ragged or len(row) != width
    # every value is quoted: a whole page ends with a line ending or a closing quote
    if rows != expected or ragged or not page.endswith(("\n", '"')):
        return header, (f"CSV cut short ({rows} rows of the {expected} it announces, "
                        f"{len(page)} characters)")
    return header, None


class _PageAhead:
    """The pages of a Bulk 2.0 query (a generator of CSV texts), each as (CSV text, its
    header, the call's path, what is wrong with it), the next one downloading and checked
    (``check``) in a thread while the caller works through the current one. One page ahead at
    most: the thread fetches a page only when the caller has taken the one before. The caller
    makes no other call on the session meanwhile (the read loops load or stage what they
    read)."""

    def __init__(self, pages, session: CountingSession, check):
        self.pages, self.session, self.check = pages, session, check
        self.wanted: queue.Queue = queue.Queue()
        self.ready: queue.Queue = queue.Queue()
        self.thread: threading.Thread | None = None

    def __iter__(self):
        return self

    def __next__(self) -> tuple[str, list[str] | None, str | None, str | None]:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="sfsync-bulk-page-ahead",
                                           daemon=True)
            self.thread.start()
            self.wanted.put(True)
        kind, item = self.ready.get()
        if kind == "page":
            self.wanted.put(True)  # the next page downloads while this one is worked through
            return item
        self.thread.join()
        self.thread = False  # finished: every later call ends the iteration too
        if kind == "error":
            raise item
        raise StopIteration

    def _run(self) -> None:
        try:
            while self.wanted.get():
                try:
                    page = next(self.pages)
                except StopIteration:
                    self.ready.put(("end", None))
                    return
                path = self.session.last_path
                header, problem = self.check(page, self.session.page_records)
                self.ready.put(("page", (page, header, path, problem)))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
            self.ready.put(("error", exc))

    def close(self) -> None:
        """Stop after the page being fetched (the caller stopped early, or failed)."""
        if self.thread:
            self.wanted.put(False)
            self.thread.join()
            self.thread = False


class SalesforceClient:
    def __init__(self, sf, session: CountingSession, *, bulk_poll_seconds: float = 2.0):
        self.sf = sf
        self.session = session
        self.bulk_poll_seconds = bulk_poll_seconds

    @classmethod
    def from_connection(cls, conn_id: str, *, bulk_poll_seconds: float = 2.0) -> SalesforceClient:
        """Log in through the Airflow connection; a refused login raises :class:`LoginFailed`,
        and so does a refused login again after the session expired."""
        from airflow.providers.salesforce.hooks.salesforce import SalesforceHook  # heavy: on use
        from simple_salesforce.exceptions import SalesforceAuthenticationFailed

        session = CountingSession()
        hook = SalesforceHook(salesforce_conn_id=conn_id, session=session)

        def log_in(login):
            try:
                return login()
            except SalesforceAuthenticationFailed as exc:
                raise LoginFailed(_login_failure(hook, exc)) from None
            except SalesforceUnreachable as exc:  # the login domain did not answer
                raise SalesforceUnreachable(_login_call(hook), exc.cause) from exc

        sf = log_in(lambda: hook.conn)
        # simple-salesforce logs in again through this partial when a session expires (401)
        relogin = sf._salesforce_login_partial
        if relogin is not None:
            sf._salesforce_login_partial = lambda: log_in(relogin)
        return cls(sf, session, bulk_poll_seconds=bulk_poll_seconds)

    @property
    def api_calls(self) -> int:
        return self.session.api_calls

    @property
    def api_usage(self) -> tuple[int, int] | None:
        """The org's daily API requests (used, max) as of this client's latest answer."""
        return self.session.api_usage

    @property
    def version(self) -> str:
        return self.sf.sf_version

    @property
    def org_id_prefix(self) -> str:
        """The org id's 15 case-sensitive characters: every session id starts with them."""
        return (self.sf.session_id or "")[:15]

    @property
    def instance_url(self) -> str:
        return f"https://{self.sf.sf_instance}"

    def server_now(self) -> datetime:
        """Salesforce's clock (from its latest Date header), not ours: replication windows are
        judged by the server."""
        if self.session.server_date:
            try:
                return parsedate_to_datetime(self.session.server_date).astimezone(UTC)
            except (TypeError, ValueError):
                pass
        return datetime.now(UTC)

    def organization(self) -> dict:
        """The org's Id, Name and IsSandbox (one query)."""
        return self.sf.query(select("Organization", ["Id", "Name", "IsSandbox"]))["records"][0]

    # --- composite -------------------------------------------------------------------------

    def composite(self, subrequests: list[dict]) -> list[dict]:
        """Run sub-requests (``method``, ``url`` relative to /services/data/vXX.X, optional
        ``body``), as few /composite calls as the limits allow; results in order."""
        results: list[dict] = []
        batch: list[dict] = []
        heavy = 0
        for sub in subrequests:
            is_heavy = sub["url"].startswith(("/query", "/queryAll", "/composite/sobjects"))
            if len(batch) == COMPOSITE_LIMIT or (is_heavy and heavy == COMPOSITE_QUERY_LIMIT):
                results += self._composite_call(batch)
                batch, heavy = [], 0
            batch.append(sub)
            heavy += is_heavy
        if batch:
            results += self._composite_call(batch)
        return results

    def _composite_call(self, batch: list[dict]) -> list[dict]:
        base = f"/services/data/v{self.version}"
        body = {"allOrNone": False, "compositeRequest": [
            {"method": s.get("method", "GET"), "url": base + s["url"], "referenceId": f"r{i}",
             **({"body": s["body"]} if "body" in s else {})} for i, s in enumerate(batch)]}
        response = self.sf.restful("composite", method="POST", json=body)
        return [{"status": r["httpStatusCode"], "body": r["body"]}
                for r in response["compositeResponse"]]

    # --- describe ---------------------------------------------------------------------------

    def describe_all(self, names: list[str]) -> dict[str, dict]:
        """Describe every object in one call (per 25): name -> describe; invisible ones omitted."""
        return self.described(names, self.composite(self.describe_requests(names)))

    @staticmethod
    def describe_requests(names: list[str]) -> list[dict]:
        """The describe sub-requests, for a composite call that carries others too."""
        return [{"url": f"/sobjects/{n}/describe"} for n in names]

    @staticmethod
    def described(names: list[str], results: list[dict]) -> dict[str, dict]:
        """The answers to :meth:`describe_requests`: name -> describe; invisible ones omitted."""
        out = {}
        for name, result in zip(names, results, strict=True):
            if result["status"] == 200:
                out[name] = result["body"]
            elif result["status"] != 404:
                raise SalesforceCallError(f"describe {name}", result)
        return out

    # --- queries ----------------------------------------------------------------------------

    @staticmethod
    def query_url(soql: str, *, include_deleted: bool) -> str:
        return ("/queryAll/" if include_deleted else "/query/") + "?q=" + quote(soql, safe="")

    def query_more(self, next_url: str) -> dict:
        return self.sf.query_more(next_url, identifier_is_url=True)

    def start_bulk_query(self, sobject: str, soql: str, *, include_deleted: bool) -> str:
        """Create a Bulk API 2.0 query job and return its id without waiting for it: Salesforce
        prepares the jobs created up front in parallel (``bulk_query(job_id=...)`` reads one)."""
        from simple_salesforce.bulk2 import ColumnDelimiter, LineEnding, Operation

        jobs = getattr(self.sf.bulk2, sobject)._client  # noqa: SLF001 - see _bulk_job_pages
        return jobs.create_job(Operation.query_all if include_deleted else Operation.query, soql,
                               ColumnDelimiter.COMMA, LineEnding.LF)["id"]

    def bulk_query(self, sobject: str, soql: str, *, include_deleted: bool,
                   describe_fields: dict[str, dict], page_size: int = 50_000,
                   job_id: str | None = None) -> Iterator[dict]:
        """Records of a Bulk API 2.0 query job, typed like REST JSON (CSV is all text): the job
        ``job_id`` (created earlier for ``soql``), else a new one.

        The next page downloads (in a thread) while the caller works through the current one:
        at most one page waits ahead, so memory stays flat in the job's size."""
        from simple_salesforce.exceptions import SalesforceOperationError

        pages = self._bulk_job_pages(sobject, soql, include_deleted=include_deleted,
                                     page_size=page_size, job_id=job_id)
        ahead = _PageAhead(pages, self.session,
                           lambda page, announced: _check_page(page, announced, describe_fields))
        try:
            yield from self._bulk_pages(sobject, ahead, describe_fields)
        except SalesforceOperationError as exc:  # the job failed (QUERY_TIMEOUT, ...)
            raise SalesforceCallError(f"Salesforce GET {self.session.last_path} ({sobject})", {
                "status": 200, "body": f"Bulk API 2.0 query job failed: {exc}"}) from exc
        finally:
            ahead.close()

    def _bulk_job_pages(self, sobject: str, soql: str, *, include_deleted: bool, page_size: int,
                        job_id: str | None) -> Iterator[str]:
        """The CSV pages of a Bulk 2.0 query job (simple-salesforce's ``query_all`` loop), the
        first ones small: the caller starts on the records while the emulator or Salesforce
        prepares the next, larger page (up to ``page_size`` records)."""
        jobs = getattr(self.sf.bulk2, sobject)._client  # noqa: SLF001 - query_all's own client,
        # whose page size is fixed
        job_id = job_id or self.start_bulk_query(sobject, soql, include_deleted=include_deleted)
        jobs.wait_for_job(job_id, True, self.bulk_poll_seconds)
        locator, size = "", FIRST_PAGE
        while True:
            result = jobs.get_query_results(job_id, locator, min(size, page_size))
            yield result["records"]
            locator = result["locator"]
            if not locator:
                return
            size *= 2

    def _bulk_pages(self, sobject: str, pages, describe_fields: dict[str, dict]
                    ) -> Iterator[dict]:
        # Text cells need only "" -> None; the typed ones go through csv_value.
        types = {h: describe_fields.get(h, {}).get("type", "string") for h in describe_fields}
        for page, header, path, problem in pages:
            if problem:  # found by the check before any of the page's records counted
                raise SalesforceCallError(
                    f"Salesforce GET {path} ({sobject})",
                    {"status": 200, "body": f"Bulk API 2.0 query results {problem}"})
            if header is None:
                continue  # no records, none announced
            typed = [(i, h, types[h]) for i, h in enumerate(header)
                     if types.get(h, "string") in CSV_TYPED]
            reader = csv.reader(io.StringIO(page, newline=""))
            next(reader)
            for row in reader:  # one row at a time: a page's cells never all exist at once
                rec = dict(zip(header, [v or None for v in row], strict=True))
                for i, h, t in typed:
                    rec[h] = csv_value(t, row[i])
                yield rec


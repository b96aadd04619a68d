"""Benchmark the sync console: every GET page on a big marketing database, SQLite and PostgreSQL.

    .venv/bin/python scripts/bench_console.py [--people 1000000] [--errors 100000] [--days 30]
                                              [--backends sqlite,postgres] [--keep] [--fresh]
                                              [--repeat 5] [--url /people?q=Garcia ...]
                                              [--profile] [--outbox 3000] [--changes 300000]
    make bench-console BENCH_ARGS="--people 50000 --errors 5000 --keep"   # a quick run

The goal (issue 10): a page renders in under 1 s with 1,000,000 people, 100,000 errors and 30
days of counts in the marketing database.

1. **The database.** The real sync (``pipeline.run_cycle``) runs once against the bundled
   emulator's plain ``standard`` org (``--seed-records``, small) into a fresh marketing database
   (a SQLite file, or a scratch PostgreSQL database on ``--postgres-url``): the real synced
   tables, indexes, capture triggers, data dictionary and org lock. Set-based SQL (a recursive
   CTE on SQLite, ``generate_series`` on PostgreSQL; no Python loop of inserts) then scales it:
   ``--people`` rows in ``person`` (leads 55 %, contacts 45 % of which a quarter converted
   leads, 0.1 % marketing-only people never synced; distinct e-mails, Salesforce ids, accounts
   of the synced companies, the other columns from the synced people), ``--days`` of
   incremental runs every 5 minutes in ``sfsync_run`` (one in 97 failed, the latest a success)
   with ``sfsync_count`` rows per run and object (pull for every synced object, push for the
   two-way ones, ``push_activity`` for Task), ``--errors`` rows in ``sfsync_error`` spread over
   those runs, ``--outbox`` rows in ``sfsync_outbox`` (pending, failed, quarantined; the
   marketing-only people among them), ``sfsync_conflict``, ``sfsync_duplicate`` and
   ``sfsync_merge`` rows, ``--changes`` captured local edits in ``sfsync_change`` (folded, the
   last 50 not yet), and the initial copy's monthly ``sfsync_copy_window`` rows. PostgreSQL
   is then vacuumed and analysed (what autovacuum does after such inserts); SQLite is not
   analysed (the sync never runs ANALYZE there).
2. **The pages.** In a fresh child process per backend: ``sfsync_console.app`` (``plugins/`` on
   ``sys.path``, as Airflow has it) through FastAPI's ``TestClient``, the ``marketing_db``
   connection (``AIRFLOW_CONN_MARKETING_DB``) pointing at the benchmark database, the login
   dependencies (``reader_user``, ``editor_user``) overridden with an Airflow
   ``SimpleAuthManager`` admin user (``simple_auth_manager_all_admins``; the permission checks
   in the pages still run through Airflow's auth manager). Every GET route of the app is found
   from ``app.routes`` (routes with path parameters are listed as skipped) and measured bare,
   then once with each optional query parameter there is a real value of the data for (``q``:
   a contact's e-mail, and the same e-mail in capitals as someone may type it: no exact match;
   ``sf_object``, ``code``: an error's); required query parameters get such values or the
   route is skipped.
   Links on the rendered pages to other console pages with query parameters (tabs, periods,
   one record's page) are measured too. Each page: the first (cold) render, then the median of
   ``--repeat`` warm renders, status, response size, and the SQL statements of the median
   render: how many, their time in ``cursor.execute`` (psycopg fetches the rows there; SQLite
   only up to the first row) and the slowest one, for the marketing and Airflow databases
   alike. A page at half the budget or more gets one more warm render under cProfile (every
   page with ``--profile``): the functions with the most own time are printed. Airflow's
   metadata database (the pages read the sync DAGs' runs there too) is a freshly migrated,
   empty SQLite one: no DAG, no runs.

Fails (exit status 1) when a page answers anything but 200 or a page's warm median is 1 s or
more; CSV exports are measured and reported but not held to the 1 s budget. ``--keep`` keeps
the generated database (``.bench/console-sqlite-*.db``, PostgreSQL ``sfsync_bench_console_*``)
and reuses it next time if the sizes and the sync's schema code (``include/sfsync/store/``:
tables, schema, capture, engine) are the same, else rebuilds it (``--fresh`` always does). Prints a table per
backend and writes ``.bench/console.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / ".bench"
POSTGRES_URL = os.environ.get("SFSYNC_BENCH_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/postgres")
BUDGET_S = 1.0
GENERATOR = 3  # bump when the generated data changes: kept databases of another one are rebuilt
RUN_SECONDS = 300  # the incremental DAG runs every 5 minutes
INCREMENTAL = "salesforce_incremental_sync"
TWO_WAY = ("Lead", "Contact", "Campaign", "CampaignMember")
# Pages about one record of Airflow's own (its metadata database here is empty: no DAG, no runs)
AIRFLOW_RECORDS = {"/log": "one failed task's log, from Airflow's records (none here)"}


# --- the data set -------------------------------------------------------------------------------

# A kept database is reused only if these (the tables, indexes and triggers the sync creates)
# are unchanged: a new index must be measured, not missed.
SCHEMA_SOURCES = ("include/sfsync/store/tables.py", "include/sfsync/store/schema.py",
                  "include/sfsync/store/capture.py", "include/sfsync/store/engine.py")


def schema_hash() -> str:
    import hashlib

    digest = hashlib.sha256()
    for name in SCHEMA_SOURCES:
        path = ROOT / name
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()[:12]


def sizes_of(args) -> dict:
    return {"generator": GENERATOR, "people": args.people, "errors": args.errors,
            "days": args.days, "outbox": args.outbox, "conflicts": args.conflicts,
            "duplicates": args.duplicates, "changes": args.changes,
            "seed": f"standard:{args.seed_records}", "schema": schema_hash()}


def size_tag(sizes: dict) -> str:
    return f"p{sizes['people']}_e{sizes['errors']}_d{sizes['days']}_g{sizes['generator']}"


class Sql:
    """The few expressions that differ between SQLite and PostgreSQL. ``now`` (epoch seconds,
    a 5-minute boundary: the latest run's start) is the reference every age counts back from."""

    def __init__(self, dialect: str, now: int):
        self.pg = dialect == "postgresql"
        self.now = now

    def with_seq(self, n: int, *ctes: str) -> tuple[str, str]:
        """(WITH clause, FROM item) for a sequence ``seq(i)`` of 1..n (BIGINT)."""
        if self.pg:
            return ("WITH " + ", ".join(ctes)) if ctes else "", \
                f"generate_series(1::bigint, {int(n)}) AS seq(i)"
        first = f"seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {int(n)})"
        return "WITH RECURSIVE " + ", ".join([first, *ctes]), "seq"

    def ts(self, age: str) -> str:
        """The timestamp ``age`` seconds before ``now``, as UtcDateTime stores it."""
        if self.pg:
            return f"to_timestamp({self.now} - ({age}))"
        return f"(strftime('%Y-%m-%d %H:%M:%S', {self.now} - ({age}), 'unixepoch') || '.000000')"

    def iso(self, age: str) -> str:
        """``age`` seconds before ``now`` as ``YYYY-MM-DDTHH:MM:SS`` (UTC; Airflow run ids)."""
        if self.pg:
            return (f"to_char(to_timestamp({self.now} - ({age})) AT TIME ZONE 'UTC', "
                    "'YYYY-MM-DD\"T\"HH24:MI:SS')")
        return f"strftime('%Y-%m-%dT%H:%M:%S', {self.now} - ({age}), 'unixepoch')"

    def literal_ts(self, text: str) -> str:
        """A UTC timestamp literal (``YYYY-MM-DD HH:MM:SS``)."""
        if self.pg:
            return f"CAST('{text}+00' AS timestamptz)"
        return f"'{text}.000000'"

    def pad(self, expr: str, width: int) -> str:
        if self.pg:
            return f"lpad(CAST({expr} AS TEXT), {width}, '0')"
        return f"printf('%0{width}d', {expr})"

    def domain(self, expr: str) -> str:
        if self.pg:
            return f"split_part({expr}, '@', 2)"
        return f"substr({expr}, instr({expr}, '@') + 1)"

    def run_key(self, r: str) -> str:
        """The key of incremental run number ``r`` (0 = the latest), as Airflow names it."""
        return f"'{INCREMENTAL}:scheduled__' || {self.iso(f'({r}) * {RUN_SECONDS}')} || '+00:00'"

    def case(self, expr: str, values: list[str]) -> str:
        """``values[expr % len(values)]`` (SQL literals)."""
        whens = " ".join(f"WHEN {n} THEN {v}" for n, v in enumerate(values))
        return f"(CASE ({expr}) % {len(values)} {whens} END)"


def q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def insert(conn, table: str, with_: str, from_: str, exprs: dict[str, str]) -> str:
    """``WITH ... INSERT INTO table (...) SELECT ... FROM from_`` of the columns ``table`` has
    (the bookkeeping tables gain columns as sfsync evolves: a missing one is left out)."""
    import sqlalchemy as sa

    have = {c["name"] for c in sa.inspect(conn).get_columns(table)}
    cols = [c for c in exprs if c in have]
    return (f"{with_} INSERT INTO {table} ({', '.join(cols)}) "
            f"SELECT {', '.join(exprs[c] for c in cols)} FROM {from_}")


ERROR_CODES = [
    ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Phone", "Phone must be in international format"),
    ("REQUIRED_FIELD_MISSING", "LastName", "Required fields are missing: [LastName]"),
    ("INVALID_EMAIL_ADDRESS", "Email", "Email: invalid email address: see the record"),
    ("DUPLICATES_DETECTED", "", "Use one of these records?"),
    ("STRING_TOO_LONG", "Title", "Title: data value too large (max length=128)"),
    ("UNABLE_TO_LOCK_ROW", "", "unable to obtain exclusive access to this record or 1 records"),
    ("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "LeadSource",
     "Lead Source: bad value for restricted picklist field: Partner Webinar"),
]
RUN_FAILURES = [
    "REQUEST_LIMIT_EXCEEDED: TotalRequests Limit exceeded.",
    "task load_Contact failed; see its log",
    "ConnectionError: HTTPSConnectionPool(host='example.my.salesforce.com', port=443): "
    "Read timed out. (read timeout=120)",
]


def person_insert(sql: Sql, columns: list[str], kind: str, n: int, base_id: int,
                  companies: int, templates: int, days: int) -> str:
    """INSERT ... SELECT of the ``kind`` people (lead, contact, marketing) among 1..n."""
    i, u = "seq.i", "(seq.i % 1000)"
    lead_id, contact_id = f"('00QBc' || {sql.pad(i, 13)})", f"('003Bc' || {sql.pad(i, 13)})"
    where = {"lead": f"{u} < 550 AND {u} <> 500", "contact": f"{u} >= 550",
             "marketing": f"{u} = 500"}[kind]
    converted = f"({u} % 4 = 0)"
    modstamp = sql.ts(f"({i} * 7919) % {2 * days * 86400}")
    synced_at = sql.ts(f"{days * 86400} + 3600 + ({i} * 31) % 86400")
    expr = {
        "id": f"{base_id} + {i}",
        "email": (f"lower(replace(coalesce(t.first_name, 'pat') || '.' || "
                  f"coalesce(t.last_name, 'doe'), ' ', '')) || '.' || CAST({i} AS TEXT) || '@' || "
                  f"coalesce({sql.domain('t.email')}, 'example.com')"),
        "created_date": sql.ts(f"{days * 86400} + ({i} * 104729) % {3 * 365 * 86400}"),
        "last_modified_date": modstamp, "sfdc_system_modstamp": modstamp,
        "sfsync_created_at": synced_at,
        "sfsync_updated_at": sql.ts(f"({i} * 7919) % {2 * days * 86400}"),
        "sfdc_is_deleted": "FALSE", "sfdc_master_record_id": "NULL",
    }
    if kind == "lead":
        expr.update({
            "sfdc_type": "'Lead'", "sfdc_id": lead_id, "sfdc_lead_id": lead_id,
            "sfdc_contact_id": "NULL", "sfdc_account_id": "NULL",
            "sfdc_lead_system_modstamp": modstamp, "sfdc_contact_system_modstamp": "NULL",
            "sfdc_is_converted": "FALSE", "sfdc_converted_contact_id": "NULL",
            "sfdc_converted_account_id": "NULL", "sfdc_converted_opportunity_id": "NULL",
            "converted_date": "NULL"})
    elif kind == "contact":
        expr.update({
            "sfdc_type": "'Contact'", "sfdc_id": contact_id, "sfdc_contact_id": contact_id,
            "sfdc_lead_id": f"CASE WHEN {converted} THEN {lead_id} END",
            "sfdc_account_id": "c.sfdc_id",
            "sfdc_lead_system_modstamp": f"CASE WHEN {converted} THEN {modstamp} END",
            "sfdc_contact_system_modstamp": modstamp,
            "sfdc_is_converted": f"CASE WHEN {converted} THEN TRUE END",
            "sfdc_converted_contact_id": f"CASE WHEN {converted} THEN {contact_id} END",
            "sfdc_converted_account_id": f"CASE WHEN {converted} THEN c.sfdc_id END",
            "sfdc_converted_opportunity_id": "NULL", "converted_date": "NULL"})
    else:  # inserted with plain SQL, never synced: captured, waiting in the outbox
        expr.update({c: "NULL" for c in columns if c.startswith("sfdc_")})
        expr.update({"sfdc_is_deleted": "FALSE", "sfsync_created_at": "NULL",
                     "sfsync_updated_at": "NULL", "sfdc_system_modstamp": "NULL"})
    template = "tpl_contact" if kind == "contact" else "tpl_lead"
    cols = ["id", *[c for c in columns if c != "id"]]
    select = ", ".join(expr.get(c, f't."{c}"') for c in cols)
    with_, seq = sql.with_seq(n)
    join_company = f" LEFT JOIN tpl_company c ON c.k = {i} % {companies}" if companies else ""
    if not companies:
        select = select.replace("c.sfdc_id", "NULL")
    return (f"{with_} INSERT INTO person ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in cols)}) "
            f"SELECT {select} FROM {seq} JOIN {template} t ON t.k = {i} % {templates}"
            f"{join_company} WHERE {where}")


def generate(engine, sizes: dict, log) -> dict:
    """Scale the synced database up to ``sizes`` (set-based SQL); returns what was made."""
    import sqlalchemy as sa

    people, n_errors, days = sizes["people"], sizes["errors"], sizes["days"]
    now = int(time.time()) // RUN_SECONDS * RUN_SECONDS
    sql = Sql(engine.dialect.name, now)
    runs = days * 86400 // RUN_SECONDS
    made: dict = {}

    def run(conn, statement: str):
        # psycopg reads % as a placeholder even without parameters: double it
        return conn.exec_driver_sql(statement.replace("%", "%%") if sql.pg else statement)

    def step(label: str, statement: str, conn) -> int:
        t0 = time.perf_counter()
        n = run(conn, statement).rowcount
        if n < 0:  # Python's sqlite3 counts no rows of a statement that starts with WITH
            n = conn.exec_driver_sql("SELECT changes()").scalar()
        log(f"  {label}: {n:,} rows in {time.perf_counter() - t0:.1f} s")
        return n

    with engine.begin() as conn:
        inspector = sa.inspect(conn)
        columns = [c["name"] for c in inspector.get_columns("person")]
        objects = [r[0] for r in conn.exec_driver_sql(
            "SELECT DISTINCT sf_object FROM sfsync_count ORDER BY 1")]
        # the seed cycle's own run: the generated history replaces it
        for table in ("sfsync_count", "sfsync_error", "sfsync_extract", "sfsync_run",
                      "sfsync_copy_window"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
        have = conn.exec_driver_sql("SELECT count(*), coalesce(max(id), 0) FROM person").one()
        for name, where in (("tpl_lead", "sfdc_type = 'Lead'"),
                            ("tpl_contact", "sfdc_type = 'Contact'")):
            conn.exec_driver_sql(f"CREATE TEMP TABLE {name} AS SELECT row_number() OVER "
                                 f"(ORDER BY id) - 1 AS k, * FROM person WHERE {where}")
            conn.exec_driver_sql(f"CREATE INDEX ix_{name}_k ON {name} (k)")
        conn.exec_driver_sql("CREATE TEMP TABLE tpl_company AS SELECT row_number() OVER "
                             "(ORDER BY id) - 1 AS k, sfdc_id FROM company")
        conn.exec_driver_sql("CREATE INDEX ix_tpl_company_k ON tpl_company (k)")
        templates = min(conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar()
                        for t in ("tpl_lead", "tpl_contact"))
        companies = conn.exec_driver_sql("SELECT count(*) FROM tpl_company").scalar()
        if not templates:
            raise SystemExit("the seed org synced no leads or contacts: raise --seed-records")
        n = max(people - have[0], 0)
        log(f"person: {have[0]:,} synced rows, {n:,} to generate "
            f"(templates: {templates} leads/contacts, {companies} companies)")
        for kind in ("lead", "contact", "marketing"):
            made[f"person_{kind}"] = step(
                f"person ({kind})", person_insert(sql, columns, kind, n, have[1], companies,
                                                  templates, days), conn)
        # the marketing-only people's inserts were captured; the fold moved them to the outbox
        conn.exec_driver_sql(f"UPDATE sfsync_change SET processed_at = {sql.ts('60')} "
                             "WHERE processed_at IS NULL")
        if sql.pg:  # the generated ids were explicit
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('person', 'id'), "
                                 "(SELECT max(id) FROM person))")
        made["people_total"] = conn.exec_driver_sql("SELECT count(*) FROM person").scalar()
        blocks = max(n // 1000, 1)  # seq numbers of generated leads and contacts, by j

        def lead_of(j: str) -> str:
            return f"((({j}) * 7919) % {blocks}) * 1000 + ({j}) % 500"

        def contact_of(j: str) -> str:
            return f"((({j}) * 7919) % {blocks}) * 1000 + 600 + ({j}) % 400"
        first_id = have[1]

        # runs: one every 5 minutes for `days`; r = 0 is the latest (a success)
        with_, seq = sql.with_seq(runs)
        r = "(seq.i - 1)"
        ended = f"{r} * {RUN_SECONDS} - 40 - ({r} * 37) % 90"
        made["sfsync_run"] = step("sfsync_run", insert(conn, "sfsync_run", with_, seq, {
            "run_key": sql.run_key(r), "dag_id": q(INCREMENTAL), "kind": "'incremental'",
            "status": f"CASE WHEN {r} % 97 = 13 THEN 'failed' ELSE 'success' END",
            "started_at": sql.ts(f"{r} * {RUN_SECONDS}"), "ended_at": sql.ts(ended),
            "api_calls": f"2 + ({r} * 7) % 23",
            "message": f"CASE WHEN {r} % 97 = 13 THEN "
                       f"{sql.case(f'{r} / 97', [q(m) for m in RUN_FAILURES])} END",
            # the org's daily usage climbs through the (UTC) day
            "org_api_used": f"20000 + (({now} - ({ended})) % 86400) / 2 + ({r} * 13) % 500",
            "org_api_max": "115000", "api_usage_at": sql.ts(ended),
            "backlog_pending": f"1500 + ({r} * 13) % 700",
            "backlog_failed": f"800 + ({r} * 7) % 150", "backlog_quarantined": "300",
            "backlog_oldest_at": sql.ts(f"{r} * {RUN_SECONDS} + {days * 86400 // 2}")}), conn)
        # the initial copy, before the history
        copy_key = (f"salesforce_initial_sync:manual__"
                    f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now - (days + 1) * 86400))}"
                    "+00:00")
        with_, seq = sql.with_seq(1)
        run(conn, insert(conn, "sfsync_run", with_, seq, {
            "run_key": q(copy_key), "dag_id": "'salesforce_initial_sync'", "kind": "'initial'",
            "status": "'success'", "started_at": sql.ts(str((days + 1) * 86400)),
            "ended_at": sql.ts(str((days + 1) * 86400 - 5400)), "api_calls": "4210"}))

        # counts: every run, every object (pull), the two-way objects (push), Task activities
        pairs = [(o, "pull", k + 3) for k, o in enumerate(objects)]
        pairs += [(o, "push", k + 5) for k, o in enumerate(TWO_WAY) if o in objects]
        if "Task" in objects:
            pairs.append(("Task", "push_activity", 11))
        values = ", ".join(f"({q(o)}, {q(op)}, {w})" for o, op, w in pairs)
        with_, seq = sql.with_seq(runs, f"objs(sf_object, operation, w) AS (VALUES {values})")
        busy = f"(({r}) * objs.w) % 7"
        made["sfsync_count"] = step("sfsync_count", (
            f"{with_} INSERT INTO sfsync_count (run_key, sf_object, operation, new, updated, "
            "deleted, skipped, failed, api_calls, recorded_at) "
            f"SELECT {sql.run_key(r)}, objs.sf_object, objs.operation, "
            f"CASE WHEN {busy} = 0 THEN (({r}) * objs.w) % 13 ELSE 0 END, "
            f"CASE WHEN {busy} < 3 THEN (({r}) * objs.w) % 57 ELSE 0 END, "
            f"CASE WHEN {busy} = 5 THEN 1 ELSE 0 END, "
            f"CASE WHEN {busy} = 6 THEN 2 ELSE 0 END, "
            f"CASE WHEN objs.operation <> 'pull' AND {busy} = 1 THEN 1 ELSE 0 END, "
            f"CASE WHEN objs.operation = 'pull' THEN 2 ELSE {busy} % 2 END, "
            f"{sql.ts(f'{r} * {RUN_SECONDS} - 30')} FROM {seq} CROSS JOIN objs"), conn)
        copy_pairs = ", ".join(f"({q(o)})" for o in objects)
        with_, _ = sql.with_seq(1, f"objs(sf_object) AS (VALUES {copy_pairs})")
        run(conn,
            f"{with_} INSERT INTO sfsync_count (run_key, sf_object, operation, new, updated, "
            f"deleted, skipped, failed, api_calls, recorded_at) SELECT {q(copy_key)}, "
            f"objs.sf_object, 'copy', CASE WHEN objs.sf_object IN ('Lead', 'Contact') THEN "
            f"{people // 2} ELSE 1000 END, 0, 0, 0, 0, 400, "
            f"{sql.ts(str((days + 1) * 86400 - 5400))} FROM objs")

        # record errors, oldest first, each in one of the runs (r from the oldest to 0); a record
        # fails three times on average over the days (k: the record, its object, field, code)
        with_, seq = sql.with_seq(n_errors)
        j = "seq.i"
        k = f"({j} % {max(n_errors // 3, 1)})"
        run_of = f"({runs - 1} - (({j} - 1) * {runs}) / {max(n_errors, 1)})"
        obj = sql.case(f"{k} / 7", ["'Lead'", "'Lead'", "'Lead'", "'Lead'", "'Contact'",
                                    "'Contact'", "'Contact'", "'CampaignMember'", "'Task'",
                                    "'Lead'"])
        sfdc = (f"CASE {obj} WHEN 'Lead' THEN '00QBc' || {sql.pad(lead_of(k), 13)} "
                f"WHEN 'Contact' THEN '003Bc' || {sql.pad(contact_of(k), 13)} "
                f"WHEN 'CampaignMember' THEN '00vBc' || {sql.pad(k, 13)} "
                f"ELSE '00TBc' || {sql.pad(k, 13)} END")
        made["sfsync_error"] = step("sfsync_error", (
            f"{with_} INSERT INTO sfsync_error (run_key, sf_object, direction, sfdc_id, field, "
            "error_code, message, record, created_at) "
            f"SELECT {sql.run_key(run_of)}, {obj}, "
            f"CASE WHEN {k} % 50 = 0 THEN 'pull' ELSE 'push' END, "
            f"CASE WHEN {k} % 23 = 0 THEN NULL ELSE {sfdc} END, "
            f"NULLIF({sql.case(k, [q(f) for _, f, _ in ERROR_CODES])}, ''), "
            f"{sql.case(k, [q(c) for c, _, _ in ERROR_CODES])}, "
            f"{sql.case(k, [q(m) for _, _, m in ERROR_CODES])}, "
            f"'{{\"Email\": \"bench.' || CAST({k} AS TEXT) || '@example.com\", \"LastName\": "
            f"\"Person ' || CAST({k} AS TEXT) || '\", \"Title\": \"Head of Marketing '"
            f" || CAST({j} % 97 AS TEXT) || '\", \"Phone\": \"555-' || {sql.pad(j, 7)} || "
            f"'\", \"LeadSource\": \"Partner Webinar\", \"Company\": \"Bench Co ' || "
            f"CAST({k} % 5000 AS TEXT) || '\"}}', "
            f"{sql.ts(f'{run_of} * {RUN_SECONDS} - 20 - {j} % 20')} FROM {seq}"), conn)

        # captured local edits of synced people over the days, folded (processed) but for the
        # last 50; the fold keeps processed rows
        n_changes = sizes["changes"]
        with_, seq = sql.with_seq(n_changes)
        age = f"(({n_changes} - {j}) * {days * 86400}) / {max(n_changes, 1)} + 5"
        made["sfsync_change"] = step("sfsync_change", (
            f"{with_} INSERT INTO sfsync_change (table_name, row_id, op, columns, old_values, "
            f"changed_at, processed_at) SELECT 'person', {first_id} + "
            f"CASE WHEN {j} % 2 = 0 THEN {contact_of(j)} ELSE {lead_of(j)} END, 'update', "
            f"'phone,title', '{{\"phone\": \"+1 555 ' || {sql.pad(j, 7)} || "
            f"'\", \"title\": \"Manager\"}}', {sql.ts(age)}, "
            f"CASE WHEN {j} > {n_changes - 50} THEN NULL ELSE {sql.ts(f'{age} - 120')} END "
            f"FROM {seq}"), conn)

        # the outbox: marketing-only people (creates: pending, some failed), the people of the
        # latest record errors (rejected: failed, a quarter quarantined), edits waiting (pending)
        error = sql.case("p.id / 10", [q(f"{c}: {m}") for c, _, m in ERROR_CODES])
        outbox_cols = ("table_name, row_id, op, created, columns, base, sfdc_id, status, "
                       "attempts, version, last_error, first_changed_at, changed_at, updated_at")

        def outbox(select_where: str, created: str, status: str, limit: int) -> str:
            return (f"INSERT INTO sfsync_outbox ({outbox_cols}) SELECT 'person', p.id, 'upsert',"
                    f" {created}, '[\"phone\", \"title\"]', '{{\"phone\": null, \"title\": null}}',"
                    f" NULL, {status}, CASE {status} WHEN 'pending' THEN 0 WHEN 'failed' THEN "
                    f"1 + p.id % 3 ELSE 5 END, 1 + p.id % 4, CASE WHEN {status} <> 'pending' "
                    f"THEN {error} END, {sql.ts(f'3600 + (p.id * 31) % {days * 86400}')}, "
                    f"{sql.ts(f'60 + (p.id * 17) % {days * 86400}')}, {sql.ts('30')} "
                    f"FROM person p WHERE {select_where} ORDER BY p.id LIMIT {int(limit)}")

        total = sizes["outbox"]
        made["outbox_creates"] = step("sfsync_outbox (marketing-only people)", outbox(
            "p.sfdc_type IS NULL", "TRUE",
            "CASE WHEN p.id % 5 = 0 THEN 'failed' ELSE 'pending' END", total // 3), conn)
        made["outbox_rejected"] = step("sfsync_outbox (rejected by Salesforce)", outbox(
            "p.sfdc_id IN (SELECT sfdc_id FROM sfsync_error WHERE sf_object IN ('Lead', "
            "'Contact') AND sfdc_id IS NOT NULL GROUP BY sfdc_id ORDER BY max(id) DESC "
            f"LIMIT {int(total * 0.4)})", "FALSE",
            "CASE WHEN p.id % 4 = 0 THEN 'quarantined' ELSE 'failed' END", total), conn)
        rest = max(total - made["outbox_creates"] - made["outbox_rejected"], 0)
        stride = max(people // max(rest, 1), 2)
        made["outbox_pending"] = step("sfsync_outbox (edits waiting)", outbox(
            f"p.sfdc_type IS NOT NULL AND p.id % {stride} = 1 AND NOT EXISTS (SELECT 1 FROM "
            "sfsync_outbox o WHERE o.table_name = 'person' AND o.row_id = p.id)", "FALSE",
            "'pending'", rest), conn)

        # conflicts and duplicates of generated people, merges
        with_, seq = sql.with_seq(sizes["conflicts"])
        run_of = f"({runs - 1} - (({j} - 1) * {runs}) / {max(sizes['conflicts'], 1)})"
        contact = f"({j} % 3 = 0)"
        made["sfsync_conflict"] = step("sfsync_conflict", (
            f"{with_} INSERT INTO sfsync_conflict (run_key, table_name, row_id, sf_object, "
            "sfdc_id, column_name, sf_field, marketing_value, salesforce_value, base_value, "
            f"winner, detected_at) SELECT {sql.run_key(run_of)}, 'person', "
            f"{first_id} + CASE WHEN {contact} THEN {contact_of(j)} ELSE {lead_of(j)} END, "
            f"CASE WHEN {contact} THEN 'Contact' ELSE 'Lead' END, "
            f"CASE WHEN {contact} THEN '003Bc' || {sql.pad(contact_of(j), 13)} "
            f"ELSE '00QBc' || {sql.pad(lead_of(j), 13)} END, "
            f"{sql.case(j, [q('title'), q('phone')])}, {sql.case(j, [q('Title'), q('Phone')])},"
            f" 'marketing ' || CAST({j} AS TEXT), 'salesforce ' || CAST({j} AS TEXT), "
            f"'before ' || CAST({j} AS TEXT), CASE WHEN {j} % 5 = 0 THEN 'marketing' "
            f"ELSE 'salesforce' END, {sql.ts(f'{run_of} * {RUN_SECONDS} - 25')} FROM {seq}"),
            conn)
        with_, seq = sql.with_seq(sizes["duplicates"])
        made["sfsync_duplicate"] = step("sfsync_duplicate", (
            f"{with_} INSERT INTO sfsync_duplicate (rule, person_id, duplicate_of_person_id, "
            f"reason, detected_at) SELECT 'same_email', {first_id} + {contact_of(j)}, "
            f"{first_id} + {lead_of(j)}, 'same email: dup.' || CAST({j} AS TEXT) || "
            f"'@example.com', {sql.ts(f'({j} * 911) % {days * 86400}')} FROM {seq}"), conn)
        with_, seq = sql.with_seq(max(sizes["duplicates"] // 4, 1))
        made["sfsync_merge"] = step("sfsync_merge", (
            f"{with_} INSERT INTO sfsync_merge (loser_person_id, survivor_person_id, reason, "
            f"sfdc_id, merged_at) SELECT {first_id + people + 10} + {j}, {first_id} + "
            f"{contact_of(j)}, 'lead converted', '003Bc' || {sql.pad(contact_of(j), 13)}, "
            f"{sql.ts(f'({j} * 577) % {days * 86400}')} FROM {seq}"), conn)

        # the initial copy's windows: every object, one per calendar month for five years, done
        months = 60
        year, month = time.gmtime(now - (days + 1) * 86400)[:2]
        starts = []
        for _ in range(months + 1):
            starts.append(f"{year:04d}-{month:02d}-01 00:00:00")
            year, month = (year, month - 1) if month > 1 else (year - 1, 12)
        spans = ", ".join(f"({sql.literal_ts(a)}, {sql.literal_ts(b)})"
                          for b, a in itertools.pairwise(starts))
        with_, _ = sql.with_seq(1, f"objs(sf_object) AS (VALUES {copy_pairs})",
                                f"spans(window_start, window_end) AS (VALUES {spans})")
        copied = (f"CASE WHEN objs.sf_object IN ('Lead', 'Contact') THEN {people // (2 * months)}"
                  " ELSE 500 END")
        made["sfsync_copy_window"] = step("sfsync_copy_window", insert(
            conn, "sfsync_copy_window", with_, "spans CROSS JOIN objs", {
                "sf_object": "objs.sf_object", "window_start": "spans.window_start",
                "window_end": "spans.window_end", "status": "'done'", "copied": copied,
                "expected": copied, "resume_created": "spans.window_end",
                "started_at": sql.ts(f"{(days + 1) * 86400}"),
                "finished_at": sql.ts(f"{(days + 1) * 86400} - 5000")}), conn)
        for name in ("tpl_lead", "tpl_contact", "tpl_company"):
            conn.exec_driver_sql(f"DROP TABLE {name}")
    return made


def finish_database(engine) -> None:
    """PostgreSQL: VACUUM ANALYZE (what autovacuum does after big inserts); SQLite: fold the WAL
    back into the file (no ANALYZE: the sync never runs it there)."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        raw = engine.raw_connection()  # outside any transaction (the engine BEGINs on its own)
        try:
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()


# --- where the database lives -----------------------------------------------------------------

class Target:
    """One backend's benchmark database: its Airflow connection, whether it is ready (kept from
    an earlier run with the same sizes), and how to create and drop it."""

    def __init__(self, backend: str, sizes: dict, args, tmp: Path):
        self.backend, self.sizes, self.keep = backend, sizes, args.keep
        tag = size_tag(sizes)
        if backend == "sqlite":
            self.path = (OUT / f"console-sqlite-{tag}.db") if args.keep else tmp / "marketing.db"
            self.marker = Path(str(self.path) + ".json")
            self.conn = {"conn_type": "sqlite", "host": str(self.path)}
            self.url = f"sqlite:///{self.path}"
        else:
            parts = urlsplit(args.postgres_url)
            self.admin_url = args.postgres_url
            self.name = f"sfsync_bench_console_{tag}" if args.keep else \
                f"sfsync_bench_console_{uuid.uuid4().hex[:12]}"
            self.conn = {"conn_type": "postgres", "host": parts.hostname or "127.0.0.1",
                         "port": parts.port or 5432, "login": parts.username or "postgres",
                         "password": parts.password or "", "schema": self.name}
            self.url = parts._replace(path="/" + self.name).geturl()

    def _admin(self):
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5)

    def ready(self) -> bool:
        """A complete database of these sizes exists (kept by an earlier ``--keep`` run)."""
        if self.backend == "sqlite":
            if not (self.path.exists() and self.marker.exists()):
                return False
            return json.loads(self.marker.read_text()).get("sizes") == self.sizes
        with self._admin() as admin:
            row = admin.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                                "WHERE datname = %s", (self.name,)).fetchone()
        if not row or not row[0]:
            return False
        try:
            return json.loads(row[0]).get("sizes") == self.sizes
        except ValueError:
            return False

    def create(self) -> None:
        """An empty database (an incomplete earlier one is dropped first)."""
        self.drop()
        if self.backend == "postgres":
            from psycopg import sql

            with self._admin() as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))

    def mark_ready(self, made: dict) -> None:
        marker = json.dumps({"sizes": self.sizes, "made": made,
                             "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        if self.backend == "sqlite":
            self.marker.write_text(marker)
            return
        from psycopg import sql

        with self._admin() as admin:
            admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(self.name), sql.Literal(marker)))

    def made(self) -> dict:
        if self.backend == "sqlite":
            return json.loads(self.marker.read_text()).get("made", {})
        with self._admin() as admin:
            row = admin.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                                "WHERE datname = %s", (self.name,)).fetchone()
        return json.loads(row[0]).get("made", {})

    def drop(self) -> None:
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm", ".json"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
            return
        from psycopg import sql

        with self._admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(self.name)))

    def where(self) -> str:
        return str(self.path) if self.backend == "sqlite" else f"PostgreSQL database {self.name}"


@contextmanager
def seed_org(tmp: Path, records: int):
    """The emulator with a plain ``standard`` org of ``records``; the Salesforce connection set."""
    from include.salesforce_emulator.process import start_emulator

    with start_emulator(data_dir=tmp / "org", seed=f"standard:{records}", timeout=600) as emu:
        info = emu.info
        os.environ["REQUESTS_CA_BUNDLE"] = info["ca_bundle"]
        os.environ["AIRFLOW_CONN_SALESFORCE_DEFAULT"] = json.dumps({
            "conn_type": "salesforce", "login": info["username"], "password": info["password"],
            "extra": {"security_token": info["security_token"], "domain": info["login_domain"],
                      "version": "59.0"}})
        yield emu


def build(target: Target, log) -> dict:
    """The real sync into ``target`` (the emulator must be running), then the scale-up."""
    from include.sfsync import pipeline
    from include.sfsync.config import load_config
    from include.sfsync.store.engine import create_engine

    target.create()
    os.environ["AIRFLOW_CONN_MARKETING_DB"] = json.dumps(target.conn)
    t0 = time.perf_counter()
    engine = create_engine(target.url)
    try:
        summary = pipeline.run_cycle("bench:console-seed",
                                     config=load_config(overrides={"bulk_poll_seconds": 0}),
                                     engine=engine)
        synced = {o: c["new"] for o, c in summary["counts"].items()}
        log(f"the real sync of the standard org: {sum(synced.values()):,} records in "
            f"{time.perf_counter() - t0:.1f} s")
        t1 = time.perf_counter()
        made = generate(engine, target.sizes, log)
        finish_database(engine)
        made["generate_seconds"] = round(time.perf_counter() - t1, 1)
        made["seed_synced"] = synced
        log(f"generated in {made['generate_seconds']} s")
    finally:
        engine.dispose()
    target.mark_ready(made)
    return made


# --- measuring the pages (a fresh child process per backend) ---------------------------------

class Statements:
    """Every SQL statement run by any engine, with its duration (SQLAlchemy events)."""

    def __init__(self):
        import sqlalchemy as sa

        self.log: list[tuple[str, float]] = []
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", self._before)
        sa.event.listen(sa.engine.Engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        conn.info.setdefault("bench_t0", []).append(time.perf_counter())

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        self.log.append((" ".join(statement.split()),
                         time.perf_counter() - conn.info["bench_t0"].pop()))

    def take(self) -> list[tuple[str, float]]:
        out, self.log = self.log, []
        return out


# Values for query parameters, by name: a route is also measured with each optional one it
# has (one at a time), and a required one must be among them (else the route is skipped).
# The values are real ones of the data (see worker_measure).
PARAM_SAMPLES = ("q", "email", "person_id", "id", "row_id", "run_key", "sf_object", "object",
                 "code", "table", "table_name")
# links found on the pages with these parameters point at one record each: one is measured
RECORD_PARAMS = {"q", "email", "person_id", "id", "row_id", "run", "run_key"}
MAX_LINKED = 8  # variants of one route found through links


def get_routes(app) -> tuple[dict, list[dict]]:
    """{path: its query parameters (name -> required)} of the app's GET routes without path
    parameters, and the routes skipped."""
    from fastapi.dependencies.utils import get_flat_dependant
    from fastapi.routing import APIRoute

    routes, skipped = {}, []
    for route in app.routes:
        if not isinstance(route, APIRoute) or "GET" not in route.methods:
            continue
        if "{" in route.path:
            skipped.append({"path": route.path, "why": "path parameter"})
            continue
        if route.path in AIRFLOW_RECORDS:
            skipped.append({"path": route.path, "why": AIRFLOW_RECORDS[route.path]})
            continue
        params = get_flat_dependant(route.dependant).query_params
        routes[route.path] = {p.alias: p.field_info.is_required() for p in params}
    return routes, skipped


def page_variants(routes: dict, skipped: list, values: dict) -> list[dict]:
    """The pages to measure first: every route bare (or with its required parameters), then
    with each optional parameter that has a sample value."""
    pages = []
    for path, params in routes.items():
        required = [n for n, req in params.items() if req]
        missing = [n for n in required if n not in values]
        if missing:
            skipped.append({"path": path, "why": f"needs {', '.join(missing)}"})
            continue
        base = {n: values[n] for n in required}
        pages.append({"url": path + (f"?{urlencode(base)}" if base else ""), "route": path,
                      "how": "route"})
        for name in params:
            if name not in base and name in values:
                pages.append({"url": f"{path}?{urlencode({**base, name: values[name]})}",
                              "route": path, "how": f"route, {name}"})
        if "q" in params and "@" in str(values.get("q", "")):
            # the e-mail as someone typed it: no exact match, a case-insensitive search
            pages.append({"url": f"{path}?{urlencode({**base, 'q': values['q'].upper()})}",
                          "route": path, "how": "route, q in capitals"})
    return pages


def linked_pages(html: str, page_url: str, routes: dict, known: set[str],
                 per_route: dict) -> list[dict]:
    """Links on a rendered page to other GET pages of the app (tabs, periods, a record): new
    URLs whose parameters the route has; one per route for links to single records."""
    import html as htmllib
    import re
    from urllib.parse import parse_qsl, urljoin

    base = "http://console/sfsync" + page_url
    found = []
    for href in re.findall(r'href="([^"]*)"', html):
        target = urlsplit(urljoin(base, htmllib.unescape(href)))
        if target.netloc != "console" or not target.path.startswith("/sfsync"):
            continue  # Airflow's own pages, Salesforce
        path = target.path[len("/sfsync"):] or "/"
        query = parse_qsl(target.query, keep_blank_values=True)
        if path not in routes or not query or any(k not in routes[path] for k, _ in query):
            continue
        url = f"{path}?{urlencode(query)}"
        record = [k for k, _ in query if k in RECORD_PARAMS]
        group = (path, tuple(sorted(record)))
        if url in known or per_route.get(path, 0) >= MAX_LINKED or (record and group in known):
            continue
        known.update({url, group} if record else {url})
        per_route[path] = per_route.get(path, 0) + 1
        found.append({"url": url, "route": path, "how": f"link on {page_url}"})
    return found


def render(client, url: str) -> tuple[int, str, bytes, str]:
    """GET ``url``: status, content type, body and (for a route that raised) the traceback."""
    import traceback

    try:
        resp = client.get(url)
    except Exception:  # noqa: BLE001 - a page that raises is a 500 with its traceback
        return 500, "text/plain", b"", traceback.format_exc(limit=-8)
    return resp.status_code, resp.headers.get("content-type", ""), resp.content, ""


def measure_page(client, statements, url: str, repeat: int) -> tuple[dict, str]:
    """Render ``url`` once cold and ``repeat`` times warm; returns the figures and the cold
    render's HTML (for its links)."""
    renders = []
    for n in range(repeat + 1):
        t0 = time.perf_counter()
        status, ctype, body, trace = render(client, url)
        seconds = time.perf_counter() - t0
        renders.append({"seconds": seconds, "status": status, "body": body, "trace": trace,
                        "sql": statements.take(), "type": ctype})
        if n == 0 and seconds > 30 and repeat > 2:  # do not wait minutes for a verdict
            repeat = 2
    cold, warm = renders[0], renders[1:]
    median = statistics.median(r["seconds"] for r in warm)
    typical = min(warm, key=lambda r: abs(r["seconds"] - median))
    slowest = max(typical["sql"], key=lambda s: s[1], default=("", 0.0))
    error = None
    if cold["status"] >= 400:
        error = cold["trace"] or cold["body"][:2000].decode("utf-8", "replace")
    return {
        "status": sorted({r["status"] for r in renders}),
        "cold_s": round(cold["seconds"], 4), "warm_median_s": round(median, 4),
        "warm_max_s": round(max(r["seconds"] for r in warm), 4), "warm_renders": len(warm),
        "bytes": len(typical["body"]), "content_type": typical["type"],
        "queries": len(typical["sql"]), "db_s": round(sum(s[1] for s in typical["sql"]), 4),
        "cold_queries": len(cold["sql"]), "cold_db_s": round(sum(s[1] for s in cold["sql"]), 4),
        "slowest_sql": slowest[0][:4000], "slowest_sql_s": round(slowest[1], 4),
        "sql": [(shorten(st, 400), round(t, 4)) for st, t in sorted(typical["sql"],
                                                                    key=lambda s: -s[1])[:10]],
        "error": error,
    }, cold["body"].decode("utf-8", "replace") if "html" in cold["type"] else ""


def profile_page(app, statements, url: str) -> list[dict]:
    """One more warm render under cProfile: the functions with the most own time. The page
    runs in the test client's threads (its event loop, the thread pool of a sync route): a
    fresh client whose new threads each start a profiler (``threading.setprofile``)."""
    import cProfile
    import pstats
    import threading

    from fastapi.testclient import TestClient

    profilers: list = []

    def start(*_):
        profiler = cProfile.Profile()
        profilers.append(profiler)
        profiler.enable()  # replaces this bootstrap as the thread's profile function

    threading.setprofile(start)
    try:
        with TestClient(app, follow_redirects=False) as client:
            render(client, url)
    finally:
        threading.setprofile(None)
    statements.take()
    stats = None
    for profiler in profilers:
        stats = pstats.Stats(profiler) if stats is None else (stats.add(profiler) or stats)
    rows = []
    for (path, line, func), (_cc, calls, own, cumulative, _callers) in (
            stats.stats.items() if stats else ()):
        if "threading.py" in path or path == "~" and any(
                w in func for w in ("acquire", "'poll'", "'wait'", "'select'")):
            continue  # threads waiting for one another, the event loop idling
        short = path.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        rows.append({"function": f"{short}:{line}({func})", "calls": calls,
                     "own_s": round(own, 4), "cumulative_s": round(cumulative, 4)})
    return sorted(rows, key=lambda r: -r["own_s"])[:15]


def worker_measure(result_path: Path, repeat: int, extra_urls: list[str],
                   profile_all: bool) -> None:
    import importlib
    import warnings

    import sqlalchemy as sa

    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    sys.path.insert(0, str(ROOT / "plugins"))
    statements = Statements()
    console = importlib.import_module("sfsync_console.app")
    app = console.app
    user = fake_user()
    for dep in ("reader_user", "editor_user"):
        if hasattr(console, dep):
            app.dependency_overrides[getattr(console, dep)] = lambda: user
    from fastapi.testclient import TestClient

    from include.sfsync.store.engine import create_engine

    conn = json.loads(os.environ["AIRFLOW_CONN_MARKETING_DB"])
    url = f"sqlite:///{conn['host']}" if conn["conn_type"] == "sqlite" else \
        f"postgresql://{conn['login']}@{conn['host']}:{conn['port']}/{conn['schema']}"
    probe = create_engine(url)
    with probe.connect() as c:
        # a converted lead (a contact with both ids) from the middle of the table, else anyone
        one = c.execute(sa.text(
            "SELECT id, email FROM person WHERE id >= (SELECT max(id) FROM person) / 2 AND "
            "sfdc_type = 'Contact' AND sfdc_lead_id IS NOT NULL ORDER BY id LIMIT 1")).first() \
            or c.execute(sa.text("SELECT id, email FROM person WHERE email IS NOT NULL "
                                 "ORDER BY id LIMIT 1")).one()
        samples = {
            "email": one.email, "q": one.email, "person_id": one.id, "id": one.id,
            "row_id": one.id, "sf_object": "Lead", "object": "Lead", "table": "person",
            "table_name": "person",
            "run_key": c.execute(sa.text("SELECT run_key FROM sfsync_run ORDER BY started_at "
                                         "DESC LIMIT 1")).scalar(),
            "code": c.execute(sa.text("SELECT error_code FROM sfsync_error ORDER BY id DESC "
                                      "LIMIT 1")).scalar()}
    probe.dispose()
    statements.take()
    routes, skipped = get_routes(app)
    queue = page_variants(routes, skipped, {k: samples[k] for k in PARAM_SAMPLES
                                            if samples.get(k) is not None})
    queue += [{"url": u, "route": urlsplit(u).path, "how": "--url"} for u in extra_urls]
    known, per_route, results = {p["url"] for p in queue}, {}, []
    load_before = os.getloadavg()
    with TestClient(app, follow_redirects=False, raise_server_exceptions=True) as client:
        while queue:
            page = queue.pop(0)
            result, html = measure_page(client, statements, page["url"], repeat)
            result["export"] = page["route"].endswith(".csv") or \
                "text/csv" in result["content_type"]
            if profile_all or result["warm_median_s"] >= BUDGET_S / 2:
                result["profile"] = profile_page(app, statements, page["url"])
            results.append({**page, **result})
            print(f"  {page['url']:<45} {result['warm_median_s']:8.3f} s "
                  f"(cold {result['cold_s']:.3f} s) {result['status']}", flush=True)
            if html:
                queue += linked_pages(html, page["url"], routes, known, per_route)
    result_path.write_text(json.dumps({
        "pages": results, "skipped": skipped, "samples": samples, "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in load_before + os.getloadavg()]}, default=str))


def fake_user():
    """An Airflow admin of the simple auth manager (all admins), for the login dependencies."""
    try:
        from airflow.api_fastapi.app import create_auth_manager
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

        create_auth_manager().init()
        return SimpleAuthManagerUser(username="bench", role="admin")
    except Exception as exc:  # another auth manager configured: a plain user, may() patched
        print(f"  (no simple auth manager: {exc}; permission checks answer yes)", flush=True)
        import importlib

        console = importlib.import_module("sfsync_console.app")
        console.may = lambda user, method: True

        class User:
            def get_name(self) -> str:
                return "bench"

            def get_id(self) -> str:
                return "bench"
        return User()


def airflow_metadata(log) -> None:
    """``airflow db migrate`` into ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` (a few seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"airflow db migrate failed:\n{proc.stdout}\n{proc.stderr}")
    log(f"Airflow metadata database migrated in {time.perf_counter() - t0:.1f} s (empty: no DAG "
        "runs)")


def measure(target: Target, tmp: Path, args) -> dict:
    result = tmp / f"pages-{target.backend}.json"
    env = {**os.environ, "AIRFLOW_CONN_MARKETING_DB": json.dumps(target.conn),
           "AIRFLOW__CORE__AUTH_MANAGER":
               "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "measure",
           "--result", str(result), "--repeat", str(args.repeat)]
    for url in args.url:
        cmd += ["--url", url]
    if args.profile:
        cmd.append("--profile")
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    return json.loads(result.read_text())


# --- the report ---------------------------------------------------------------------------------

def verdict(page: dict) -> str:
    if page["status"] != [200]:
        return "FAIL: status " + ",".join(map(str, page["status"]))
    if page["export"]:
        return "export (no budget)"
    return "ok" if page["warm_median_s"] < BUDGET_S else f"FAIL: >= {BUDGET_S:g} s"


def failed(page: dict) -> bool:
    return verdict(page).startswith("FAIL")


def shorten(statement: str, keep: int = 160) -> str:
    """The start and the end of a long SQL statement (its FROM and WHERE are at the end)."""
    return statement if len(statement) <= 2 * keep else \
        f"{statement[:keep]} ... {statement[-keep:]}"


def print_report(results: dict) -> None:
    from tabulate import tabulate

    print()
    s = results["sizes"]
    print(f"console benchmark: {s['people']:,} people, {s['errors']:,} errors, {s['days']} days "
          f"of runs every 5 minutes; warm = median of {results['repeat']} renders after the "
          "first (cold)")
    print(f"  {results['command']}")
    for backend, r in results["backends"].items():
        print()
        made = r["made"]
        print(f"{backend}: {r['where']} ({'reused' if r['reused'] else 'generated'}"
              + (f" in {made.get('generate_seconds')} s" if not r["reused"] else "") + "); "
              f"{made.get('people_total', 0):,} people, {made.get('sfsync_run', 0):,} runs, "
              f"{made.get('sfsync_count', 0):,} counts, {made.get('sfsync_error', 0):,} errors, "
              f"{sum(v for k, v in made.items() if k.startswith('outbox_')):,} outbox rows, "
              f"{made.get('sfsync_change', 0):,} captured changes")
        rows = [[p["url"], ",".join(map(str, p["status"])), f"{p['cold_s']:.3f}",
                 f"{p['warm_median_s']:.3f}", f"{p['bytes']:,}", p["queries"],
                 f"{p['db_s']:.3f}", f"{p['slowest_sql_s']:.3f}", verdict(p)]
                for p in r["pages"]]
        print(tabulate(rows, headers=["page", "status", "cold s", "warm s", "bytes", "SQL",
                                      "SQL s", "slowest SQL s", "verdict"],
                       colalign=("left", "right", "right", "right", "right", "right", "right",
                                 "right", "left")))
        load = r.get("load_average") or []
        if load:
            print(f"  load average (1, 5, 15 min) before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
                  f", after {load[3]:.2f} {load[4]:.2f} {load[5]:.2f}; {r.get('cpus')} CPUs")
        for skip in r["skipped"]:
            print(f"  skipped {skip['path']}: {skip['why']}")
        for p in r["pages"]:
            if failed(p) or p["warm_median_s"] >= BUDGET_S / 2:
                print(f"\n  {p['url']} ({p['warm_median_s']:.3f} s)" + (
                    f": slowest statement {p['slowest_sql_s']:.3f} s of {p['db_s']:.3f} s SQL: "
                    f"{shorten(p['slowest_sql'])}" if p["slowest_sql"] else ""))
                for f in p.get("profile", [])[:8]:
                    print(f"    {f['own_s']:8.3f} s own {f['calls']:>9,} calls  {f['function']}")
            if p.get("error"):
                print(f"\n  {p['url']} answered {p['status']}:\n    "
                      + p["error"].strip().replace("\n", "\n    ")[-1500:])
    print()
    print(f"written to {OUT / 'console.json'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--errors", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--outbox", type=int, default=3_000,
                        help="sfsync_outbox rows (pending, failed, quarantined)")
    parser.add_argument("--conflicts", type=int, default=2_000)
    parser.add_argument("--duplicates", type=int, default=2_000)
    parser.add_argument("--changes", type=int, default=300_000,
                        help="captured local changes in sfsync_change (folded; 50 not yet)")
    parser.add_argument("--seed-records", type=int, default=2_000,
                        help="records of the standard org the real sync copies first")
    parser.add_argument("--backends", default="sqlite,postgres",
                        type=lambda s: [b.strip() for b in s.split(",") if b.strip()])
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--keep", action="store_true",
                        help="keep the generated databases and reuse ones of the same sizes")
    parser.add_argument("--fresh", action="store_true",
                        help="with --keep: regenerate even if a database of these sizes exists")
    parser.add_argument("--repeat", type=int, default=5, help="warm renders per page")
    parser.add_argument("--url", action="append", default=[],
                        help="also measure this page (e.g. '/people?q=Garcia'); repeatable")
    parser.add_argument("--profile", action="store_true",
                        help="profile one warm render of every page (by default only of pages "
                             "at half the budget or more)")
    parser.add_argument("--worker", choices=["measure"], help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_measure(args.result, args.repeat, args.url, args.profile)
        return 0
    unknown = set(args.backends) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"--backends: unknown {sorted(unknown)}; choose from sqlite, postgres")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    OUT.mkdir(exist_ok=True)

    def log(text: str) -> None:
        print(text, flush=True)

    sizes = sizes_of(args)
    results = {"sizes": sizes, "repeat": args.repeat, "budget_s": BUDGET_S,
               "command": " ".join([".venv/bin/python scripts/bench_console.py", *sys.argv[1:]]),
               "backends": {}}
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp_name:
        tmp = Path(tmp_name)
        # Airflow writes airflow.cfg into AIRFLOW_HOME on import: keep it in the temp dir
        os.environ["AIRFLOW_HOME"] = str(tmp / "airflow")
        os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        # the pages read Airflow's own runs too: an empty, migrated metadata database
        os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{tmp}/airflow/airflow.db"
        airflow_metadata(log)
        targets = []
        for backend in args.backends:
            target = Target(backend, sizes, args, tmp)
            try:
                reuse = args.keep and not args.fresh and target.ready()
            except Exception as exc:  # PostgreSQL unreachable: keep the SQLite figures
                if backend != "postgres" or "connect" not in str(exc).lower():
                    raise
                print(f"skipping postgres: {exc}", file=sys.stderr)
                continue
            targets.append((target, reuse))
        try:
            to_build = [t for t, reuse in targets if not reuse]
            if to_build:
                log(f"Seeding a standard org of {args.seed_records:,} records ...")
                with seed_org(tmp, args.seed_records):
                    for target in to_build:
                        log(f"\n== {target.backend}: building {target.where()}")
                        build(target, log)
            for target, reuse in targets:
                log(f"\n== {target.backend}: measuring the console's pages"
                    + (f" (reusing {target.where()})" if reuse else ""))
                pages = measure(target, tmp, args)
                results["backends"][target.backend] = {
                    "where": target.where(), "reused": reuse, "made": target.made(), **pages}
        finally:
            if not args.keep:
                for target, _ in targets:
                    target.drop()
    (OUT / "console.json").write_text(json.dumps(results, indent=2, default=str))
    print_report(results)
    bad = [(b, p["url"], verdict(p)) for b, r in results["backends"].items()
           for p in r["pages"] if failed(p)]
    if bad:
        print("\nover budget or not 200:", file=sys.stderr)
        for backend, url, why in bad:
            print(f"  {backend} {url}: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

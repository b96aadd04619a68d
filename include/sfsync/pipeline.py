"""The sync's steps: one function per Airflow task, each safe to retry, and nothing else.

Incremental cycle (``salesforce_incremental_sync``): ``prepare`` is the only step that needs
Salesforce on an idle cycle: it checks the org lock, describes every object (which also catches
schema drift) and probes for changes, the describes and the probe's sub-requests sharing
composite calls (two for up to 12 objects).
``extract_object`` fetches what the probe could not (more pages, Bulk jobs). ``filter_object``,
``load_object``, ``dedupe_people`` and ``finish`` work from the durable staging in the marketing
database and never call Salesforce. ``push`` runs one of the push steps (``steps.PUSH_STEPS``)
after the pulls; ``maintain`` does what is due (re-copies, formula refresh, reconciliation)
and retention (old bookkeeping pruned, stale pending changes flagged).

Initial copy (``salesforce_initial_sync``): ``prepare_copy``, ``copy_object`` per object,
``finish_copy``. Sync now (``salesforce_sync_now``): ``sync_now``. ``run_cycle`` runs a whole
incremental cycle in-process, as the DAG does, for scripts and tests.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.sfsync import initial, maintenance
from include.sfsync.config import SyncConfig, load_config
from include.sfsync.context import SyncContext, connect, new_client, open_context, sync_schema
from include.sfsync.errors import (
    InputError,
    MarketingDatabaseError,
    NotPreparedError,
    RecordsRejected,
)
from include.sfsync.objects import ALL_OBJECTS, PEOPLE, object_names
from include.sfsync.pull import extract as X
from include.sfsync.pull.dedupe import find_duplicates
from include.sfsync.pull.filters import filter_staged
from include.sfsync.pull.load import load_object as load_staged
from include.sfsync.pull.people import flag_contactless_conversions, link_people
from include.sfsync.push.activities import push_activities
from include.sfsync.push.campaigns import push_campaign_members, push_campaigns
from include.sfsync.push.people import create_people, push_people, repull_people
from include.sfsync.salesforce.client import SalesforceClient
from include.sfsync.steps import PUSH_STEPS
from include.sfsync.store import ledger, outbox
from include.sfsync.store.engine import database_problem, engine_for, reader
from include.sfsync.store.schema import described_objects
from include.sfsync.store.tables import BOOKS

log = logging.getLogger(__name__)


def names_the_database(step):
    """A step whose marketing database fails it (unreachable, read-only, locked, a table
    missing) raises :class:`MarketingDatabaseError`: one line naming the Airflow connection and
    the table (``store.engine.database_problem``), never the statement's values."""

    @functools.wraps(step)
    def run(*args, **kwargs):
        try:
            return step(*args, **kwargs)
        except (sa.exc.DBAPIError, sa.exc.NoSuchTableError) as exc:
            config, engine = kwargs.get("config"), kwargs.get("engine")
            for value in (*args, *kwargs.values()):
                if isinstance(value, SyncContext):
                    config, engine = value.config, value.engine
            try:
                conn_id = (config or load_config()).marketing_conn_id
                engine = engine or engine_for(conn_id)
            except Exception:  # noqa: BLE001 - the database's own error is the one to report
                conn_id = getattr(config, "marketing_conn_id", "marketing_db")
            url = engine.url.render_as_string(hide_password=True) if engine is not None else None
            raise MarketingDatabaseError(database_problem(conn_id, url, exc)) from exc

    return run


# The push steps by name (steps.PUSH_STEPS is the registry; the DAG and the operators read it).
PUSH_FUNCTIONS = {"create_people": create_people, "people": push_people,
                  "campaigns": push_campaigns, "campaign_members": push_campaign_members,
                  "activities": push_activities}
assert tuple(PUSH_FUNCTIONS) == PUSH_STEPS, "every push step needs its function, in order"


# --- the incremental cycle ------------------------------------------------------------------

@names_the_database
def prepare(run_key: str, *, dag_id: str = "salesforce_incremental_sync",
            config: SyncConfig | None = None, engine: Engine | None = None,
            client: SalesforceClient | None = None) -> dict:
    """Org lock, describe (schema drift), schema, probe. Returns the plan per object."""
    config, engine = connect(config, engine)
    ledger.start_run(engine, run_key, dag_id, "incremental")
    extract_t = BOOKS["extract"]
    with reader(engine).connect() as conn:
        done = {r.sf_object: r.mode for r in conn.execute(sa.select(extract_t).where(
            extract_t.c.run_key == run_key))}
    if done and set(done) == set(object_names(config.custom_objects)) & described_objects(engine):
        # a retry after the probe: nothing to ask Salesforce
        return {"objects": done, "custom_objects": [n for n in config.custom_objects if n in done],
                "api_calls": 0}
    client = client or new_client(config)
    before = client.api_calls
    ledger.check_org(engine, client)  # before anything is asked of the org
    # The describes and the probe's windows go in the same composite calls: an idle cycle
    # costs two calls, not a describe call and the probe's own.
    names = object_names(config.custom_objects)
    windows = X.probe_windows(client, engine, BOOKS, config.overlap_seconds, names)
    answers = client.composite(client.describe_requests(names) + windows.requests)
    catalog = sync_schema(engine, client, config,
                          describes=client.described(names, answers[:len(names)]))
    for warning in catalog.warnings:
        log.warning("%s", warning)
    plans = X.probe(client, engine, BOOKS, catalog, run_key, windows=windows,
                    answers=answers[len(names):])
    calls = client.api_calls - before
    ledger.add_api_calls(engine, run_key, calls, client.api_usage)
    return {"objects": {name: plan.mode for name, plan in plans.items()},
            "custom_objects": [n for n in config.custom_objects if n in catalog.objects],
            "api_calls": calls, "warnings": catalog.warnings}


@names_the_database
def extract_object(run_key: str, sf_object: str, ctx: SyncContext | None = None) -> dict:
    ctx = ctx or open_context()
    result = X.extract(ctx.client, ctx.engine, ctx.books, ctx.catalog, run_key, sf_object,
                       client_factory=ctx.salesforce)
    if not result.skipped_calls:
        ledger.add_api_calls(ctx.engine, run_key, result.api_calls,
                             ctx.client.api_usage if ctx.client else None)
    return {"object": sf_object, "mode": result.mode, "rows": result.rows,
            "api_calls": 0 if result.skipped_calls else result.api_calls}


@names_the_database
def filter_object(run_key: str, sf_object: str, ctx: SyncContext | None = None) -> dict:
    """Apply sync filters and drop unsynced fields in staging; record the Skipped count."""
    ctx = ctx or open_context()
    return filter_staged(ctx.engine, ctx.catalog, run_key, sf_object)


@names_the_database
def load_object(run_key: str, sf_object: str, ctx: SyncContext | None = None) -> dict:
    ctx = ctx or open_context()
    with reader(ctx.engine).connect() as conn:
        status = conn.execute(sa.select(ctx.books["extract"].c.status).where(
            ctx.books["extract"].c.run_key == run_key,
            ctx.books["extract"].c.sf_object == sf_object)).scalar()
    if status not in {"filtered", "loaded"}:
        raise NotPreparedError(f"{sf_object}: the field filter has not run for run {run_key} "
                           f"(status {status!r})")
    overlap = ctx.config.overlap_seconds
    read = X.read_log(ctx.engine, ctx.books, run_key, sf_object, overlap)
    counts = load_staged(ctx.engine, ctx.tables, ctx.catalog, run_key, sf_object,
                         read.watch(X.staged(ctx.engine, ctx.books, run_key, sf_object)))
    # What the load processed in the overlap window: the next probes need not read it again.
    X.remember_reads(ctx.engine, ctx.books, sf_object, ctx.catalog.object(sf_object).type.table,
                     read, overlap)
    return {"object": sf_object, **counts}


@names_the_database
def dedupe_people(run_key: str, ctx: SyncContext | None = None) -> dict:
    """Record duplicate people; skipped when this run changed no lead or contact (the check
    reads every person, which is most of an idle cycle's time on a large database)."""
    ctx = ctx or open_context()
    count_t = ctx.books["count"]
    with reader(ctx.engine).connect() as conn:
        changed = conn.execute(sa.select(sa.func.sum(
            count_t.c.new + count_t.c.updated + count_t.c.deleted)).where(
            count_t.c.run_key == run_key, count_t.c.sf_object.in_(PEOPLE))).scalar()
    if not changed:
        return {rule.name: 0 for rule in ctx.config.dedupe_rules}
    return find_duplicates(ctx.engine, ctx.tables["person"], ctx.books["duplicate"],
                           list(ctx.config.dedupe_rules))


@names_the_database
def push(run_key: str, step: str, ctx: SyncContext | None = None) -> dict:
    """One push step (``steps.PUSH_STEPS``); zero API calls when nothing changed."""
    ctx = ctx or open_context()
    if not ctx.config.push.enabled:
        return {"step": step, "disabled": True, "api_calls": 0}
    with reader(ctx.engine).connect() as conn:
        stopped = ledger.push_stopped(conn, run_key)
    if stopped:  # an earlier step hit the request limit: the rest of the cycle waits too
        return {"step": step, "stopped": stopped, "api_calls": 0}
    result = {"step": step, **PUSH_FUNCTIONS[step](run_key, ctx)}
    if result.get("stopped"):
        ledger.stop_push(ctx.engine, run_key, result["stopped"])
    return result


@names_the_database
def maintain(run_key: str, ctx: SyncContext | None = None) -> dict:
    """Field re-copies, formula refreshes and Id-set reconciliation, when due; retention."""
    return maintenance.maintain(run_key, ctx or open_context())


@names_the_database
def finish(run_key: str, ctx: SyncContext | None = None, *, status: str = "success",
           message: str | None = None) -> dict:
    """Link late-arriving people, close the run, clean the staging."""
    ctx = ctx or open_context()
    with ctx.engine.begin() as conn:
        linked = link_people(conn, ctx.tables, ctx.catalog)
        flag_contactless_conversions(conn, ctx.tables["person"])
    X.cleanup(ctx.engine, ctx.books, run_key)
    with ctx.engine.begin() as conn:
        ledger.record_backlog(conn, run_key, outbox.backlog(conn))
        ledger.end_run(conn, run_key, status, message)
        counts = ledger.recorded_counts(conn, run_key, "pull")
        calls = ledger.run_api_calls(conn, run_key)
    return {"run_key": run_key, "counts": counts, "api_calls": calls, "people_linked": linked}


@names_the_database
def run_cycle(run_key: str, *, config: SyncConfig | None = None, engine: Engine | None = None,
              client: SalesforceClient | None = None) -> dict:
    """Every step in order, in-process: what the incremental DAG does, for scripts and tests."""
    prepare(run_key, config=config, engine=engine, client=client)
    ctx = open_context(config, engine=engine, client=client)
    for obj in ctx.catalog.ordered():
        extract_object(run_key, obj.sf_object, ctx)
        filter_object(run_key, obj.sf_object, ctx)
        load_object(run_key, obj.sf_object, ctx)
    pushed = {step: push(run_key, step, ctx) for step in PUSH_STEPS}
    maintain(run_key, ctx)
    dedupe_people(run_key, ctx)
    return {**finish(run_key, ctx), "push": pushed}


# --- sync now ---------------------------------------------------------------------------------

@names_the_database
def sync_now(run_key: str, *, person_ids=(), emails=(), config: SyncConfig | None = None,
             engine: Engine | None = None, client: SalesforceClient | None = None) -> dict:
    """"Sync with SFDC" for a few people: push their changes (creating them in Salesforce if
    needed, failed ones included) and their campaign memberships, then read them back.

    An empty request or one that matches nobody raises :class:`InputError`; records
    Salesforce rejected raise :class:`RecordsRejected` once everything else is done (the run
    is recorded as failed, with the rejections)."""
    ctx = open_context(config, engine=engine, client=client)
    ledger.start_run(ctx.engine, run_key, "salesforce_sync_now", "sync_now")
    person = ctx.tables["person"]
    wanted_emails = {e.strip().lower() for e in emails or () if e and e.strip()}
    try:
        wanted_ids = [int(i) for i in person_ids or ()]
    except (TypeError, ValueError):
        raise InputError(f"sync now: person_ids must be whole numbers: {person_ids!r}") from None
    if not wanted_ids and not wanted_emails:
        raise InputError("sync now: give person_ids and/or emails (the request named nobody)")
    with ctx.engine.begin() as conn:
        found = conn.execute(sa.select(person.c.id, person.c.email).where(sa.or_(
            person.c.id.in_(wanted_ids),
            sa.func.lower(person.c.email).in_(sorted(wanted_emails))))).all()
        ids = {r.id for r in found}
        missing = [str(i) for i in wanted_ids if i not in ids] + sorted(
            wanted_emails - {(r.email or "").lower() for r in found})
        if not ids:
            raise InputError(f"sync now: no person matches {', '.join(missing)}")
        outbox.fold(conn, ["person", "campaign_member"])
        outbox.retry_rows(conn, "person", ids)  # an explicit request retries failed ones too
    steps = {"create_people": create_people(run_key, ctx, person_ids=ids),
             "people": push_people(run_key, ctx, person_ids=ids),
             "campaign_members": push_campaign_members(run_key, ctx, person_ids=ids)}
    before = ctx.salesforce().api_calls
    loaded = repull_people(ctx, ids)
    ledger.add_api_calls(ctx.engine, run_key, ctx.salesforce().api_calls - before,
                         ctx.salesforce().api_usage)
    with reader(ctx.engine).connect() as conn:
        rejected = ledger.rejections(conn, run_key)
    message = None
    if rejected:
        message = (f"sync now: Salesforce rejected {len(rejected)} record(s): "
                   + "; ".join(rejected[:5]) + (" ..." if len(rejected) > 5 else ""))
    result = finish(run_key, ctx, status="failed" if rejected else "success", message=message)
    if rejected:
        raise RecordsRejected(message)
    return {**result, "people": sorted(ids), "not_found": missing, "push": steps,
            "reloaded": loaded}


# --- the initial copy -------------------------------------------------------------------------

@names_the_database
def prepare_copy(run_key: str, objects: list[str], created_from: datetime | None = None,
                 created_to: datetime | None = None, *, dag_id: str = "salesforce_initial_sync",
                 config: SyncConfig | None = None, engine: Engine | None = None,
                 client: SalesforceClient | None = None) -> list[str]:
    """Org lock and schema for a copy run, and every window counted, its Bulk job started
    (``initial.start_copies``); returns the objects to copy, in dependency order.
    ``objects``: API names, or ``all`` for every object the configuration syncs."""
    config = config or load_config()
    known = object_names(config.custom_objects)
    if ALL_OBJECTS in objects:
        objects = known
    unknown = sorted(set(objects) - set(known))
    if unknown or not objects:
        raise InputError(f"objects: {unknown or 'none given'}: choose '{ALL_OBJECTS}' or objects "
                         f"the configuration syncs ({', '.join(known)})")
    config, engine = connect(config, engine)
    ledger.start_run(engine, run_key, dag_id, "initial")
    client = client or new_client(config)
    before = client.api_calls
    catalog = sync_schema(engine, client, config)
    for warning in catalog.warnings:
        log.warning("%s", warning)
    ledger.add_api_calls(engine, run_key, client.api_calls - before, client.api_usage)
    chosen = [name for name in known if name in objects and name in catalog.objects]
    initial.start_copies(open_context(config, engine=engine, client=client), run_key, chosen,
                         created_from, created_to)
    return chosen


@names_the_database
def copy_object(run_key: str, sf_object: str, created_from: datetime | None,
                created_to: datetime | None, ctx: SyncContext | None = None) -> dict:
    """Copy one object's records created in the window (resumable; see ``initial``)."""
    return initial.copy_window(ctx or open_context(), run_key, sf_object, created_from,
                               created_to)


@names_the_database
def finish_copy(run_key: str, objects: list[str], ctx: SyncContext | None = None) -> dict:
    """Link people that arrived after their rows, start cursors where history is complete."""
    ctx = ctx or open_context()
    with ctx.engine.begin() as conn:
        link_people(conn, ctx.tables, ctx.catalog)
    complete = {name: initial.close_coverage(ctx, name) for name in objects}
    summary = finish(run_key, ctx)
    summary["cursor_started"] = complete
    with reader(ctx.engine).connect() as conn:
        summary["counts"] = ledger.recorded_counts(conn, run_key, "copy")
    return summary

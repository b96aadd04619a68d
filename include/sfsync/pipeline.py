"""The pull sync's steps, one function per Airflow task, each safe to retry.

``prepare`` is the only step that needs Salesforce on an idle cycle: it checks the org lock,
describes every object (one composite call, which also catches schema drift) and probes for
changes (one composite call). ``extract_object`` fetches what the probe could not (more pages,
Bulk jobs). ``filter_object``, ``load_object``, ``dedupe_people`` and ``finish`` work from the
durable staging in the marketing database and never call Salesforce.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.sfsync import extract as X
from include.sfsync import load as L
from include.sfsync.catalog import Catalog, build_catalog, object_types
from include.sfsync.config import SyncConfig, load_config
from include.sfsync.dedupe import find_duplicates
from include.sfsync.filters import filter_records
from include.sfsync.mdb import (
    bookkeeping,
    build_metadata,
    create_tables,
    engine_for,
    ensure_schema,
    fresh_stamp,
    reader,
    utcnow,
)
from include.sfsync.salesforce import SalesforceClient

log = logging.getLogger(__name__)


class OrgMismatchError(RuntimeError):
    """The marketing database belongs to another Salesforce org."""


@dataclass
class SyncContext:
    config: SyncConfig
    engine: Engine
    catalog: Catalog
    tables: dict[str, sa.Table]
    books: dict[str, sa.Table]
    client: SalesforceClient | None = None

    def salesforce(self) -> SalesforceClient:
        if self.client is None:
            self.client = SalesforceClient.from_connection(
                self.config.salesforce_conn_id, bulk_poll_seconds=self.config.bulk_poll_seconds)
        return self.client


def _books(engine: Engine) -> dict[str, sa.Table]:
    books = bookkeeping(sa.MetaData())
    create_tables(engine, books.values())
    return books


def open_context(config: SyncConfig | None = None, *, engine: Engine | None = None,
                 client: SalesforceClient | None = None) -> SyncContext:
    """The context of a step that works from what ``prepare`` stored (no Salesforce call)."""
    config = config or load_config()
    engine = engine or engine_for(config.marketing_conn_id)
    books = _books(engine)
    with reader(engine).connect() as conn:
        describes = {r.sf_object: json.loads(r.describe)
                     for r in conn.execute(sa.select(books["describe"]))}
    if not describes:
        raise RuntimeError("no Salesforce schema stored yet: the prepare step has not run")
    catalog = build_catalog(describes, config)
    _metadata, tables, books = build_metadata(catalog)
    _match_database(engine, tables)
    return SyncContext(config, engine, catalog, tables, books, client)


def _match_database(engine: Engine, tables: dict[str, sa.Table]) -> None:
    """Read columns the way they are stored (widened types, columns kept after drift)."""
    inspector = sa.inspect(reader(engine))
    for table in tables.values():
        if not inspector.has_table(table.name):
            continue
        for info in inspector.get_columns(table.name):
            if info["name"] not in table.c:
                table.append_column(sa.Column(info["name"], info["type"]))
            elif isinstance(info["type"], (sa.Text, sa.String)) and not isinstance(
                    table.c[info["name"]].type, (sa.Text, sa.String)):
                table.c[info["name"]].type = sa.Text()


def check_org(engine: Engine, books: dict, client: SalesforceClient) -> str:
    """Lock the marketing database to the first org it syncs with; refuse any other."""
    lock_t = books["org_lock"]
    with engine.begin() as conn:
        lock = conn.execute(sa.select(lock_t).where(lock_t.c.id == 1)).first()
        if lock is None:
            org_id = client.org_id()
            conn.execute(lock_t.insert().values(id=1, org_id=org_id,
                                                instance_url=client.instance_url,
                                                locked_at=utcnow()))
            log.info("marketing database locked to Salesforce org %s", org_id)
            return org_id
    if lock.org_id[:15] != client.org_id_prefix:
        raise OrgMismatchError(
            f"this marketing database belongs to Salesforce org {lock.org_id} "
            f"({lock.instance_url}), but connection points at org {client.org_id_prefix} "
            f"({client.instance_url}). Refusing to mix two orgs' data. To re-point it "
            "deliberately: python -m include.sfsync.admin repoint-org --org-id <new org id> --yes")
    return lock.org_id


def repoint_org(engine: Engine, org_id: str) -> None:
    """Deliberately attach this marketing database to another org (documented admin command)."""
    books = _books(engine)
    with engine.begin() as conn:
        conn.execute(books["org_lock"].delete())
        conn.execute(books["org_lock"].insert().values(id=1, org_id=org_id, locked_at=utcnow(),
                                                       instance_url="(re-pointed by admin)"))
        conn.execute(books["watermark"].delete())  # the new org's changes start from scratch


def start_run(engine: Engine, books: dict, run_key: str, dag_id: str, kind: str) -> None:
    run_t = books["run"]
    with engine.begin() as conn:
        if conn.execute(sa.select(run_t.c.run_key).where(run_t.c.run_key == run_key)).first():
            conn.execute(run_t.update().where(run_t.c.run_key == run_key).values(
                status="running", ended_at=None))
        else:
            conn.execute(run_t.insert().values(run_key=run_key, dag_id=dag_id, kind=kind,
                                               status="running", started_at=utcnow()))


def add_api_calls(engine: Engine, books: dict, run_key: str, calls: int) -> None:
    if calls:
        run_t = books["run"]
        with engine.begin() as conn:
            conn.execute(run_t.update().where(run_t.c.run_key == run_key).values(
                api_calls=run_t.c.api_calls + calls))


def sync_schema(engine: Engine, books: dict, client: SalesforceClient, config: SyncConfig
                ) -> tuple[Catalog, dict, dict]:
    """Org lock, then describe every object in one call and evolve the tables to match."""
    check_org(engine, books, client)
    describes = client.describe_all([o.sf_object for o in object_types(config)])
    with engine.begin() as conn:
        for name, describe in describes.items():
            conn.execute(books["describe"].delete().where(books["describe"].c.sf_object == name))
            conn.execute(books["describe"].insert().values(
                sf_object=name, describe=json.dumps(describe), fetched_at=utcnow()))
    catalog = build_catalog(describes, config)
    tables, books = ensure_schema(engine, catalog)
    return catalog, tables, books


def prepare(run_key: str, *, dag_id: str = "salesforce_incremental_sync",
            config: SyncConfig | None = None, engine: Engine | None = None,
            client: SalesforceClient | None = None) -> dict:
    """Org lock, describe (schema drift), schema, probe. Returns the plan per object."""
    config = config or load_config()
    engine = engine or engine_for(config.marketing_conn_id)
    books = _books(engine)
    start_run(engine, books, run_key, dag_id, "incremental")
    with reader(engine).connect() as conn:
        done = {r.sf_object: r.mode for r in conn.execute(sa.select(books["extract"]).where(
            books["extract"].c.run_key == run_key))}
    names = [o.sf_object for o in object_types(config)]
    custom = list(config.custom_objects)
    if done and set(done) == set(names):  # a retry after the probe: nothing to ask Salesforce
        return {"objects": done, "custom_objects": custom, "api_calls": 0}
    client = client or SalesforceClient.from_connection(
        config.salesforce_conn_id, bulk_poll_seconds=config.bulk_poll_seconds)
    before = client.api_calls
    catalog, _tables, books = sync_schema(engine, books, client, config)
    plans = X.probe(client, engine, books, catalog, run_key)
    calls = client.api_calls - before
    add_api_calls(engine, books, run_key, calls)
    return {"objects": {name: plan.mode for name, plan in plans.items()},
            "custom_objects": custom, "api_calls": calls}


def extract_object(run_key: str, sf_object: str, ctx: SyncContext | None = None) -> dict:
    ctx = ctx or open_context()
    result = X.extract(ctx.client, ctx.engine, ctx.books, ctx.catalog, run_key, sf_object,
                       client_factory=ctx.salesforce)
    if not result.skipped_calls:
        add_api_calls(ctx.engine, ctx.books, run_key, result.api_calls)
    return {"object": sf_object, "mode": result.mode, "rows": result.rows,
            "api_calls": 0 if result.skipped_calls else result.api_calls}


def filter_object(run_key: str, sf_object: str, ctx: SyncContext | None = None) -> dict:
    """Apply sync filters and drop unsynced fields in staging; record the Skipped count."""
    ctx = ctx or open_context()
    extract_t, stage_t = ctx.books["extract"], ctx.books["stage"]
    obj = ctx.catalog.object(sf_object)
    with ctx.engine.begin() as conn:
        state = conn.execute(sa.select(extract_t).where(
            extract_t.c.run_key == run_key, extract_t.c.sf_object == sf_object)).first()
        if state is None or state.status == "probed":
            raise RuntimeError(f"{sf_object}: not extracted yet for run {run_key}")
        if state.status in {"filtered", "loaded"}:
            skipped = conn.execute(sa.select(ctx.books["count"].c.skipped).where(
                ctx.books["count"].c.run_key == run_key,
                ctx.books["count"].c.sf_object == sf_object)).scalar()
            return {"object": sf_object, "skipped": skipped or 0, "kept": state.rows}
        stage_rows = conn.execute(sa.select(stage_t.c.seq, stage_t.c.record).where(
            stage_t.c.run_key == run_key, stage_t.c.sf_object == sf_object)).all()
        kept, skipped = filter_records(obj, [json.loads(r.record) for r in stage_rows])
        kept_by_id = {rec["Id"]: rec for rec in kept}
        for row in stage_rows:
            where = (stage_t.c.run_key == run_key, stage_t.c.sf_object == sf_object,
                     stage_t.c.seq == row.seq)
            rec_id = json.loads(row.record)["Id"]
            if rec_id in kept_by_id:
                conn.execute(stage_t.update().where(*where).values(
                    record=json.dumps(kept_by_id[rec_id], separators=(",", ":"))))
            else:
                conn.execute(stage_t.delete().where(*where))
        skipped_total, kept_total = len(skipped), len(kept)
        L.record_counts(conn, ctx.books["count"], run_key, sf_object, "pull",
                        {"skipped": skipped_total}, state.api_calls)
        conn.execute(extract_t.update().where(
            extract_t.c.run_key == run_key, extract_t.c.sf_object == sf_object).values(
            status="filtered", rows=kept_total, updated_at=utcnow()))
    return {"object": sf_object, "skipped": skipped_total, "kept": kept_total}


def load_object(run_key: str, sf_object: str, ctx: SyncContext | None = None) -> dict:
    ctx = ctx or open_context()
    with reader(ctx.engine).connect() as conn:
        status = conn.execute(sa.select(ctx.books["extract"].c.status).where(
            ctx.books["extract"].c.run_key == run_key,
            ctx.books["extract"].c.sf_object == sf_object)).scalar()
    if status not in {"filtered", "loaded"}:
        raise RuntimeError(f"{sf_object}: the field filter has not run for run {run_key} "
                           f"(status {status!r})")
    counts = L.load_object(ctx.engine, ctx.tables, ctx.books, ctx.catalog, run_key, sf_object,
                           X.staged(ctx.engine, ctx.books, run_key, sf_object))
    return {"object": sf_object, **counts}


def dedupe_people(run_key: str, ctx: SyncContext | None = None) -> dict:
    """Record duplicate people; skipped when this run changed no lead or contact (the check
    reads every person, which is most of an idle cycle's time on a large database)."""
    ctx = ctx or open_context()
    count_t = ctx.books["count"]
    with reader(ctx.engine).connect() as conn:
        changed = conn.execute(sa.select(sa.func.sum(
            count_t.c.new + count_t.c.updated + count_t.c.deleted)).where(
            count_t.c.run_key == run_key, count_t.c.sf_object.in_(["Lead", "Contact"]))).scalar()
    if not changed:
        return {rule.name: 0 for rule in ctx.config.dedupe_rules}
    return find_duplicates(ctx.engine, ctx.tables["person"], ctx.books["duplicate"],
                           list(ctx.config.dedupe_rules))


def link_people(ctx: SyncContext) -> int:
    """Fill ``person_id`` where the person arrived after the row that points at it."""
    fixed = 0
    with ctx.engine.begin() as conn:
        for obj in ctx.catalog.ordered():
            table = ctx.tables[obj.type.table]
            if "person_id" not in table.c or obj.sf_object in {"Lead", "Contact"}:
                continue
            refs = [c for c in ("sfdc_contact_id", "sfdc_who_id", "sfdc_lead_id")
                    if c in table.c]
            refs += [f.column for f in obj.synced if f.sf_type == "reference"
                     and {"Contact", "Lead"} & set(f.reference_to) and f.column not in refs]
            person = ctx.tables["person"]
            for ref in refs:
                for col in ("sfdc_contact_id", "sfdc_lead_id"):
                    match = sa.select(person.c.id).where(person.c[col] == table.c[ref]) \
                        .scalar_subquery()
                    result = conn.execute(table.update().where(
                        table.c.person_id.is_(None), table.c[ref].is_not(None),
                        sa.exists().where(person.c[col] == table.c[ref])).values(
                        person_id=match, sfsync_updated_at=fresh_stamp()))
                    fixed += result.rowcount
    return fixed


def finish(run_key: str, ctx: SyncContext | None = None, *, status: str = "success") -> dict:
    """Link late-arriving people, close the run, clean the staging."""
    ctx = ctx or open_context()
    linked = link_people(ctx)
    run_t, count_t = ctx.books["run"], ctx.books["count"]
    X.cleanup(ctx.engine, ctx.books, run_key)
    with ctx.engine.begin() as conn:
        conn.execute(run_t.update().where(run_t.c.run_key == run_key).values(
            status=status, ended_at=utcnow()))
        counts = {r.sf_object: {k: getattr(r, k) for k in L.COUNT_KEYS}
                  for r in conn.execute(sa.select(count_t).where(count_t.c.run_key == run_key,
                                                                   count_t.c.operation == "pull"))}
        calls = conn.execute(sa.select(run_t.c.api_calls).where(run_t.c.run_key == run_key)
                             ).scalar()
    return {"run_key": run_key, "counts": counts, "api_calls": calls, "people_linked": linked}


def fail_fast(call):
    """Run ``call``; a wrong org or a bad configuration fails the task without retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from include.sfsync.config import ConfigError

    try:
        return call()
    except (OrgMismatchError, ConfigError) as exc:
        raise AirflowFailException(str(exc)) from exc


def run_key_of(context) -> str:
    """The sync run an Airflow task belongs to: one per DAG run."""
    return f"{context['dag'].dag_id}:{context['run_id']}"


def mark_failed(run_key: str, message: str, *, config: SyncConfig | None = None) -> None:
    """Record a failed run (sync status "Failed") from a DAG failure callback."""
    config = config or load_config()
    engine = engine_for(config.marketing_conn_id)
    books = _books(engine)
    with engine.begin() as conn:
        conn.execute(books["run"].update().where(books["run"].c.run_key == run_key).values(
            status="failed", ended_at=utcnow(), message=message[:2000]))


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


# The push, after the pulls of the cycle: new people first (dedupe on write), then updates;
# members after people and campaigns, whose ids they need.
PUSH_STEPS = ("create_people", "people", "campaigns", "campaign_members", "activities")


def push(run_key: str, step: str, ctx: SyncContext | None = None) -> dict:
    """One push step (see :mod:`include.sfsync.push`); zero API calls when nothing changed."""
    from include.sfsync import push as P
    from include.sfsync.activity_push import push_activities

    ctx = ctx or open_context()
    if not ctx.config.push.enabled:
        return {"step": step, "disabled": True, "api_calls": 0}
    run_t = ctx.books["run"]
    with reader(ctx.engine).connect() as conn:
        stopped = conn.execute(sa.select(run_t.c.push_stopped).where(
            run_t.c.run_key == run_key)).scalar()
    if stopped:  # an earlier step hit the request limit: the rest of the cycle waits too
        return {"step": step, "stopped": stopped, "api_calls": 0}
    steps = {"create_people": P.create_people, "people": P.push_people,
             "campaigns": P.push_campaigns, "campaign_members": P.push_campaign_members,
             "activities": push_activities}
    result = {"step": step, **steps[step](run_key, ctx)}
    if result.get("stopped"):
        with ctx.engine.begin() as conn:
            conn.execute(run_t.update().where(run_t.c.run_key == run_key).values(
                push_stopped=result["stopped"]))
    return result


def sync_now(run_key: str, *, person_ids=(), emails=(), config: SyncConfig | None = None,
             engine: Engine | None = None, client: SalesforceClient | None = None) -> dict:
    """"Sync with SFDC" for a few people: push their changes (creating them in Salesforce if
    needed, failed ones included) and their campaign memberships, then read them back."""
    from include.sfsync import capture
    from include.sfsync import push as P

    ctx = open_context(config, engine=engine, client=client)
    start_run(ctx.engine, ctx.books, run_key, "salesforce_sync_now", "sync_now")
    person = ctx.tables["person"]
    wanted_emails = {e.strip().lower() for e in emails if e and e.strip()}
    with ctx.engine.begin() as conn:
        found = conn.execute(sa.select(person.c.id, person.c.email).where(sa.or_(
            person.c.id.in_([int(i) for i in person_ids]),
            sa.func.lower(person.c.email).in_(sorted(wanted_emails))))).all()
        ids = {r.id for r in found}
        missing = [str(i) for i in person_ids if int(i) not in ids] + sorted(
            wanted_emails - {(r.email or "").lower() for r in found})
        if not ids:
            raise ValueError(f"no person matches {', '.join(missing) or 'nothing requested'}")
        capture.fold(conn, ["person", "campaign_member"])
        # an explicit request retries people whose last push failed, quarantined or not
        conn.execute(capture.outbox_t.update().where(
            capture.outbox_t.c.table_name == "person", capture.outbox_t.c.row_id.in_(ids),
            capture.outbox_t.c.status != capture.PENDING).values(status=capture.PENDING))
    steps = {"create_people": P.create_people(run_key, ctx, person_ids=ids),
             "people": P.push_people(run_key, ctx, person_ids=ids),
             "campaign_members": P.push_campaign_members(run_key, ctx, person_ids=ids)}
    before = ctx.salesforce().api_calls
    loaded = P.repull_people(ctx, ids)
    add_api_calls(ctx.engine, ctx.books, run_key, ctx.salesforce().api_calls - before)
    result = finish(run_key, ctx)
    return {**result, "people": sorted(ids), "not_found": missing, "push": steps,
            "reloaded": loaded}


def maintain(run_key: str, ctx: SyncContext | None = None) -> dict:
    """Field re-copies, formula refreshes and Id-set reconciliation, when due."""
    from include.sfsync.maintenance import maintain as run_maintenance

    return run_maintenance(run_key, ctx or open_context())

"""Admin commands for the marketing database.

    python -m include.sfsync.admin connect
    python -m include.sfsync.admin fields [--csv]
    python -m include.sfsync.admin start [--objects Lead Contact ...]
    python -m include.sfsync.admin status
    python -m include.sfsync.admin outbox [--all]
    python -m include.sfsync.admin release (--table person --row-id 42 | --quarantined)
    python -m include.sfsync.admin repoint-org --org-id 00D... --yes
    python -m include.sfsync.admin config
    python -m include.sfsync.admin mapping

``connect`` checks the Salesforce connection: which org (id, name, sandbox or production),
which user, the API usage against the daily limit, and which synced objects the user can see.
``fields`` lists every field of every synced object the sync user can see and what the sync
does with it (its column and direction, or why it is not synced), as a table or ``--csv``.
``start`` runs the initial copy here and now, as ``salesforce_initial_sync`` does (every object
the configuration syncs, or ``--objects``), then the incremental DAG carries on from it.
``status`` prints the sync status (Last synced / Sync in progress / Failed), the latest run's
counts, the push backlog, the pending changes flagged stale (older than
``retention.stale_after_hours``) and the org the database is locked to. ``outbox`` lists the local
changes Salesforce rejected (failed, quarantined) with the reason; ``--all`` adds the pending
ones. ``release`` makes failed or quarantined changes pending again, for the next cycle.
``repoint-org`` deliberately attaches the database to another Salesforce org (for example after
a sandbox refresh): it replaces the org lock and drops every cursor, so the next cycles copy
the new org's data from scratch. ``config`` prints the effective configuration; ``mapping``
(with a reachable org) prints every field mapping the sync would use, ready to paste under
``mappings:``.
Connections come from Airflow (``marketing_db``, ``salesforce_default``), as for the DAGs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import re
import sys

import sqlalchemy as sa
import yaml
from tabulate import tabulate

from include.sfsync.catalog import CREATE_KEY_OBJECTS, build_catalog
from include.sfsync.config import load_config
from include.sfsync.console import release, sync_state
from include.sfsync.context import new_client, open_context
from include.sfsync.errors import ConfigError, MarketingDatabaseError
from include.sfsync.objects import ALL_OBJECTS, STANDARD_OBJECTS, object_names
from include.sfsync.report import counts_table
from include.sfsync.salesforce import soql
from include.sfsync.salesforce.client import daily_api_usage
from include.sfsync.store.engine import database_problem, engine_for, reader, utcnow
from include.sfsync.store.ledger import mark_failed, repoint_org
from include.sfsync.store.outbox import PENDING, outbox_t

_ORG_ID = re.compile(r"00D[a-zA-Z0-9]{12}(?:[a-zA-Z0-9]{3})?")


def looks_like_org_id(value: str) -> bool:
    """15 case-sensitive characters starting ``00D``, plus 3 checksum characters or not."""
    return bool(_ORG_ID.fullmatch(value or ""))


def status(engine) -> str:
    state = sync_state(engine)
    lines = [f"Org: {state.org_id} ({state.instance_url})" if state.org_id
             else "Org: not locked yet"]
    if state.status == "never":
        lines.append("Status: never synced")
    elif state.status == "running":
        lines.append(f"Status: Sync in progress (since {state.started_at:%Y-%m-%d %H:%M:%S} UTC)")
    elif state.status == "failed":
        lines.append(f"Status: Failed ({state.message or 'see the Airflow task logs'})")
    if state.last_synced_at is not None and state.status != "running":
        lines.append(f"Last synced {state.last_synced_at:%Y-%m-%d %H:%M:%S} UTC "
                     f"({state.last_synced_run})")
    if state.counts:
        lines.append(counts_table(state.counts, title=f"Latest run {state.run_key}",
                                  api_calls=state.api_calls))
    if state.backlog:
        lines.append("Push backlog: " + ", ".join(
            f"{table} {status} {n}" for (table, status), n in sorted(state.backlog.items())))
    if state.stale:
        lines.append(f"Stale: {state.stale} pending change(s) waiting for Salesforce longer than "
                     "retention.stale_after_hours (still pushed every cycle):")
        lines += [f"  {e['table_name']} {e['row_id']}: {e['op']} {e['columns']}, waiting since "
                  f"{e['first_changed_at']:%Y-%m-%d %H:%M:%S} UTC, attempts {e['attempts']}"
                  + (f", last error: {e['last_error']}" if e["last_error"] else "")
                  for e in state.stale_entries]
        if state.stale > len(state.stale_entries):
            lines.append(f"  ... and {state.stale - len(state.stale_entries)} more "
                         "(python -m include.sfsync.admin outbox --all)")
    return "\n".join(lines)


def outbox(engine, *, everything: bool = False) -> str:
    """The local changes waiting for Salesforce: rejected ones (and pending, with ``everything``)."""
    query = sa.select(outbox_t).order_by(outbox_t.c.table_name, outbox_t.c.row_id)
    if not everything:
        query = query.where(outbox_t.c.status != PENDING)
    with reader(engine).connect() as conn:  # read-only: never waits for a running sync
        rows = conn.execute(query).all() if sa.inspect(conn).has_table(outbox_t.name) else []
    if not rows:
        return "Nothing " + ("waiting" if everything else "rejected") + " in the outbox."
    return "\n".join(f"{r.table_name} {r.row_id}: {r.status}"
                     f"{' (stale)' if r.stale_at and r.status == PENDING else ''} "
                     f"(attempts {r.attempts}) {r.op} {r.columns} {r.last_error or ''}".rstrip()
                     for r in rows)


def connect() -> str:
    """What the Salesforce connection reaches: org, user, API usage, visible objects (3 API
    calls: the organization, the limits, the global describe)."""
    config = load_config()
    client = new_client(config)
    org = client.sf.query(soql.select("Organization", [
        "Id", "Name", "IsSandbox", "OrganizationType"]))["records"][0]
    visible = {o["name"] for o in client.sf.describe()["sobjects"]}
    wanted = object_names(config.custom_objects)
    missing = [name for name in wanted if name not in visible]
    kind = "sandbox" if org.get("IsSandbox") else "production"
    lines = [f"Salesforce org {org['Id']} \"{org.get('Name')}\" ({kind}, "
             f"{org.get('OrganizationType') or 'edition unknown'}) at {client.instance_url}",
             f"Sync user: {_sync_user(config.salesforce_conn_id)}"]
    used, most = daily_api_usage(client.sf)
    if most:
        lines.append(f"API requests in the last 24 h: {used:,} of {most:,} ({used / most:.1%})")
    lines.append(f"The sync user sees {len(visible)} objects; of the {len(wanted)} the "
                 "configuration syncs, " + ("all are visible." if not missing else
                                            f"not visible: {', '.join(missing)}."))
    lines.append(create_key_check(client, config.push.create_key_field,
                                  [o for o in CREATE_KEY_OBJECTS if o in visible]))
    lines.append(f"This check made {client.api_calls} API calls.")
    return "\n".join(lines)


def create_key_check(client, field: str | None, objects: list[str]) -> str:
    """Whether the objects have the create key field, set up as the README says (one
    /composite call for their describes)."""
    if not field or not objects:
        return "Create key field: none configured (push.create_key_field): a create retried " \
            "after a crash looks up what it sent first."
    results = client.composite([{"url": f"/sobjects/{o}/describe"} for o in objects])
    problems = []
    for sobject, result in zip(objects, results, strict=True):
        meta = next((f for f in (result["body"] or {}).get("fields", [])
                     if isinstance(result["body"], dict) and f["name"] == field), None)
        if meta is None:
            problems.append(f"{sobject}: missing")
        elif not (meta.get("externalId") and meta["type"] == "string"):
            problems.append(f"{sobject}: not a Text field marked External ID")
        elif not (meta.get("createable") and meta.get("updateable")):
            problems.append(f"{sobject}: the sync user cannot edit it")
    if not problems:
        return f"Create key field {field}: set up on {', '.join(objects)}."
    return (f"Create key field {field} (push.create_key_field): {'; '.join(problems)}. Creates "
            "there look up what a lost call made instead (README: Set up the org).")


def _sync_user(conn_id: str) -> str:
    from airflow.sdk import BaseHook  # Airflow's SDK: only where a connection is looked up

    login = BaseHook.get_connection(conn_id).login
    return login or "the connected app's run-as user (OAuth client credentials)"


FIELD_COLUMNS = ("object", "field", "type", "table", "column", "direction", "synced", "reason")


def fields_report(*, as_csv: bool = False) -> str:
    """Every visible field of every synced object and what the sync does with it, with the
    configuration's warnings (one describe call per 25 objects)."""
    config = load_config()
    client = new_client(config)
    catalog = build_catalog(client.describe_all(object_names(config.custom_objects)), config)
    rows = [[f.sf_object, f.sf_field, f.sf_type, obj.type.table, f.column or "",
             obj.type.direction if f.synced else "", "yes" if f.synced else "no", f.reason]
            for obj in catalog.ordered() for f in obj.fields]
    if as_csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(FIELD_COLUMNS)
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    synced = sum(row[6] == "yes" for row in rows)
    lines = [tabulate(rows, headers=[c.capitalize() for c in FIELD_COLUMNS],
                      disable_numparse=True),
             f"{synced:,} of {len(rows):,} fields synced, {len(catalog.objects)} objects."]
    lines += [f"warning: {w}" for w in catalog.warnings]
    return "\n".join(lines)


def start(objects: list[str]) -> str:
    """The initial copy, in this process: the same steps as ``salesforce_initial_sync``."""
    from include.sfsync import pipeline  # the engine's steps: for this command only

    run_key = f"admin_start:{utcnow():%Y-%m-%dT%H:%M:%S}"
    names = pipeline.prepare_copy(run_key, objects, dag_id="admin start")
    try:
        ctx = open_context()
        for name in names:
            pipeline.copy_object(run_key, name, None, None, ctx)
        summary = pipeline.finish_copy(run_key, names, ctx)
    except Exception as exc:
        mark_failed(engine_for(load_config().marketing_conn_id), run_key, str(exc))
        raise
    waiting = sorted(n for n, done in summary["cursor_started"].items() if not done)
    return "\n".join([
        counts_table(summary["counts"], title=f"Initial copy ({run_key})",
                     api_calls=summary["api_calls"]),
        "Incremental cycles continue from here (salesforce_incremental_sync)."
        + (f" Not complete yet: {', '.join(waiting)}." if waiting else "")])


def mapping() -> str:
    """Every field mapping the sync would use, as YAML for ``mappings:`` (asks Salesforce)."""
    config = load_config()
    client = new_client(config)
    catalog = build_catalog(client.describe_all(object_names(config.custom_objects)), config)
    return yaml.safe_dump({"mappings": catalog.mapping_overrides_template()}, sort_keys=True)


def use_airflow_connections(*conn_ids: str) -> None:
    """Find the connections the DAGs use the way Airflow does: an ``AIRFLOW_CONN_*`` variable,
    else Airflow's secrets backends and metadata database (the ``AIRFLOW_HOME`` that
    ``. scripts/airflow_env.sh`` sets, where ``make airflow`` loaded ``airflow_settings.yaml``);
    found ones are passed on to this process as ``AIRFLOW_CONN_*``."""
    for conn_id in conn_ids:
        env = "AIRFLOW_CONN_" + conn_id.upper()
        if os.environ.get(env):
            continue
        from airflow.models.connection import Connection  # Airflow core: for the CLI only
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = Connection.get_connection_from_secrets(conn_id)
        except AirflowNotFoundException:
            raise ConfigError(f"the Airflow connection {conn_id!r} is not defined: set {env}, or "
                              "run `. scripts/airflow_env.sh` first (`make airflow` loads "
                              "airflow_settings.yaml into its metadata database)") from None
        os.environ[env] = conn.as_json()


_stdout = [sys.stdout]  # the standard output main() was called with (see answer)


def answer(text: str) -> None:
    """The command's output, on the standard output (logs go to stderr meanwhile)."""
    print(text, file=_stdout[-1], flush=True)


def main(argv: list[str] | None = None) -> int:
    """The command line; every error is one line on stderr (exit 2), never a traceback
    (``SFSYNC_DEBUG=1`` shows it)."""
    try:
        # Logs (Airflow's included) go to stderr, so stdout carries only the answer:
        # `admin fields --csv > fields.csv` is a clean CSV file.
        _stdout.append(sys.stdout)
        with contextlib.redirect_stdout(sys.stderr):
            return _main(argv)
    except Exception as exc:  # noqa: BLE001 - a command line answers in one line
        if os.environ.get("SFSYNC_DEBUG"):
            raise
        if isinstance(exc, (sa.exc.DBAPIError, sa.exc.NoSuchTableError)):
            exc = MarketingDatabaseError(_database_problem(exc))
        print(f"error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
              file=sys.stderr)
        return 2
    finally:
        if len(_stdout) > 1:
            _stdout.pop()


def _database_problem(exc: Exception) -> str:
    """The marketing database's error in one line, naming its Airflow connection."""
    conn_id, url = "marketing_db", None
    try:
        conn_id = load_config().marketing_conn_id
        url = engine_for(conn_id).url.render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - the database's own error is the one to report
        pass
    return database_problem(conn_id, url, exc)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.sfsync.admin",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("connect", help="check the Salesforce connection: org, user, API usage")
    flds = sub.add_parser("fields", help="every visible field and what the sync does with it")
    flds.add_argument("--csv", action="store_true", help="as CSV, one row per field")
    begin = sub.add_parser("start", help="the initial copy, here and now")
    begin.add_argument("--objects", nargs="+", default=[ALL_OBJECTS],
                       help="objects to copy (default: all the configuration syncs)")
    sub.add_parser("status", help="sync status and the latest run's counts")
    box = sub.add_parser("outbox", help="local changes Salesforce rejected")
    box.add_argument("--all", action="store_true", help="pending changes too")
    free = sub.add_parser("release", help="retry rejected changes at the next cycle")
    free.add_argument("--table", help="a two-way table (person, campaign, campaign_member)")
    free.add_argument("--row-id", type=int, help="the row's id")
    free.add_argument("--quarantined", action="store_true", help="every quarantined change")
    repoint = sub.add_parser("repoint-org", help="attach the database to another org")
    repoint.add_argument("--org-id", required=True, help="the new org's 15- or 18-char id")
    repoint.add_argument("--yes", action="store_true", help="confirm: cursors are dropped")
    sub.add_parser("config", help="the effective configuration, as JSON")
    sub.add_parser("mapping", help="every field mapping, as YAML for mappings: (asks Salesforce)")
    args = parser.parse_args(argv)
    config = load_config()
    if args.command == "config":
        answer(json.dumps(config.model_dump(), indent=2))
        return 0
    if args.command in {"mapping", "connect", "fields"}:
        use_airflow_connections(config.salesforce_conn_id)
        answer({"mapping": mapping, "connect": connect,
               "fields": lambda: fields_report(as_csv=args.csv)}[args.command]())
        return 0
    use_airflow_connections(config.marketing_conn_id)
    if args.command == "start":
        use_airflow_connections(config.salesforce_conn_id)
        answer(start(args.objects))
        return 0
    engine = engine_for(config.marketing_conn_id)
    if args.command == "status":
        answer(status(engine))
        return 0
    if args.command == "outbox":
        answer(outbox(engine, everything=args.all))
        return 0
    if args.command == "release":
        if args.quarantined == bool(args.table and args.row_id is not None):
            parser.error("give either --table and --row-id, or --quarantined")
        two_way = sorted({o.table for o in STANDARD_OBJECTS if o.two_way})
        if args.table and args.table not in two_way:  # a typo must not release nothing, quietly
            raise ConfigError(f"--table {args.table}: not a two-way table ({', '.join(two_way)})")
        n = release(engine, table=args.table, row_id=args.row_id)
        answer(f"{n} change(s) will be pushed again at the next cycle.")
        return 0
    if not looks_like_org_id(args.org_id):
        parser.error(f"--org-id {args.org_id!r} is not an org id (00D followed by 12 or 15 "
                     "characters)")
    if not args.yes:
        parser.error("re-pointing drops every cursor: add --yes to confirm")
    repoint_org(engine, args.org_id)
    answer(f"The marketing database now belongs to org {args.org_id}; the next cycles copy its "
          "data from scratch.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

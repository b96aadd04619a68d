"""The push of people: dedupe on write, then updates of people already in Salesforce.

Any client writes the marketing database with plain SQL; triggers capture the changes
(:mod:`include.sfsync.store.capture`) and each push step folds them into ``sfsync_outbox``, then:

* dedupes on write: a person new to Salesforce is matched by e-mail (case-insensitive) against
  leads AND contacts; a match is linked (its values are weighed by the conflict policy, see
  :mod:`include.sfsync.pull.conflicts`) and a Lead is created only when nothing matches, with
  the configured defaults for empty required fields on that first push only;
* sends only columns that changed and differ from what Salesforce has, and only fields the sync
  user may update (create, for new records); a converted lead is never written, its contact is;
  contacts of one account travel together (fewer row locks).

Deleting a person locally does not delete it in Salesforce (as in the reference system).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from include.sfsync.context import SyncContext
from include.sfsync.errors import RequestLimitExceeded
from include.sfsync.pull.filters import skip_reason
from include.sfsync.pull.load import Counts, Loader
from include.sfsync.pull.people import resolve_people
from include.sfsync.push.base import Push, apply, create, start
from include.sfsync.salesforce import soql
from include.sfsync.salesforce.reads import query_all
from include.sfsync.salesforce.writes import Outcome
from include.sfsync.store import outbox
from include.sfsync.store.outbox import PENDING, OutboxEntry


def create_people(run_key: str, ctx: SyncContext, *, person_ids: set[int] | None = None) -> dict:
    """Dedupe on write: people not yet in Salesforce are linked to the lead or contact with
    their e-mail, or created as leads when nothing matches and ``push.create_leads`` allows it
    (``flagged``: rows with ``sync_to_salesforce`` true; ``person_ids``, for "sync now", are
    asked for explicitly). Linked people's other changes are left for :func:`push_people`."""
    push, entries, rows = start(ctx, run_key, "person", row_ids=person_ids)
    new = [e for e in entries if e.op == "upsert" and e.row_id in rows
           and not (rows[e.row_id].sfdc_lead_id or rows[e.row_id].sfdc_contact_id)]
    if new:
        every = person_ids is not None or ctx.config.push.create_leads == "all"
        try:
            _dedupe_and_create(push, new, rows,
                               may_create=lambda row: every or bool(row.sync_to_salesforce))
        except RequestLimitExceeded:  # the dedupe query was refused: all stays queued
            push.stopped = "REQUEST_LIMIT_EXCEEDED"
    return push.finish()


def push_people(run_key: str, ctx: SyncContext, *, person_ids: set[int] | None = None) -> dict:
    """Push the pending changes of people already in Salesforce (of ``person_ids`` only)."""
    push, entries, rows = start(ctx, run_key, "person", row_ids=person_ids)
    updates = []
    with ctx.engine.begin() as conn:
        for entry in entries:
            row = rows.get(entry.row_id)
            if entry.op == "delete" or row is None:
                outbox.drop_entry(conn, entry)  # person deletes stay local (module docstring)
                push.count("Lead", "skipped")
            elif row.sfdc_lead_id or row.sfdc_contact_id:
                updates.append(entry)
    _update_people(push, updates, rows)
    return push.finish()


def repull_people(ctx: SyncContext, person_ids: set[int]) -> int:
    """Read the people's leads and contacts again and load them now ("sync now"); the
    cursors are left alone. Returns how many records were loaded."""
    person = ctx.tables["person"]
    with ctx.engine.connect() as conn:
        found = conn.execute(sa.select(person.c.sfdc_lead_id, person.c.sfdc_contact_id).where(
            person.c.id.in_(sorted(person_ids)))).all()
    ids = {"Lead": sorted({r.sfdc_lead_id for r in found if r.sfdc_lead_id}),
           "Contact": sorted({r.sfdc_contact_id for r in found if r.sfdc_contact_id})}
    soqls, objects = [], []
    for sobject, values in ids.items():
        obj = ctx.catalog.object(sobject)
        for quoted in soql.in_lists(values):
            soqls.append(soql.select(sobject, obj.soql_fields,
                                     conditions=[soql.one_of("Id", quoted)]))
            objects.append(obj)
    if not soqls:
        return 0
    loaded = 0
    results = query_all(ctx.salesforce(), soqls)
    with ctx.engine.begin() as conn:
        for obj, records in zip(objects, results, strict=True):
            Loader(conn, ctx.tables, ctx.catalog, obj, Counts()).load(records)
            loaded += len(records)
    return loaded


def _email_key(value) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


def _dedupe_and_create(push: Push, entries: list[OutboxEntry], rows: dict, *,
                       may_create: Callable[[object], bool]) -> list[OutboxEntry]:
    """Link new people to existing leads or contacts with their e-mail; create the rest as
    leads, those ``may_create`` allows (the others stay here only, counted Skipped). Returns
    the linked entries (their other changes are pushed as updates)."""
    ctx = push.ctx
    person = ctx.tables["person"]
    lead, contact = ctx.catalog.object("Lead"), ctx.catalog.object("Contact")
    emails = sorted({k for e in entries if (k := _email_key(rows[e.row_id].email))})
    matches: dict[str, tuple[str, dict]] = {}  # email -> (object, record)
    if emails:
        queries = []  # (object, SOQL)
        for quoted in soql.in_lists(emails):
            queries.append(("Lead", soql.select("Lead", lead.soql_fields, conditions=[
                soql.where("IsConverted", "=", False), soql.one_of("Email", quoted)])))
            queries.append(("Contact", soql.select("Contact", contact.soql_fields,
                                                   conditions=[soql.one_of("Email", quoted)])))
        found = query_all(push.client, [q for _o, q in queries])
        for (sobject, _q), records in zip(queries, found, strict=True):
            for rec in sorted(records, key=lambda r: r["SystemModstamp"]):
                key = _email_key(rec.get("Email"))
                # a contact beats a lead; among equals, the latest modified
                if key and (key not in matches or sobject == "Contact"
                            or matches[key][0] == "Lead"):
                    matches[key] = (sobject, rec)
    linked: list[OutboxEntry] = []
    creates: list[tuple[int, dict]] = []
    create_entries: dict[int, tuple[OutboxEntry, dict]] = {}  # row id -> (entry, rewrite)
    claimed: dict[str, int] = {}  # e-mail -> person row creating or linking it in this push
    with ctx.engine.begin() as conn:
        taken = resolve_people(conn, person, {rec["Id"] for _o, rec in matches.values()})
        for entry in entries:
            row = rows[entry.row_id]
            key = _email_key(row.email)
            if key and key in claimed:
                push.fail(conn, entry, "Lead", Outcome.failed(
                    "DUPLICATE_PERSON", f"same e-mail ({row.email}) as person {claimed[key]}, "
                    "which this push links or creates: merge the two rows", ["Email"]),
                    sfdc_id=None, record={"email": row.email})
                continue
            if key and key in matches:
                sobject, rec = matches[key]
                reason = skip_reason(ctx.catalog.object(sobject), rec)
                if reason:
                    push.skip(conn, entry, sobject, f"{sobject} {rec['Id']} has its e-mail but "
                              f"is kept out by a {reason}: neither linked nor duplicated")
                    continue
                owner = taken.get(rec["Id"])
                if owner is not None and owner != row.id:
                    push.fail(conn, entry, sobject, Outcome.failed(
                        "DUPLICATE_PERSON", f"{sobject} {rec['Id']} with the e-mail {row.email} "
                        f"is already person {owner}: merge the two rows", ["Email"]),
                        sfdc_id=rec["Id"], record={"email": row.email})
                    continue
                claimed[key] = row.id
                _link(push, conn, entry, sobject, rec)
                linked.append(entry)
                push.count(sobject, "linked")
                continue
            if not may_create(row):  # setting sync_to_salesforce later creates it
                push.skip(conn, entry, "Lead", "push.create_leads is 'flagged' and the row's "
                          "sync_to_salesforce is not true: kept in the marketing database only")
                continue
            if key:
                claimed[key] = row.id
            try:
                body, rewrite = push.payload(lead, row, sorted(push.fields_by_column(
                    lead, create=True)), {}, create=True)
            except ValueError as exc:
                push.fail(conn, entry, "Lead", Outcome.failed("INVALID_VALUE", str(exc)),
                          sfdc_id=None, record=None)
                continue
            for sf_field, default in ctx.config.push.lead_defaults.items():
                if body.get(sf_field) in (None, ""):
                    body[sf_field] = default  # the first push only, and only when empty
            creates.append((entry.row_id, body))
            create_entries[entry.row_id] = (entry, rewrite)
    create(push, "Lead", creates, create_entries, rows,
           written=lambda _row_id, outcome: {"sfdc_type": "Lead", "sfdc_lead_id": outcome.id})
    return linked


def _link(push: Push, conn, entry: OutboxEntry, sobject: str, rec: dict) -> None:
    """Attach the person row to a matching Salesforce record, then load the record through
    the pull's loader: where the two differ, the conflict policy decides."""
    ctx = push.ctx
    id_col = "sfdc_lead_id" if sobject == "Lead" else "sfdc_contact_id"
    push.write_back(conn, entry.row_id, {id_col: rec["Id"], "sfdc_id": rec["Id"],
                                         "sfdc_type": sobject})
    entry.created = False  # linked: from now on an update of an existing record
    outbox.save_entry(conn, entry)
    outbox.settle_creates(conn, "person", [entry.row_id])  # a lost create's lead, maybe
    Loader(conn, ctx.tables, ctx.catalog, ctx.catalog.object(sobject), Counts(),
           run_key=push.run_key).load([rec])


def _update_people(push: Push, entries: list[OutboxEntry], rows: dict) -> None:
    ctx = push.ctx
    items: dict[str, list[tuple[int, dict]]] = {"Lead": [], "Contact": []}
    pending: dict[int, tuple[OutboxEntry, dict]] = {}  # row id -> (entry, rewrite)
    with ctx.engine.begin() as conn:
        current = outbox.outbox_entries(conn, "person", [e.row_id for e in entries])
        for entry in entries:
            entry = current.get(entry.row_id)  # linking may have resolved some columns
            row = rows.get(entry.row_id) if entry else None
            if entry is None or row is None or entry.status != PENDING:
                continue
            # a converted lead's person is written through its contact, never the lead
            sobject = "Contact" if row.sfdc_contact_id else "Lead"
            sfdc_id = row.sfdc_contact_id or row.sfdc_lead_id
            if row.sfdc_is_deleted:
                push.fail(conn, entry, sobject, Outcome.failed(
                    "ENTITY_IS_DELETED", f"{sobject} {sfdc_id} is deleted in Salesforce: "
                    "undelete it there or clear the row's Salesforce ids to create it again"),
                    sfdc_id=sfdc_id, record=None)
                continue
            obj = ctx.catalog.object(sobject)
            try:
                body, rewrite = push.payload(obj, row, entry.columns, entry.base, create=False)
            except ValueError as exc:
                push.fail(conn, entry, sobject, Outcome.failed("INVALID_VALUE", str(exc)),
                          sfdc_id=sfdc_id, record=None)
                continue
            if not body:
                outbox.drop_entry(conn, entry)  # nothing Salesforce does not have already
                continue
            items[sobject].append((entry.row_id, {"Id": sfdc_id, **body}))
            pending[entry.row_id] = (entry, rewrite)
    for sobject, batch in items.items():
        # contacts of one account travel together: fewer UNABLE_TO_LOCK_ROW
        batch.sort(key=lambda item: rows[item[0]]._mapping.get("sfdc_account_id") or "")
        apply(push, sobject, "PATCH", batch, pending, rows)

"""The push sync: local changes of people, campaigns and campaign members go to Salesforce.

Any client writes the marketing database with plain SQL; triggers capture the changes
(:mod:`include.sfsync.capture`) and each push step folds them into ``sfsync_outbox``, then:

* sends only columns that changed and differ from what Salesforce has (the outbox's base), and
  only fields the sync user may update (create, for new records); a converted lead is never
  written, its contact is;
* dedupes on write: a person new to Salesforce is matched by e-mail (case-insensitive) against
  leads AND contacts; a match is linked (its values are weighed by the conflict policy, see
  :mod:`include.sfsync.conflicts`) and a Lead is created only when nothing matches, with the
  configured defaults for empty required fields on that first push only;
* standardises values from the configured maps before writing;
* writes through collections (200 records) in /composite calls (5 collections), records of one
  account together; classifies every record's outcome (:mod:`include.sfsync.writes`).

A record that failed for a data or permission reason gets an ``sfsync_error`` row, its outbox
entry turns ``failed`` (tried again once the row changes again) and, after
``push.quarantine_after`` failures, ``quarantined`` (see ``admin outbox``). Outbox entries that
succeed are removed in the same transaction as the ids written back: a retried task resumes
where the last one stopped and never sends a record twice.

Deleting a person or a campaign locally does not delete it in Salesforce (as in the reference
system); deleting a campaign member does (CampaignMember has no recycle bin, as in Salesforce).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import quote

import sqlalchemy as sa

from include.sfsync import capture
from include.sfsync import load as L
from include.sfsync.capture import FAILED, PENDING, QUARANTINED, OutboxEntry
from include.sfsync.catalog import FieldMap, ObjectCatalog
from include.sfsync.filters import skip_reason
from include.sfsync.mdb import fresh_stamp
from include.sfsync.salesforce import SalesforceCallError, SalesforceClient
from include.sfsync.standardize import Standardizer
from include.sfsync.writes import (
    Outcome,
    RequestLimitExceeded,
    WriteInterrupted,
    limit_hit,
    record_error,
    same,
    sf_value,
    write_with_retries,
)

log = logging.getLogger(__name__)
# Errors the next pull resolves (the lead became a contact): the change waits, it did not fail.
RETRY_AFTER_PULL = frozenset({"CANNOT_UPDATE_CONVERTED_LEAD"})
IN_LIST_BUDGET = 10_000  # URL-encoded characters of one IN list: queries go in GET URLs (16 KB)


@dataclass
class Push:
    """One push step's state: the context, its counts and the API calls it made."""

    ctx: object  # pipeline.SyncContext
    run_key: str
    table: str
    counts: dict[str, Counter] = field(default_factory=dict)
    stopped: str | None = None
    interrupted: Exception | None = None  # a failed call, raised once its outcomes are settled
    calls_before: int | None = None  # set when there is something to push

    def __post_init__(self):
        self.standardizer = Standardizer.from_settings(self.ctx.config.push)
        self._writable: dict[tuple[str, bool], dict[str, FieldMap]] = {}

    @property
    def client(self) -> SalesforceClient:
        return self.ctx.salesforce()

    def count(self, sf_object: str, key: str, n: int = 1) -> None:
        self.counts.setdefault(sf_object, Counter())[key] += n

    # --- payloads -------------------------------------------------------------------------

    def fields_by_column(self, obj: ObjectCatalog, *, create: bool) -> dict[str, FieldMap]:
        """Columns the sync user may write, and their fields (once per object and mode)."""
        key = (obj.sf_object, create)
        if key not in self._writable:
            self._writable[key] = {f.column: f for f in obj.synced if f.sf_field != "Id"
                                   and (f.createable if create else f.updateable)}
        return self._writable[key]

    def payload(self, obj: ObjectCatalog, row, columns, base: dict, *, create: bool
                ) -> tuple[dict, dict]:
        """(Salesforce fields to send, local columns to rewrite with standardised values)."""
        table = self.ctx.tables[obj.type.table]
        fields = self.fields_by_column(obj, create=create)
        body, rewrite = {}, {}
        for col in columns:
            f = fields.get(col)
            if f is None or col not in table.c:
                continue
            local = row._mapping.get(col)
            if create and local is None:
                continue
            if col in base and same(local, capture.stored_value(table.c[col], base[col])):
                continue  # changed and changed back, or already in Salesforce
            value = self.standardizer.standardize(obj.sf_object, f.sf_field, local)
            if value != local:
                rewrite[col] = value
            body[f.sf_field] = sf_value(f.sf_type, value)
        return body, rewrite

    # --- outcomes -------------------------------------------------------------------------

    def fail(self, conn, entry: OutboxEntry, sf_object: str, outcome: Outcome, *,
             sfdc_id: str | None, record: dict | None) -> None:
        """A data or permission error: logged, the entry failed (or quarantined)."""
        record_error(conn, self.ctx.books["error"], self.run_key, sf_object, outcome,
                     sfdc_id=sfdc_id, record=record | {"person_row_id": entry.row_id}
                     if record is not None and self.table == "person" else record)
        entry.attempts += 1
        entry.status = QUARANTINED if entry.attempts >= self.ctx.config.push.quarantine_after \
            else FAILED
        capture.save_entry(conn, entry, last_error=f"{outcome.code}: {outcome.message}"[:2000])
        self.count(sf_object, "failed")
        log.warning("push %s row %s: %s %s%s", self.table, entry.row_id, outcome.code,
                    outcome.message, " (quarantined)" if entry.status == QUARANTINED else "")

    def wait(self, conn, entry: OutboxEntry, reason: str) -> None:
        """Transient: stays pending for the next cycle."""
        capture.save_entry(conn, entry, last_error=reason[:2000])

    def write_back(self, conn, row_id: int, values: dict) -> None:
        """A sync write (stamped, so not captured)."""
        if values:
            table = self.ctx.tables[self.table]
            conn.execute(table.update().where(table.c.id == row_id).values(
                **values, sfsync_updated_at=fresh_stamp()))

    def send(self, method: str, sobject: str, items: list[tuple[int, object]]
             ) -> dict[int, Outcome]:
        """Write, unless Salesforce's request limit stopped this cycle's push already."""
        if self.stopped or not items:
            return {}
        try:
            return write_with_retries(self.client, method, sobject, items,
                                      retries=self.ctx.config.push.transient_retries,
                                      bulk_threshold=self.ctx.config.push.bulk_threshold)
        except RequestLimitExceeded as exc:
            log.warning("push stopped: %s; everything not sent stays queued", exc)
            self.stopped = "REQUEST_LIMIT_EXCEEDED"
            return exc.outcomes  # what got through before the limit
        except WriteInterrupted as exc:  # settled first, then raised: the task retries
            self.interrupted = exc
            return exc.outcomes

    def finish(self) -> dict:
        calls = 0 if self.calls_before is None else self.ctx.client.api_calls - self.calls_before
        from include.sfsync.pipeline import add_api_calls

        add_api_calls(self.ctx.engine, self.ctx.books, self.run_key, calls)
        with self.ctx.engine.begin() as conn:
            for sf_object, counts in self.counts.items():
                _add_counts(conn, self.ctx.books["count"], self.run_key, sf_object, counts)
            pending = conn.execute(sa.select(sa.func.count()).select_from(capture.outbox_t)
                                   .where(capture.outbox_t.c.table_name == self.table,
                                          capture.outbox_t.c.status == PENDING)).scalar()
        return {"table": self.table, "api_calls": calls, "stopped": self.stopped,
                "pending": pending,
                "counts": {o: {k: int(c[k]) for k in (*L.COUNT_KEYS, *c)}
                           for o, c in self.counts.items()}}


def _add_counts(conn, count_t: sa.Table, run_key: str, sf_object: str, counts: Counter) -> None:
    key = (count_t.c.run_key == run_key, count_t.c.sf_object == sf_object,
           count_t.c.operation == "push")
    if conn.execute(sa.select(count_t.c.run_key).where(*key)).first() is None:
        L.record_counts(conn, count_t, run_key, sf_object, "push", dict(counts))
        return
    conn.execute(count_t.update().where(*key).values(
        **{k: count_t.c[k] + int(counts[k]) for k in L.COUNT_KEYS}, recorded_at=L.utcnow()))


def _start(ctx, run_key: str, table: str, *, row_ids: set[int] | None = None
           ) -> tuple[Push, list[OutboxEntry], dict[int, object]]:
    """Fold the captured changes; the pending entries (of ``row_ids``) and their rows."""
    push = Push(ctx, run_key, table)
    t = ctx.tables[table]
    with ctx.engine.begin() as conn:
        capture.fold(conn, [table])
        entries = [e for e in capture.outbox_entries(conn, table, row_ids, status=PENDING
                                                     ).values()]
        rows = {}
        ids = sorted(e.row_id for e in entries if e.op == "upsert")
        for i in range(0, len(ids), 500):
            for row in conn.execute(sa.select(t).where(t.c.id.in_(ids[i:i + 500]))):
                rows[row.id] = row
    if entries:
        push.calls_before = ctx.salesforce().api_calls
    return push, entries, rows


# --- people ---------------------------------------------------------------------------------

def create_people(run_key: str, ctx, *, person_ids: set[int] | None = None) -> dict:
    """Dedupe on write: people not yet in Salesforce are linked to the lead or contact with
    their e-mail, or created as leads when nothing matches (of ``person_ids`` only, for
    "sync now"). Linked people's other changes are left for :func:`push_people`."""
    push, entries, rows = _start(ctx, run_key, "person", row_ids=person_ids)
    new = [e for e in entries if e.op == "upsert" and e.row_id in rows
           and not (rows[e.row_id].sfdc_lead_id or rows[e.row_id].sfdc_contact_id)]
    if new:
        try:
            _dedupe_and_create(push, new, rows)
        except RequestLimitExceeded:  # the dedupe query was refused: all stays queued
            push.stopped = "REQUEST_LIMIT_EXCEEDED"
    return push.finish()


def push_people(run_key: str, ctx, *, person_ids: set[int] | None = None) -> dict:
    """Push the pending changes of people already in Salesforce (of ``person_ids`` only)."""
    push, entries, rows = _start(ctx, run_key, "person", row_ids=person_ids)
    updates = []
    with ctx.engine.begin() as conn:
        for entry in entries:
            row = rows.get(entry.row_id)
            if entry.op == "delete" or row is None:
                capture.drop_entry(conn, entry)  # person deletes stay local (module docstring)
                push.count("Lead", "skipped")
            elif row.sfdc_lead_id or row.sfdc_contact_id:
                updates.append(entry)
    _update_people(push, updates, rows)
    return push.finish()


def repull_people(ctx, person_ids: set[int]) -> int:
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
        for quoted in _in_lists(values):
            soqls.append(f"SELECT {', '.join(obj.soql_fields)} FROM {sobject} "
                         f"WHERE Id IN ({quoted})")
            objects.append(obj)
    if not soqls:
        return 0
    loaded = 0
    results = _query_all(ctx.salesforce(), soqls)
    with ctx.engine.begin() as conn:
        for obj, records in zip(objects, results, strict=True):
            L.Loader(conn, L.loader_tables(ctx.tables, ctx.books), ctx.catalog, obj,
                     L.Counts()).load(records)
            loaded += len(records)
    return loaded


def _reload(ctx, table: str, ids: list[int]) -> dict[int, object]:
    t = ctx.tables[table]
    out = {}
    with ctx.engine.connect() as conn:
        for i in range(0, len(ids), 500):
            for row in conn.execute(sa.select(t).where(t.c.id.in_(ids[i:i + 500]))):
                out[row.id] = row
    return out


def _soql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _in_lists(values) -> list[str]:
    """``values`` as SOQL IN lists (``'a','b'``), each short enough for a query URL."""
    lists, current, size = [], [], 0
    for value in values:
        quoted = _soql_string(value)
        cost = len(quote(quoted, safe="")) + 3  # and the encoded comma
        if current and size + cost > IN_LIST_BUDGET:
            lists.append(",".join(current))
            current, size = [], 0
        current.append(quoted)
        size += cost
    if current:
        lists.append(",".join(current))
    return lists


def _query_all(client: SalesforceClient, soqls: list[str]) -> list[list[dict]]:
    """Run queries five per /composite call; every page of each."""
    try:
        results = client.composite([{"url": client.query_url(q, include_deleted=False)}
                                    for q in soqls])
    except Exception as exc:  # simple-salesforce raises one class per HTTP status
        if limit_hit(exc):
            raise RequestLimitExceeded(str(exc)) from exc
        raise
    out = []
    for soql, result in zip(soqls, results, strict=True):
        if result["status"] != 200:
            raise SalesforceCallError(f"query {soql[:80]}", result)
        page = result["body"]
        records = list(page["records"])
        while not page.get("done", True):
            page = client.query_more(page["nextRecordsUrl"])
            records += page["records"]
        out.append(records)
    return out


def _email_key(value) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


def _dedupe_and_create(push: Push, entries: list[OutboxEntry], rows: dict) -> list[OutboxEntry]:
    """Link new people to existing leads or contacts with their e-mail; create the rest as
    leads. Returns the linked entries (their other changes are pushed as updates)."""
    ctx = push.ctx
    person = ctx.tables["person"]
    lead, contact = ctx.catalog.object("Lead"), ctx.catalog.object("Contact")
    emails = sorted({k for e in entries if (k := _email_key(rows[e.row_id].email))})
    matches: dict[str, tuple[str, dict]] = {}  # email -> (object, record)
    if emails:
        soqls = []
        for quoted in _in_lists(emails):
            soqls.append(f"SELECT {', '.join(lead.soql_fields)} FROM Lead "
                         f"WHERE IsConverted = false AND Email IN ({quoted})")
            soqls.append(f"SELECT {', '.join(contact.soql_fields)} FROM Contact "
                         f"WHERE Email IN ({quoted})")
        for soql, records in zip(soqls, _query_all(push.client, soqls), strict=True):
            sobject = "Lead" if " FROM Lead " in soql else "Contact"
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
        taken = L.resolve_people(conn, person, {rec["Id"] for _o, rec in matches.values()})
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
                if skip_reason(ctx.catalog.object(sobject), rec):
                    push.fail(conn, entry, sobject, Outcome.failed(
                        "FILTERED", f"{sobject} {rec['Id']} has the e-mail {row.email} but a "
                        "sync filter excludes it: the sync neither links nor duplicates it",
                        ["Email"]), sfdc_id=rec["Id"], record={"email": row.email})
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
    _apply(push, "Lead", "POST", creates, create_entries, rows,
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
    capture.save_entry(conn, entry)
    loader = L.Loader(conn, L.loader_tables(ctx.tables, ctx.books), ctx.catalog,
                      ctx.catalog.object(sobject), L.Counts(), run_key=push.run_key)
    loader.load([rec])


def _update_people(push: Push, entries: list[OutboxEntry], rows: dict) -> None:
    ctx = push.ctx
    items: dict[str, list[tuple[int, dict]]] = {"Lead": [], "Contact": []}
    pending: dict[int, tuple[OutboxEntry, dict]] = {}  # row id -> (entry, rewrite)
    with ctx.engine.begin() as conn:
        current = capture.outbox_entries(conn, "person", [e.row_id for e in entries])
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
                capture.drop_entry(conn, entry)  # nothing Salesforce does not have already
                continue
            items[sobject].append((entry.row_id, {"Id": sfdc_id, **body}))
            pending[entry.row_id] = (entry, rewrite)
    for sobject, batch in items.items():
        # contacts of one account travel together: fewer UNABLE_TO_LOCK_ROW
        batch.sort(key=lambda item: rows[item[0]]._mapping.get("sfdc_account_id") or "")
        _apply(push, sobject, "PATCH", batch, pending, rows)


# --- campaigns and campaign members ------------------------------------------------------------

def push_campaigns(run_key: str, ctx) -> dict:
    push, entries, rows = _start(ctx, run_key, "campaign")
    obj = ctx.catalog.object("Campaign")
    creates, updates, prepared = [], [], {}
    with ctx.engine.begin() as conn:
        for entry in entries:
            row = rows.get(entry.row_id)
            if entry.op == "delete" or row is None:
                capture.drop_entry(conn, entry)  # campaign deletes stay local
                push.count("Campaign", "skipped")
                continue
            create = not row.sfdc_id
            columns = sorted(push.fields_by_column(obj, create=True)) if create else entry.columns
            try:
                body, rewrite = push.payload(obj, row, columns, entry.base, create=create)
            except ValueError as exc:
                push.fail(conn, entry, "Campaign", Outcome.failed("INVALID_VALUE", str(exc)),
                          sfdc_id=row.sfdc_id, record=None)
                continue
            if not body and not create:
                capture.drop_entry(conn, entry)
                continue
            (creates if create else updates).append(
                (entry.row_id, body if create else {"Id": row.sfdc_id, **body}))
            prepared[entry.row_id] = (entry, rewrite)
    _apply(push, "Campaign", "POST", creates, prepared, rows)
    _apply(push, "Campaign", "PATCH", updates, prepared, rows)
    return push.finish()


def _apply(push: Push, sobject: str, method: str, items: list[tuple[int, object]],
           prepared: dict, rows: dict, *, written=None) -> None:
    """Send ``items`` and settle their outbox entries; ``written(row_id, outcome)`` gives the
    columns to write back after a success (a created record's ids)."""
    outcomes = push.send(method, sobject, items)
    key = {"POST": "new", "PATCH": "updated", "DELETE": "deleted"}[method]
    with push.ctx.engine.begin() as conn:
        for row_id, body in items:
            entry, rewrite = prepared[row_id]
            outcome = outcomes.get(row_id)
            if outcome is None:
                continue
            already_gone = method == "DELETE" and outcome.code in {"ENTITY_IS_DELETED", "NOT_FOUND"}
            if outcome.ok or already_gone:
                values = dict(rewrite)
                if method == "POST":
                    values["sfdc_id"] = outcome.id
                if written is not None:
                    values.update(written(row_id, outcome))
                if method != "DELETE" and not _write_back_created(push, conn, entry, sobject,
                                                                  row_id, values, outcome):
                    continue
                capture.drop_entry(conn, entry)
                push.count(sobject, key)
            elif outcome.transient or outcome.code in RETRY_AFTER_PULL:
                push.wait(conn, entry, f"{outcome.code}: {outcome.message}")
            else:
                sfdc_id = body if isinstance(body, str) else (body.get("Id") or
                                                              getattr(rows.get(row_id), "sfdc_id",
                                                                      None))
                push.fail(conn, entry, sobject, outcome, sfdc_id=sfdc_id,
                          record=body if isinstance(body, dict) else None)
    if push.interrupted is not None:
        raise push.interrupted


def _write_back_created(push: Push, conn, entry: OutboxEntry, sobject: str, row_id: int,
                        values: dict, outcome: Outcome) -> bool:
    """Write back a success; a Salesforce id another row took meanwhile (a concurrent pull
    read the new record first) is a data error on this row, not a rolled-back batch."""
    try:
        with conn.begin_nested():
            push.write_back(conn, row_id, values)
        return True
    except sa.exc.IntegrityError:
        push.fail(conn, entry, sobject, Outcome.failed(
            "DUPLICATE_VALUE", f"{sobject} {outcome.id} written for row {row_id} is already "
            f"held by another {push.table} row (read by a concurrent pull): merge the two rows"),
            sfdc_id=outcome.id, record=None)
        return False


def push_campaign_members(run_key: str, ctx, *, person_ids: set[int] | None = None) -> dict:
    """Adds, status changes and removals of campaign members (of ``person_ids`` only, for
    "sync now"). A member's status must be one of its campaign's member statuses."""
    push, entries, rows = _start(ctx, run_key, "campaign_member")
    if person_ids is not None:
        entries = [e for e in entries if e.op == "delete" or
                   getattr(rows.get(e.row_id), "person_id", None) in person_ids]
    if not entries:
        return push.finish()
    ctx = push.ctx
    obj = ctx.catalog.object("CampaignMember")
    person = ctx.tables["person"]
    person_rows = {}
    wanted = sorted({r.person_id for r in rows.values() if r.person_id is not None})
    pending_people = set()
    with ctx.engine.connect() as conn:
        for i in range(0, len(wanted), 500):
            for p in conn.execute(sa.select(person).where(person.c.id.in_(wanted[i:i + 500]))):
                person_rows[p.id] = p
        pending_people = set(capture.outbox_entries(conn, "person", wanted, status=PENDING))

    def who(row) -> tuple[str, str] | None:
        """(LeadId or ContactId, id) of the member's person: a contact if it has one."""
        for source in (person_rows.get(row.person_id), row):
            if source is not None and source.sfdc_contact_id:
                return "ContactId", source.sfdc_contact_id
            if source is not None and source.sfdc_lead_id:
                return "LeadId", source.sfdc_lead_id
        return None

    live = [e for e in entries if e.op == "upsert" and e.row_id in rows]
    try:
        statuses, existing = _member_lookups(push, live, rows, who)
    except RequestLimitExceeded:  # the lookups were refused: all stays queued
        push.stopped = "REQUEST_LIMIT_EXCEEDED"
        return push.finish()
    creates, updates, deletes, prepared = [], [], [], {}
    with ctx.engine.begin() as conn:
        for entry in entries:
            row = rows.get(entry.row_id)
            if entry.op == "delete":
                if entry.sfdc_id:
                    deletes.append((entry.row_id, entry.sfdc_id))
                    prepared[entry.row_id] = (entry, {})
                else:
                    capture.drop_entry(conn, entry)
                continue
            if row is None:
                capture.drop_entry(conn, entry)
                continue
            if row.sfdc_is_deleted:
                capture.drop_entry(conn, entry)  # removed in Salesforce: the pull decided
                push.count("CampaignMember", "skipped")
                continue
            campaign = row.sfdc_campaign_id
            target = who(row)
            status = row._mapping.get("status")
            problem = None
            if not campaign:
                problem = ("REQUIRED_FIELD_MISSING", "sfdc_campaign_id is empty: set it to the "
                           "Salesforce id of the member's campaign", ["CampaignId"])
            elif target is None:
                if row.person_id in pending_people:
                    push.wait(conn, entry, f"waiting for person {row.person_id} to reach "
                              "Salesforce")
                    continue
                problem = ("REQUIRED_FIELD_MISSING", f"person {row.person_id} is not in "
                           "Salesforce (see its outbox entry and sfsync_error)",
                           ["LeadId", "ContactId"])
            elif status and "status" in entry.columns + (["status"] if not row.sfdc_id else []):
                valid = statuses.get(campaign[:15], [])
                match = next((s for s in valid if s.lower() == status.strip().lower()), None)
                if match is None:
                    problem = ("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                               f"status {status!r} is not a member status of campaign "
                               f"{campaign}; valid: {', '.join(valid) or '(none)'}", ["Status"])
                else:
                    status = match
            if problem:
                push.fail(conn, entry, "CampaignMember", Outcome.failed(*problem),
                          sfdc_id=row.sfdc_id, record={"status": status, "campaign": campaign})
                continue
            rewrite = {"status": status} if status != row._mapping.get("status") else {}
            sfdc_id = row.sfdc_id or existing.get((campaign[:15], target[1][:15]), (None,))[0]
            if not row.sfdc_id and sfdc_id:  # already a member in Salesforce: link
                have = existing[(campaign[:15], target[1][:15])][1]
                t = ctx.tables["campaign_member"]
                twin = conn.execute(sa.select(t.c.id).where(t.c.sfdc_id == sfdc_id)).scalar()
                if twin is not None:  # ... and in this database, as another row
                    push.fail(conn, entry, "CampaignMember", Outcome.failed(
                        "DUPLICATE_VALUE", f"already a member of campaign {campaign}: row "
                        f"{twin} (CampaignMember {sfdc_id}); change that row or delete this one"),
                        sfdc_id=sfdc_id, record={"status": status, "campaign": campaign})
                    continue
                push.write_back(conn, row.id, {"sfdc_id": sfdc_id, **_who_columns(target),
                                               **rewrite})
                push.count("CampaignMember", "linked")
                if not status or status == have:
                    capture.drop_entry(conn, entry)
                    continue
                updates.append((row.id, {"Id": sfdc_id, "Status": status}))
                prepared[row.id] = (entry, {})
                continue
            if not row.sfdc_id:
                body = {"CampaignId": campaign, target[0]: target[1]}
                if status:
                    body["Status"] = status
                creates.append((row.id, body))
                prepared[row.id] = (entry, {**rewrite, **_who_columns(target)})
                continue
            body, _rw = push.payload(obj, row, entry.columns, entry.base, create=False)
            if "Status" in body:
                body["Status"] = status
            if not body:
                capture.drop_entry(conn, entry)
                continue
            updates.append((row.id, {"Id": row.sfdc_id, **body}))
            prepared[row.id] = (entry, rewrite)
    _apply(push, "CampaignMember", "POST", creates, prepared, rows)
    _apply(push, "CampaignMember", "PATCH", updates, prepared, rows)
    _apply(push, "CampaignMember", "DELETE", deletes, prepared, rows)
    return push.finish()


def _who_columns(target: tuple[str, str]) -> dict:
    return {"sfdc_contact_id" if target[0] == "ContactId" else "sfdc_lead_id": target[1]}


def _member_lookups(push: Push, entries: list[OutboxEntry], rows: dict, who
                    ) -> tuple[dict[str, list[str]], dict[tuple[str, str], tuple[str, str]]]:
    """The member statuses of the campaigns involved, and the memberships that already exist
    in Salesforce for members created locally (keys: 15-character ids)."""
    campaigns, people = set(), set()
    for entry in entries:
        row = rows[entry.row_id]
        if row.sfdc_campaign_id and ("status" in entry.columns or not row.sfdc_id):
            campaigns.add(row.sfdc_campaign_id)
            target = who(row)
            if target and not row.sfdc_id:
                people.add(target[1])
    if not campaigns:
        return {}, {}
    soqls = []
    for ids in _in_lists(sorted(campaigns)):
        soqls.append("SELECT CampaignId, Label FROM CampaignMemberStatus "
                     f"WHERE CampaignId IN ({ids}) ORDER BY SortOrder")
    for ids in _in_lists(sorted(people)):
        soqls.append("SELECT Id, CampaignId, LeadId, ContactId, Status FROM CampaignMember "
                     f"WHERE LeadId IN ({ids}) OR ContactId IN ({ids})")
    statuses: dict[str, list[str]] = {}
    existing: dict[tuple[str, str], tuple[str, str]] = {}
    for soql, records in zip(soqls, _query_all(push.client, soqls), strict=True):
        for rec in records:
            if "FROM CampaignMemberStatus" in soql:
                statuses.setdefault(rec["CampaignId"][:15], []).append(rec["Label"])
            else:
                for ref in (rec.get("LeadId"), rec.get("ContactId")):
                    if ref:
                        existing[(rec["CampaignId"][:15], ref[:15])] = (rec["Id"], rec["Status"])
    return statuses, existing

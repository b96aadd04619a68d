"""What every push step shares: folding the captured changes, the pending outbox entries and
their rows, the payload of a record (only writable fields that differ from what Salesforce
has, standardised), sending with retries, and settling each record's outcome.

A record that failed for a data or permission reason gets an ``sfsync_error`` row, its outbox
entry turns ``failed`` (tried again once the row changes again) and, after
``push.quarantine_after`` failures, ``quarantined`` (see ``admin outbox``). Outbox entries that
succeed are removed in the same transaction as the ids written back: a retried task resumes
where the last one stopped and never sends a record twice.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace

import sqlalchemy as sa
from more_itertools import chunked

from include.sfsync.catalog import CREATE_CLOCK_SKEW, FieldMap, ObjectCatalog
from include.sfsync.context import SyncContext
from include.sfsync.errors import RequestLimitExceeded, WriteInterrupted
from include.sfsync.salesforce import soql
from include.sfsync.salesforce.client import SalesforceClient
from include.sfsync.salesforce.reads import query_all
from include.sfsync.salesforce.writes import Outcome, write_with_retries
from include.sfsync.standardize import Standardizer
from include.sfsync.store import outbox
from include.sfsync.store.ledger import COUNT_KEYS, add_api_calls, add_counts, record_error
from include.sfsync.store.outbox import FAILED, PENDING, QUARANTINED, OutboxEntry
from include.sfsync.values import same, sf_value

log = logging.getLogger(__name__)
# Errors the next pull resolves (the lead became a contact): the change waits, it did not fail.
RETRY_AFTER_PULL = frozenset({"CANNOT_UPDATE_CONVERTED_LEAD"})


@dataclass
class Push:
    """One push step's state: the context, its counts and the API calls it made."""

    ctx: SyncContext
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
            if col in base and same(local, outbox.stored_value(table.c[col], base[col])):
                continue  # changed and changed back, or already in Salesforce
            value = self.standardizer.standardize(obj.sf_object, f.sf_field, local)
            if value != local:
                rewrite[col] = value
            body[f.sf_field] = sf_value(f.sf_type, value)
        return body, rewrite

    # --- outcomes -------------------------------------------------------------------------

    def fail(self, conn, entry: OutboxEntry, sf_object: str, outcome: Outcome, *,
             sfdc_id: str | None, record: dict | None) -> None:
        """A data or permission error: logged, the entry failed (or quarantined). The
        ``sfsync_error`` row names the local row (a new record has no Salesforce id yet)."""
        record_error(conn, self.run_key, sf_object, replace(
            outcome, message=f"{self.table} row {entry.row_id}: {outcome.message}"),
            sfdc_id=sfdc_id, record={**(record or {}), "table": self.table,
                                     "row_id": entry.row_id})
        entry.attempts += 1
        entry.status = QUARANTINED if entry.attempts >= self.ctx.config.push.quarantine_after \
            else FAILED
        outbox.save_entry(conn, entry, last_error=f"{outcome.code}: {outcome.message}"[:2000])
        self.count(sf_object, "failed")
        log.warning("push %s row %s: %s %s%s", self.table, entry.row_id, outcome.code,
                    outcome.message, " (quarantined)" if entry.status == QUARANTINED else "")

    def skip(self, conn, entry: OutboxEntry, sf_object: str, reason: str) -> None:
        """Not for Salesforce (a sync filter keeps the record out): counted Skipped, the entry
        done, no record error; the row's next change is weighed again."""
        outbox.drop_entry(conn, entry)
        self.count(sf_object, "skipped")
        log.info("push %s row %s skipped: %s", self.table, entry.row_id, reason)

    def wait(self, conn, entry: OutboxEntry, reason: str) -> None:
        """Transient: stays pending for the next cycle."""
        outbox.save_entry(conn, entry, last_error=reason[:2000])

    def write_back(self, conn, row_id: int, values: dict) -> None:
        """A sync write (stamped by the table, so not captured)."""
        if values:
            table = self.ctx.tables[self.table]
            conn.execute(table.update().where(table.c.id == row_id).values(**values))

    def send(self, method: str, sobject: str, items: list[tuple[int, object]], *,
             upsert_on: str | None = None) -> dict[int, Outcome]:
        """Write, unless Salesforce's request limit stopped this cycle's push already."""
        if self.stopped or not items:
            return {}
        try:
            return write_with_retries(self.client, method, sobject, items,
                                      retries=self.ctx.config.push.transient_retries,
                                      bulk_threshold=self.ctx.config.push.bulk_threshold,
                                      upsert_on=upsert_on)
        except RequestLimitExceeded as exc:
            log.warning("push stopped: %s; everything not sent stays queued", exc)
            self.stopped = "REQUEST_LIMIT_EXCEEDED"
            return exc.outcomes  # what got through before the limit
        except WriteInterrupted as exc:  # settled first, then raised: the task retries
            self.interrupted = exc
            return exc.outcomes

    def finish(self) -> dict:
        calls = 0 if self.calls_before is None else self.ctx.client.api_calls - self.calls_before
        add_api_calls(self.ctx.engine, self.run_key, calls,
                      self.ctx.client.api_usage if self.ctx.client else None)
        with self.ctx.engine.begin() as conn:
            for sf_object, counts in self.counts.items():
                add_counts(conn, self.run_key, sf_object, "push", counts)
            pending = outbox.count_pending(conn, self.table)
        return {"table": self.table, "api_calls": calls, "stopped": self.stopped,
                "pending": pending,
                "counts": {o: {k: int(c[k]) for k in (*COUNT_KEYS, *c)}
                           for o, c in self.counts.items()}}


def start(ctx: SyncContext, run_key: str, table: str, *, row_ids: set[int] | None = None
          ) -> tuple[Push, list[OutboxEntry], dict[int, object]]:
    """Fold the captured changes; the pending entries (of ``row_ids``) and their rows."""
    push = Push(ctx, run_key, table)
    t = ctx.tables[table]
    with ctx.engine.begin() as conn:
        outbox.fold(conn, [table])
        entries = list(outbox.outbox_entries(conn, table, row_ids, status=PENDING).values())
        rows = {}
        for part in chunked(sorted(e.row_id for e in entries if e.op == "upsert"), 500):
            for row in conn.execute(sa.select(t).where(t.c.id.in_(part))):
                rows[row.id] = row
    if entries:
        push.calls_before = ctx.salesforce().api_calls
    return push, entries, rows


def create(push: Push, sobject: str, items: list[tuple[int, dict]], prepared: dict,
           rows: dict, *, written=None) -> None:
    """Create ``items`` (row id, fields) so that no crash makes a record twice.

    Each create is journaled in the outbox (its key and fields) and committed before it is
    sent; it stays "in doubt" until its outcome is recorded. With the object's create key
    field (``push.create_key_field``) every create is an upsert on the row's key: sent again,
    it finds the record the lost call made. Without it, creates in doubt are first looked for
    in Salesforce (records created since, carrying what was sent) and linked when found. The
    pull recognises such records too (:mod:`include.sfsync.pull.load`), so they never come back
    as new rows.
    """
    if push.stopped or not items:
        return
    ctx = push.ctx
    obj = ctx.catalog.object(sobject)
    with ctx.engine.begin() as conn:
        doubts = {e.row_id: e for e in outbox.creates_in_doubt(conn, push.table)}
    found = {} if obj.create_key else _find_created(
        push, obj, [doubts[row_id] for row_id, _body in items if row_id in doubts])
    journal = {}
    for row_id, body in items:
        if row_id not in found:
            entry = doubts.get(row_id) or prepared[row_id][0]
            key = entry.create_key or outbox.create_key(push.table, row_id)
            journal[row_id] = (key, {**body, obj.create_key: key} if obj.create_key else body)
    with ctx.engine.begin() as conn:
        outbox.journal_creates(conn, push.table, journal)
    apply(push, sobject, "POST", [(row_id, journal.get(row_id, (None, body))[1])
                                  for row_id, body in items],
          prepared, rows, written=written, known=found, upsert_on=obj.create_key)


# Where a record created moments ago is looked for when the org has no create key field: the
# required name field narrows the query (members are matched by campaign and person instead).
_LOOKUP_BY = {"Lead": "LastName", "Contact": "LastName", "Campaign": "Name"}


def _find_created(push: Push, obj: ObjectCatalog, doubts: list[OutboxEntry]
                  ) -> dict[int, Outcome]:
    """Records a lost create made: created since the first doubt was sent, carrying every
    field it sent (one query per 4,000 names). Returns row id -> success outcome."""
    by = _LOOKUP_BY.get(obj.sf_object)
    doubts = [e for e in doubts if e.create_body and by and e.create_body.get(by)]
    if not doubts:
        return {}
    since = min(e.create_sent_at for e in doubts) - CREATE_CLOCK_SKEW
    fields = sorted(({"Id", "CreatedDate"} | {f for e in doubts for f in e.create_body})
                    & set(obj.describe_fields))
    queries = [soql.select(obj.sf_object, fields, conditions=[
        soql.where("CreatedDate", ">=", since), soql.one_of(by, names)])
        for names in soql.in_lists(sorted({e.create_body[by] for e in doubts}))]
    records = [r for part in query_all(push.client, queries) for r in part]
    found: dict[int, Outcome] = {}
    for entry in doubts:
        rec = next((r for r in records if obj.carries(entry.create_body, r, entry.create_sent_at)),
                   None)
        if rec is not None:
            records.remove(rec)
            found[entry.row_id] = Outcome(True, rec["Id"])
            log.info("push %s row %s: %s %s was created by an earlier attempt: linked",
                     push.table, entry.row_id, obj.sf_object, rec["Id"])
    return found


def apply(push: Push, sobject: str, method: str, items: list[tuple[int, object]],
          prepared: dict, rows: dict, *, written=None, known: dict | None = None,
          upsert_on: str | None = None) -> None:
    """Send ``items`` (but those with a ``known`` outcome) and settle their outbox entries;
    ``written(row_id, outcome)`` gives the columns to write back after a success (a created
    record's ids). Creates go through :func:`create`."""
    known = known or {}
    outcomes = {**push.send(method, sobject, [i for i in items if i[0] not in known],
                            upsert_on=upsert_on), **known}
    key = {"POST": "new", "PATCH": "updated", "DELETE": "deleted"}[method]
    with push.ctx.engine.begin() as conn:
        if method == "POST":  # unsent (the limit) or answered: no longer in doubt
            outbox.settle_creates(conn, push.table, [
                row_id for row_id, _body in items
                if push.interrupted is None or row_id in outcomes])
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
                outbox.drop_entry(conn, entry)
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
            "DUPLICATE_VALUE", f"{sobject} {outcome.id} written for it is already held by "
            f"another {push.table} row (read by a concurrent pull): merge the two rows"),
            sfdc_id=outcome.id, record=None)
        return False

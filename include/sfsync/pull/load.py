"""Load staged Salesforce records into the marketing database.

Rules, for every object:

* A row is written only if the staged version is newer (``SystemModstamp``) than the stored one:
  loads are idempotent and a backfill may run beside the incremental cycles.
* ``IsDeleted`` sets ``sfdc_is_deleted`` (rows are kept, flagged); an undelete clears it; ids the
  deleted endpoint reports that ``queryAll`` no longer returns (purged, hard deleted) are
  flagged too.
* The object's cursor advances in the same transaction as the rows it covers.

People: leads and contacts land in one ``person`` row per human. A converted lead's row becomes
the contact's (``sfdc_type='Contact'``); the contact never creates a second person. A merge in
Salesforce (``MasterRecordId`` on the deleted loser) merges the losing person into the survivor:
campaign memberships, activities, contact roles and custom rows move over, and the loser's
values fill the survivor's blanks.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from more_itertools import chunked
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from include.sfsync.catalog import PERSON_COPIES, Catalog, ObjectCatalog
from include.sfsync.errors import NotPreparedError
from include.sfsync.objects import PEOPLE
from include.sfsync.pull.conflicts import Resolver
from include.sfsync.pull.people import link_people, merge_people, resolve_people
from include.sfsync.standardize import Standardizer
from include.sfsync.store import outbox
from include.sfsync.store.capture import (
    Tombstone,
    buried,
    forget_tombstones,
    has_rows_record,
    rebury,
    record_rows,
    tombstones,
)
from include.sfsync.store.engine import lock_table, utcnow
from include.sfsync.store.ledger import COUNT_KEYS, record_counts, recorded_counts
from include.sfsync.store.tables import BOOKS
from include.sfsync.values import parse_sf_datetime, parse_value, same

log = logging.getLogger(__name__)
_PERSON_KEYS = ("sfdc_lead_id", "sfdc_contact_id", "sfdc_converted_contact_id")


@dataclass
class Counts:
    values: Counter = field(default_factory=Counter)

    def add(self, key: str, n: int = 1) -> None:
        self.values[key] += n

    def as_dict(self) -> dict[str, int]:
        return {k: int(self.values[k]) for k in COUNT_KEYS}


def _insert(conn: Connection):
    """The dialect's INSERT, which has ON CONFLICT DO UPDATE."""
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


class Loader:
    """Loads batches of one object's staged records inside a caller's transaction."""

    def __init__(self, conn: Connection, tables: dict[str, sa.Table], catalog: Catalog,
                 obj: ObjectCatalog, counts: Counts, *, max_stamp: datetime | None = None,
                 run_key: str | None = None):
        self.conn = conn
        self.tables = tables
        self.catalog = catalog
        self.obj = obj
        self.table = tables[obj.type.table]
        lock_table(conn, self.table.name)  # one loader per table at a time, on any worker
        self.counts = counts
        self.blocked = set(catalog.config.block_updates.get(obj.type.table, []))
        self.max_stamp = max_stamp
        person_cols = catalog.tables.get("person", {})
        self.sf_columns = set(person_cols)  # person columns whose values come from Salesforce
        self.lead_only = {c for c, col in person_cols.items()
                          if all(s.startswith("Lead.") for s in col.sources)}
        self.audit = _STAMPS | {f.column for f in obj.synced if f.sf_field in AUDIT_FIELDS}
        # Two-way tables: local edits not yet pushed are weighed against Salesforce's values.
        self.resolver = Resolver(conn, self.table, catalog, BOOKS["conflict"], run_key,
                                 self.blocked) if obj.type.two_way else None

    # --- values ---------------------------------------------------------------------------

    def _values(self, rec: dict) -> dict:
        out = {}
        for f in self.obj.synced:
            if f.sf_field in rec and f.column in self.table.c:
                out[f.column] = parse_value(f.sf_type, rec[f.sf_field])
        return out

    def _seen(self, rec: dict) -> datetime:
        stamp = parse_sf_datetime(rec["SystemModstamp"])
        if self.max_stamp is None or stamp > self.max_stamp:
            self.max_stamp = stamp
        return stamp

    # --- generic objects ------------------------------------------------------------------

    def load(self, records: list[dict]) -> None:
        # merge survivors: their versions in this batch are changes (the losers' data moved)
        self._masters = {r["MasterRecordId"] for r in records if r.get("MasterRecordId")}
        if self.obj.type.two_way and self.obj.sf_object != "Contact":  # the push creates leads
            self._claim_lost_creates(records)
        if self.obj.sf_object in PEOPLE:
            self._load_people(records)
        else:
            self._load_rows(records)

    def _load_rows(self, records: list[dict]) -> None:
        t = self.table
        ids = [r["Id"] for r in records]
        query = sa.select(t).where(t.c.sfdc_id.in_(ids))
        if self.resolver is not None:
            query = self.resolver.lock(query)
        existing = {r.sfdc_id: r for r in self.conn.execute(query)} if ids else {}
        if self.resolver is not None:
            self.resolver.refresh()
        person_ids = self._person_ids(records) if "person_id" in t.c else {}
        self._graves = self._tombstones([i for i in ids if i not in existing])
        rows, undeleted = [], []
        for rec in records:
            stamp = self._seen(rec)
            before = existing.get(rec["Id"])
            if before is None and rec["Id"] in self._graves and self._stays_buried(rec, stamp):
                continue  # its row was deleted here; Salesforce did not change it since
            if before is not None and before.sfdc_system_modstamp is not None \
                    and before.sfdc_system_modstamp >= stamp:
                continue  # this version (or a newer one) is already stored
            row = self._values(rec)
            row.update(sfdc_id=rec["Id"], sfdc_system_modstamp=stamp,
                       sfdc_is_deleted=bool(rec.get("IsDeleted")))
            if "sfdc_object" in t.c:
                row["sfdc_object"] = self.obj.sf_object
            if "person_id" in t.c:
                person = person_ids.get(rec["Id"])
                row["person_id"] = person if person is not None else (
                    before.person_id if before is not None else None)
            if before is not None and self.resolver is not None:
                self.resolver.resolve(self.obj.sf_object, before, row)
            if before is not None:
                for col in self.blocked:
                    if getattr(before, col, None) is not None:
                        row[col] = getattr(before, col)
            self._count_change(before, row)
            rows.append(row)
            if before is not None and before.sfdc_is_deleted and not row["sfdc_is_deleted"]:
                undeleted.append(before.id)
        self._upsert(rows)
        outbox.retry_undeleted(self.conn, t.name, undeleted)
        self._forget_revived()

    def _claim_lost_creates(self, records: list[dict]) -> None:
        """Records a create of this database made whose outcome was lost (a worker killed
        mid-call, see ``push.base.create``) belong to the row that sent them: its Salesforce id
        is written now, so they load into it instead of coming back as new rows."""
        t = self.table
        doubts = outbox.creates_in_doubt(self.conn, t.name)
        if not doubts or not records:
            return
        id_col = t.c.sfdc_lead_id if self.obj.sf_object == "Lead" else t.c.sfdc_id
        known = set()
        for part in chunked([r["Id"] for r in records], 500):
            known |= set(self.conn.execute(sa.select(id_col).where(id_col.in_(part))).scalars())
        for rec in records:
            entry = None if rec["Id"] in known else next(
                (e for e in doubts if e.create_body
                 and self.obj.carries(e.create_body, rec, e.create_sent_at)), None)
            if entry is None:
                continue
            doubts.remove(entry)
            values = {"sfdc_id": rec["Id"]}
            if self.obj.sf_object == "Lead":
                values.update(sfdc_lead_id=rec["Id"], sfdc_type="Lead")
            claimed = self.conn.execute(t.update().where(
                t.c.id == entry.row_id, t.c.sfdc_id.is_(None)).values(**values)).rowcount
            outbox.settle_creates(self.conn, t.name, [entry.row_id])
            if claimed:
                log.info("%s %s: made by %s row %s's create, whose answer was lost: linked",
                         self.obj.sf_object, rec["Id"], t.name, entry.row_id)

    def _tombstones(self, sfdc_ids) -> dict[str, Tombstone]:
        """Ids of this batch whose rows were deleted in the marketing database (two-way tables:
        only their deletes are captured); the versions they held stay deleted."""
        self._revived: set[str] = set()
        self._reburied: dict[str, tuple[datetime, dict]] = {}
        if self.resolver is None:
            return {}
        return tombstones(self.conn, self.table.name, sfdc_ids)

    def _stays_buried(self, rec: dict, stamp: datetime) -> bool:
        """Whether the record of a row deleted here stays out at this version: one not newer
        than the row held, a delete, or the echo of the sync's own push (see ``_echo``; the
        tombstone moves up to it, so a later real change still brings the row back)."""
        grave = self._graves[rec["Id"]]
        if buried(grave, stamp):
            return True
        held = grave.values
        if held is None:  # a tombstone from before the row's values were kept
            if rec.get("IsDeleted"):
                return True
        elif rec.get("IsDeleted"):
            if held.get("sfdc_id") == rec["Id"]:
                held = {**held, "sfdc_is_deleted": True}  # an undelete is a change
            self._reburied[rec["Id"]] = (stamp, held)
            return True
        elif self._echo(rec, stamp, held):
            self._reburied[rec["Id"]] = (stamp, held)
            return True
        self._revived.add(rec["Id"])
        return False

    def _echo(self, rec: dict, stamp: datetime, held: dict) -> bool:
        """A live version that differs from the row as deleted (``held``: JSON values) in no
        field the sync writes (synced, updateable), is not an undelete nor (a lead's) a
        conversion: what the sync's own push made of the record, read back."""
        t = self.table
        modified = rec.get("LastModifiedDate")
        if modified and parse_sf_datetime(modified) != stamp:
            return False  # stamped without a modification (an undelete): no push made it
        if rec["Id"] in self._masters:
            return False  # a merge's survivor
        if held.get("sfdc_id") == rec["Id"] and "sfdc_is_deleted" in t.c \
                and outbox.stored_value(t.c.sfdc_is_deleted, held.get("sfdc_is_deleted")):
            return False
        is_lead = self.obj.sf_object == "Lead"
        if is_lead and rec.get("IsConverted") and not held.get("sfdc_contact_id"):
            return False
        columns = {f.column: f for f in self.obj.synced if f.updateable and f.column in t.c}
        if is_lead and held.get("sfdc_contact_id"):  # the contact's record holds the rest
            columns = {c: f for c, f in columns.items() if c in self.lead_only}
        if not hasattr(self, "_standardizer"):
            self._standardizer = Standardizer.from_settings(self.catalog.config.push)
        values = self._values(rec)
        for column, f in columns.items():
            if column not in held or column not in values:
                continue
            was = outbox.stored_value(t.c[column], held[column])
            pushed = self._standardizer.standardize(self.obj.sf_object, f.sf_field, was)
            if not (same(was, values[column]) or same(pushed, values[column])):
                return False
        return True

    def _forget_revived(self) -> None:
        if self._revived:
            forget_tombstones(self.conn, self.table.name, self._revived)
            if self.table.name == "person":  # rows pointing at the deleted row: at the new one
                link_people(self.conn, self.tables, self.catalog, sfdc_ids=self._revived)
        if self._reburied:
            rebury(self.conn, self.table.name, self._reburied)
            self._reburied = {}

    def _count_change(self, before, row: dict) -> None:
        if before is None:
            self.counts.add("deleted" if row["sfdc_is_deleted"] else "new")
        elif row["sfdc_is_deleted"] and not before.sfdc_is_deleted:
            self.counts.add("deleted")
        elif not _unchanged(before, row, self.audit):  # else: a push's echo, or a no-op
            self.counts.add("updated")

    def _upsert(self, rows: list[dict]) -> None:
        if not rows:
            return
        t = self.table
        columns = sorted({c for r in rows for c in r})
        rows = [{c: r.get(c) for c in columns} for r in rows]
        stmt = _insert(self.conn)(t)
        updates = {c: stmt.excluded[c] for c in columns if c not in {"sfdc_id"}}
        # ON CONFLICT DO UPDATE skips the column's onupdate: take the insert's fresh stamp
        updates["sfsync_updated_at"] = stmt.excluded.sfsync_updated_at
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.sfdc_id], set_=updates,
            where=sa.or_(t.c.sfdc_system_modstamp.is_(None),
                         t.c.sfdc_system_modstamp < stmt.excluded.sfdc_system_modstamp))
        self.conn.execute(stmt, rows)

    def _person_ids(self, records: list[dict]) -> dict[str, int]:
        """record id -> person id, from the record's contact or lead reference."""
        refs: dict[str, str] = {}
        for rec in records:
            for name in ("ContactId", "WhoId", "LeadId"):
                value = rec.get(name)
                if value and value[:3] in {"003", "00Q"}:
                    refs[rec["Id"]] = value
                    break
            else:
                for f in self.obj.synced:
                    value = rec.get(f.sf_field)
                    if f.sf_type == "reference" and ({"Contact", "Lead"} & set(f.reference_to)) \
                            and value:
                        refs[rec["Id"]] = value
                        break
        found = resolve_people(self.conn, self.tables["person"], set(refs.values()))
        return {rid: found[ref] for rid, ref in refs.items() if ref in found}

    # --- people ---------------------------------------------------------------------------

    def _load_people(self, records: list[dict]) -> None:
        person = self.tables["person"]
        is_lead = self.obj.sf_object == "Lead"
        id_col = person.c.sfdc_lead_id if is_lead else person.c.sfdc_contact_id
        stamp_col = "sfdc_lead_system_modstamp" if is_lead else "sfdc_contact_system_modstamp"
        merges: list[tuple[str, str, datetime]] = []
        self._prefetch_people(records, is_lead)
        for rec in records:
            stamp = self._seen(rec)
            current = self._person_by(id_col, rec["Id"])
            if current is None and not is_lead:  # a converted lead's person becomes the contact
                if "sfdc_converted_contact_id" in person.c:
                    current = self._person_by(person.c.sfdc_converted_contact_id, rec["Id"])
            if current is None and rec["Id"] in self._graves and self._stays_buried(rec, stamp):
                continue  # its person was deleted here; Salesforce did not change it since
            if current is not None and current._mapping.get(stamp_col) is not None \
                    and current._mapping[stamp_col] >= stamp:
                continue
            deleted = bool(rec.get("IsDeleted"))
            if deleted and rec.get("MasterRecordId"):
                # A merge loser: its person folds into the survivor's after this batch, with
                # the values it has here (its last Salesforce version must not overwrite
                # them). Never synced, or already merged away (an overlap re-read): nothing to do.
                if current is not None:
                    merges.append((rec["Id"], rec["MasterRecordId"], stamp))
                continue
            values = self._values(rec)
            converted_to = rec.get("ConvertedContactId") if is_lead and rec.get("IsConverted") \
                else None
            contact_person = self._person_by(person.c.sfdc_contact_id, converted_to)
            if contact_person is not None and current is not None \
                    and contact_person.id == current.id:
                contact_person = None
            if is_lead:
                values = self._lead_values(rec, values, current, converted_to,
                                           contact_taken=contact_person is not None)
                if values.get("sfdc_contact_id") in self._graves:
                    # Converted into a contact whose person was deleted here: the contact is
                    # back on this person, and the rows that pointed at the deleted one follow.
                    self._revived.add(converted_to)
            else:
                values.update(sfdc_type="Contact", sfdc_contact_id=rec["Id"], sfdc_id=rec["Id"],
                              sfdc_system_modstamp=stamp, sfdc_is_deleted=deleted)
            values[stamp_col] = stamp
            if current is None and contact_person is not None:
                # This lead's human is already here as the contact's person.
                if contact_person.sfdc_lead_id is None:
                    self._write_person(contact_person, values)
                else:
                    self.counts.add("updated")  # a second lead converted into the same contact
                continue
            current = self._write_person(current, values, need_row=contact_person is not None)
            if contact_person is not None:  # two rows for one human: fold them together
                self._flush_people()
                if contact_person.sfdc_lead_id is None:
                    merge_people(self.conn, self.tables, contact_person.id, current.id,
                                 reason="lead converted into an existing contact",
                                 sfdc_id=converted_to, sf_columns=self.sf_columns,
                                 loser_wins=True)
                    self._cache.clear()  # merged rows changed or went away
                else:
                    merge_people(self.conn, self.tables, current.id, contact_person.id,
                                 reason="lead converted into a contact another lead became",
                                 sfdc_id=rec["Id"], sf_columns=self.sf_columns)
                    self._cache.clear()  # merged rows changed or went away
        self._flush_people()
        self._forget_revived()
        for loser_sf_id, master_sf_id, stamp in merges:
            loser = self._person_by(id_col, loser_sf_id)
            survivor = self._person_by(id_col, master_sf_id)
            if loser is None:
                continue
            self.counts.add("deleted")
            if survivor is not None and loser.id != survivor.id:
                merge_people(self.conn, self.tables, loser.id, survivor.id,
                             reason=f"{self.obj.sf_object} merge in Salesforce",
                             sfdc_id=loser_sf_id, sf_columns=self.sf_columns)
                self._cache.clear()  # merged rows changed or went away
            else:  # the survivor is not synced (e.g. filtered out): keep the loser, flagged
                values = {"sfdc_is_deleted": True, stamp_col: stamp}
                if loser.sfdc_id == loser_sf_id:
                    values["sfdc_system_modstamp"] = stamp
                self.conn.execute(person.update().where(person.c.id == loser.id).values(**values))
                self._forget(loser)
        self._refresh_member_copies(records, is_lead)

    def _refresh_member_copies(self, records: list[dict], is_lead: bool) -> None:
        """Campaign-member fields Salesforce copies from the member's lead or contact (mapped
        by the configuration: ``catalog.PERSON_COPIES``) change with the person, without the
        member's SystemModstamp: they are taken from the person's record as it loads."""
        if "CampaignMember" not in self.catalog.objects:
            return
        member_obj = self.catalog.object("CampaignMember")
        members = self.tables[member_obj.type.table]
        copies = [f for f in member_obj.synced if f.sf_field in PERSON_COPIES["CampaignMember"]
                  and f.column in members.c]
        refs = {f.sf_field: f.column for f in member_obj.synced
                if f.sf_field in {"LeadId", "ContactId"} and f.column in members.c}
        ref = refs.get("LeadId" if is_lead else "ContactId")
        if not copies or ref is None:
            return
        sources = {**_COPY_SOURCES, **(_LEAD_COPY_SOURCES if is_lead else _CONTACT_COPY_SOURCES)}
        shapes: dict[tuple[str, ...], list[dict]] = {}
        for rec in records:
            if rec.get("IsDeleted") or (is_lead and rec.get("IsConverted")):
                continue  # gone, or its members follow its contact now
            values = {}
            for f in copies:
                source = sources.get(f.sf_field, f.sf_field)
                if source is not None and source in rec:
                    values[f.column] = parse_value(f.sf_type, rec[source])
            if values:
                shapes.setdefault(tuple(sorted(values)), []).append(
                    {"_ref": rec["Id"], **{f"_v_{c}": v for c, v in values.items()}})
        for columns, params in shapes.items():
            where = [members.c[ref] == sa.bindparam("_ref"), sa.or_(*[
                members.c[c].is_distinct_from(sa.bindparam(f"_v_{c}", type_=members.c[c].type))
                for c in columns])]
            if is_lead and "ContactId" in refs:  # a lead's member that names a contact: its
                where.append(members.c[refs["ContactId"]].is_(None))  # copies are the contact's
            self.conn.execute(members.update().where(*where).values(
                {c: sa.bindparam(f"_v_{c}", type_=members.c[c].type) for c in columns}),
                params)

    def _write_person(self, current, values: dict, *, need_row: bool = False):
        person = self.tables["person"]
        if current is not None and self.resolver is not None:
            self.resolver.resolve(self.obj.sf_object, current, values)
        if current is not None:
            for col in self.blocked:
                if current._mapping.get(col) is not None:
                    values.pop(col, None)
        if current is None:
            self.counts.add("deleted" if values.get("sfdc_is_deleted") else "new")
            if not need_row:  # the common case: inserted with the batch (executemany)
                self._pending.append(values)
                self._pending_keys.update((c, values[c]) for c in _PERSON_KEYS if values.get(c))
                return None
            self._flush_people()
            new_id = self.conn.execute(person.insert(), values).inserted_primary_key[0]
            return self._reload(new_id)
        # Values go as parameters, not into the statement: SQLAlchemy then compiles each
        # statement shape once instead of once per row.
        self.conn.execute(person.update().where(person.c.id == sa.bindparam("_person_pk")),
                          {**values, "_person_pk": current.id})
        stamp_col = "sfdc_lead_system_modstamp" if self.obj.sf_object == "Lead" \
            else "sfdc_contact_system_modstamp"
        first_seen = current._mapping.get(stamp_col) is None  # e.g. a converted lead's contact
        if values.get("sfdc_is_deleted") is False and current.sfdc_is_deleted:
            outbox.retry_undeleted(self.conn, person.name, [current.id])
        if values.get("sfdc_is_deleted") and not current.sfdc_is_deleted:
            self.counts.add("deleted")
        elif first_seen:
            self.counts.add("new")
        elif not _unchanged(current, values, self.audit):  # else: a push's echo, or a no-op
            self.counts.add("updated")
        self._forget(current)
        return self._reload(current.id) if need_row else None

    # --- the batch's people: prefetched, cached, inserted together --------------------------

    def _prefetch_people(self, records: list[dict], is_lead: bool) -> None:
        """Load every person this batch can touch in a few IN queries (not one per record)."""
        self._cache: dict[tuple[str, str], object] = {}
        self._pending: list[dict] = []
        self._pending_keys: set[tuple[str, str]] = set()
        person = self.tables["person"]
        wanted: dict[str, set[str]] = {c: set() for c in _PERSON_KEYS}
        ids = {r["Id"] for r in records}
        converted = {r["ConvertedContactId"] for r in records
                     if is_lead and r.get("IsConverted") and r.get("ConvertedContactId")}
        self._graves = self._tombstones(ids | converted)
        wanted["sfdc_lead_id" if is_lead else "sfdc_contact_id"] |= ids
        masters = {r["MasterRecordId"] for r in records if r.get("MasterRecordId")}
        wanted["sfdc_lead_id" if is_lead else "sfdc_contact_id"] |= masters
        if is_lead:
            wanted["sfdc_contact_id"] |= {r["ConvertedContactId"] for r in records
                                          if r.get("ConvertedContactId")}
        elif "sfdc_converted_contact_id" in person.c:
            wanted["sfdc_converted_contact_id"] |= ids
        for col, values in wanted.items():
            if col not in person.c or not values:
                continue
            for part in chunked(sorted(values), 500):
                query = sa.select(person).where(person.c[col].in_(part))
                if self.resolver is not None:
                    query = self.resolver.lock(query)
                for row in self.conn.execute(query):
                    self._cache[(col, row._mapping[col])] = row
                for value in part:
                    self._cache.setdefault((col, value), None)
        if self.resolver is not None:
            self.resolver.refresh()

    def _flush_people(self) -> None:
        if self._pending:
            person = self.tables["person"]
            shapes: dict[frozenset, list[dict]] = {}
            for row in self._pending:  # one executemany per column set: defaults stay intact
                shapes.setdefault(frozenset(row), []).append(row)
            for rows in shapes.values():
                self.conn.execute(person.insert(), rows)
            for key in self._pending_keys:
                self._cache.pop(key, None)
            self._pending.clear()
            self._pending_keys.clear()

    def _forget(self, row) -> None:
        for col in _PERSON_KEYS:
            value = row._mapping.get(col)
            if value:
                self._cache.pop((col, value), None)

    def _reload(self, person_id: int):
        person = self.tables["person"]
        return self.conn.execute(sa.select(person).where(person.c.id == person_id)).first()

    def _lead_values(self, rec: dict, values: dict, current, converted_to: str | None, *,
                     contact_taken: bool) -> dict:
        stamp = parse_sf_datetime(rec["SystemModstamp"])
        if converted_to or (current is not None and current.sfdc_contact_id):
            # The contact is the person's record now: only lead-only columns still apply.
            values = {k: v for k, v in values.items() if k in self.lead_only}
            values.update(sfdc_lead_id=rec["Id"], sfdc_type="Contact")
            if converted_to and not contact_taken and (current is None
                                                       or not current.sfdc_contact_id):
                values.update(sfdc_contact_id=converted_to, sfdc_id=converted_to)
            return values
        values.update(sfdc_type="Lead", sfdc_lead_id=rec["Id"], sfdc_id=rec["Id"],
                      sfdc_system_modstamp=stamp, sfdc_is_deleted=bool(rec.get("IsDeleted")))
        return values

    def _person_by(self, column, value):
        if not value:
            return None
        key = (column.name, value)
        if key in self._pending_keys:  # inserted by this batch: write it before reading it
            self._flush_people()
        if key in self._cache:
            return self._cache[key]
        person = self.tables["person"]
        row = self.conn.execute(sa.select(person).where(column == value)).first()
        self._cache[key] = row
        return row

    # --- deletes the extract did not see ------------------------------------------------

    def mark_purged(self, deleted: list[tuple[str, str]], seen: set[str]) -> None:
        """Ids reported by the deleted endpoint that queryAll no longer returns."""
        purged = [i for i, _when in deleted if i not in seen]
        if not purged:
            return
        t = self.table
        if self.obj.sf_object in {"Lead", "Contact"}:
            col = t.c.sfdc_lead_id if self.obj.sf_object == "Lead" else t.c.sfdc_contact_id
            where = [col.in_(purged), t.c.sfdc_is_deleted.is_(False)]
            if self.obj.sf_object == "Lead":
                where.append(t.c.sfdc_contact_id.is_(None))
        else:
            where = [t.c.sfdc_id.in_(purged), t.c.sfdc_is_deleted.is_(False)]
        result = self.conn.execute(t.update().where(*where).values(
            sfdc_is_deleted=True))
        self.counts.add("deleted", result.rowcount)


# The lead's or contact's field a campaign member's copy comes from, where the names differ (None:
# not a field of the record; its copy is refreshed with the formulas, ``maintenance``).
_COPY_SOURCES = {"LeadOrContactOwnerId": "OwnerId"}
_LEAD_COPY_SOURCES = {"CompanyOrAccount": "Company"}
_CONTACT_COPY_SOURCES = {"CompanyOrAccount": None, "Street": "MailingStreet",
                         "City": "MailingCity", "State": "MailingState",
                         "PostalCode": "MailingPostalCode", "Country": "MailingCountry"}
_STAMPS = {"sfdc_system_modstamp", "sfdc_lead_system_modstamp", "sfdc_contact_system_modstamp"}
# Fields every save changes: an echo differs in nothing else.
AUDIT_FIELDS = {"SystemModstamp", "LastModifiedDate", "LastModifiedById", "LastViewedDate",
                "LastReferencedDate"}


def _unchanged(row, values: dict, ignore: set[str]) -> bool:
    """Nothing but stamps and audit fields would change: Salesforce's echo of our own push (or
    a change of fields the sync does not map), which is not counted as an update."""
    return all(same(row._mapping.get(k), v) for k, v in values.items()
               if k not in ignore and not k.startswith("sfsync_"))


def load_object(engine: Engine, tables: dict[str, sa.Table], catalog: Catalog, run_key: str,
                sf_object: str, staged_batches) -> dict[str, int]:
    """Load everything staged for one object in one transaction, advancing its cursor.

    Idempotent: a run whose load already committed returns its recorded counts.
    """
    extract_t, count_t, mark_t = BOOKS["extract"], BOOKS["count"], BOOKS["watermark"]
    obj = catalog.object(sf_object)
    with engine.begin() as conn:
        state = conn.execute(sa.select(extract_t).where(
            extract_t.c.run_key == run_key, extract_t.c.sf_object == sf_object)).first()
        if state is None or state.status not in {"extracted", "filtered", "loaded"}:
            raise NotPreparedError(f"{sf_object}: nothing extracted for run {run_key}")
        if state.status == "loaded":
            return recorded_counts(conn, run_key, "pull", sf_object).get(sf_object, {})
        counts = Counts()
        skipped = conn.execute(sa.select(count_t.c.skipped).where(
            count_t.c.run_key == run_key, count_t.c.sf_object == sf_object,
            count_t.c.operation == "pull")).scalar()
        counts.add("skipped", skipped or 0)
        lock_table(conn, obj.type.table)  # before the cursor is read: it moves with the rows
        mark = conn.execute(sa.select(mark_t).where(mark_t.c.sf_object == sf_object)).first()
        loader = Loader(conn, tables, catalog, obj, counts,
                        max_stamp=mark.cursor_modstamp if mark else None, run_key=run_key)
        seen: set[str] = set()
        for batch in staged_batches:
            seen.update(r["Id"] for r in batch)
            loader.load(batch)
        loader.mark_purged([tuple(d) for d in json.loads(state.deleted_ids or "[]")], seen)
        # The change query ran after the probe, and Salesforce holds latestDateCovered back to
        # the start of any open transaction: everything up to it is loaded now, and nothing
        # later is certain (an open transaction may still commit changes stamped before the
        # newest record read). So the cursor stops there, never past it.
        cursor = loader.max_stamp
        if state.covered_until is not None:
            before = mark.cursor_modstamp if mark is not None else None
            cursor = state.covered_until if before is None else max(before,
                                                                    state.covered_until)
        values = {"cursor_modstamp": cursor, "updated_at": utcnow()}
        if state.covered_until is not None:
            values["covered_until"] = state.covered_until
        if state.cursor_from is None:  # a full copy (the extract records rest/bulk as its mode)
            values["full_copy_done"] = True
        if mark is None:
            conn.execute(mark_t.insert().values(sf_object=sf_object, **values))
        elif cursor is not None:
            conn.execute(mark_t.update().where(mark_t.c.sf_object == sf_object).values(**values))
        if counts.values["new"] or not has_rows_record(conn, obj.type.table):
            record_rows(conn, obj.type.table)  # the next run checks none vanish without a trace
        result = counts.as_dict()
        record_counts(conn, run_key, sf_object, "pull", result, state.api_calls)
        conn.execute(extract_t.update().where(
            extract_t.c.run_key == run_key, extract_t.c.sf_object == sf_object).values(
            status="loaded", updated_at=utcnow()))
    return result


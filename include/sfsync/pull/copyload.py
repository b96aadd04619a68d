"""The initial copy's loader: new rows written the fastest way each database offers.

Most records a copy reads have no row yet (a first copy writes into empty tables). They need
none of the loader's per-record rules (the newer-version check, conflicts, tombstones, merges,
conversions): each becomes one row of the values the database stores (``store.bulk``) and a
chunk's rows are written in one go (SQLite: one prepared executemany; PostgreSQL: COPY into a
staging table, then one ``INSERT ... ON CONFLICT`` merge in which the newer SystemModstamp wins;
people: straight into ``person``, failing on a taken key like the loader's INSERT). Rows that
point at people find their person in the same statement, set-based (``people.link_people``'s
rule); those whose person is not there yet are linked when the run finishes, as before.

A contact whose person a converted lead made (and that no contact version has reached yet)
updates that person the same way, in one statement, "block updates" columns kept. Every other
record (it has a row, a tombstone, a local edit not pushed yet, a merge in Salesforce, a
lead's conversion, a create whose answer was lost) goes through :class:`Loader`, with every
rule, after the new rows.
"""

from __future__ import annotations

from operator import itemgetter

import sqlalchemy as sa

from include.sfsync.catalog import ObjectCatalog
from include.sfsync.objects import PEOPLE
from include.sfsync.pull.filters import keep_fields, skip_reason
from include.sfsync.pull.load import Loader
from include.sfsync.pull.people import person_refs
from include.sfsync.store import outbox
from include.sfsync.store.bulk import RowUpdater, RowWriter, stamp, stored, taken
from include.sfsync.store.capture import tombstones
from include.sfsync.store.tables import BOOKS

_STAMPS = ("sfsync_created_at", "sfsync_updated_at")


class CopyPlan:
    """How one object's new records become rows of its table (built once per window).
    ``fast`` is False when some column's value could not be written exactly this way: the
    whole object then loads through :class:`Loader`."""

    def __init__(self, tables: dict[str, sa.Table], obj: ObjectCatalog, dialect, *,
                 blocked: set[str] = frozenset()):
        self.obj, self.dialect = obj, dialect
        self.table = table = tables[obj.type.table]
        self.kind = {"Lead": "lead", "Contact": "contact"}.get(obj.sf_object, "rows")
        wanted = keep_fields(obj)
        # Fields the query reads that the loader never sees (a sync filter's field): the
        # records the loader gets are cut down to the rest, as ``filter_records`` does.
        self.extra = set(obj.soql_fields) - wanted
        self.wanted = wanted
        sources: dict[str, tuple[str, str]] = {}
        for f in obj.synced:  # as Loader._values: a later field mapped to a column wins
            if f.column in table.c:
                sources[f.column] = (f.sf_field, f.sf_type)
        fixed: dict[str, tuple[str, str]] = {"sfdc_id": ("Id", "id"),
                                             "sfdc_system_modstamp": ("SystemModstamp",
                                                                      "datetime")}
        constants: dict[str, object] = {}
        if self.kind == "rows":
            if "sfdc_object" in table.c:
                constants["sfdc_object"] = obj.sf_object
        else:
            fixed[f"sfdc_{self.kind}_id"] = ("Id", "id")
            fixed[f"sfdc_{self.kind}_system_modstamp"] = ("SystemModstamp", "datetime")
            constants["sfdc_type"] = "Lead" if self.kind == "lead" else "Contact"
        for col in [*fixed, *constants, "sfdc_is_deleted", "person_id", *_STAMPS]:
            sources.pop(col, None)
        self.fast = all(c in table.c for c in [*fixed, *constants, "sfdc_is_deleted", *_STAMPS])
        self.columns = [*sources, *fixed]
        self.fields = [src for src, _ in sources.values()] + [src for src, _ in fixed.values()]
        self.convert = []
        for i, (col, (_, sf_type)) in enumerate([*sources.items(), *fixed.items()]):
            exact, convert = stored(table.c[col], sf_type, dialect) if self.fast else (True, None)
            self.fast = self.fast and exact
            if convert is not None:
                self.convert.append((i, convert))
        self.constants = list(constants.values())
        self.columns += ["sfdc_is_deleted", *constants, *_STAMPS]
        self.true, self.false = (1, 0) if dialect.name == "sqlite" else (True, False)
        self.writer = self.updater = None
        if not self.fast:
            return
        person = None
        if self.kind == "rows" and "person_id" in table.c and "person" in tables:
            person = (tables["person"], [c for c in person_refs(table, obj)
                                         if c in self.columns])
        self.writer = RowWriter(table, self.columns, dialect, newer_wins=self.kind == "rows",
                                person=person)
        if self.kind == "contact":
            self.updater = RowUpdater(table, self.columns, dialect, key="sfdc_contact_id",
                                      unset="sfdc_contact_system_modstamp", keep=set(blocked))

    def rows(self, records: list[dict]) -> list[list]:
        """The records' rows, in ``columns`` order (one fresh ``sfsync_*`` stamp for all)."""
        now = stamp(self.table, self.dialect)
        tail = [*self.constants, now, now]
        fields, convert = self.fields, self.convert
        true, false = self.true, self.false
        pick = itemgetter(*fields)  # a Bulk record has every field; a REST one may not
        out = []
        for rec in records:
            try:
                row = list(pick(rec))
            except KeyError:
                row = [rec.get(f) for f in fields]
            for i, conv in convert:
                value = row[i]
                if value is not None:
                    row[i] = conv(value)
            row.append(true if rec.get("IsDeleted") else false)
            row += tail
            out.append(row)
        return out


class CopyLoader(Loader):
    """A :class:`Loader` for one chunk of a copy window: :meth:`copy` takes the records as
    read (sync filters not applied yet)."""

    def __init__(self, *args, plan: CopyPlan, **kwargs):
        super().__init__(*args, **kwargs)
        self.plan = plan

    def copy(self, records: list[dict]) -> None:
        obj, plan = self.obj, self.plan
        kept = []
        for rec in records:
            if skip_reason(obj, rec):
                self.counts.add("skipped")
            else:
                kept.append(rec)
        if not kept:
            return
        if not plan.fast or (obj.type.two_way and obj.sf_object != "Contact"
                             and outbox.creates_in_doubt(self.conn, self.table.name)):
            self.load(self._cut(kept))  # every record with every rule
            return
        new, first_contacts, rest = self._split(kept)
        if new:
            plan.writer.write(self.conn, plan.rows(new))
            self._count(new, set())
        if first_contacts:
            records = [rec for rec, _ in first_contacts]
            updated = plan.updater.write(self.conn, plan.rows(records))
            if updated != len(records):  # the rows are locked (SQLite: the write lock)
                raise RuntimeError(f"{obj.sf_object}: {updated} of {len(records)} people "
                                   "updated")
            self._count(records, {r["Id"] for r, gone in first_contacts if gone})
        if rest:
            rest = self._cut(rest)
            if obj.sf_object in PEOPLE:
                self._load_people(rest)
            else:
                self._load_rows(rest)
        if obj.sf_object in PEOPLE and (new or first_contacts):
            self._refresh_member_copies(self._cut([*new, *(r for r, _ in first_contacts)]),
                                        obj.sf_object == "Lead")

    def _count(self, records, deleted_before: set[str]) -> None:
        """A new row (or a person's first contact version): New, or Deleted when it arrives
        deleted (unless its row was already flagged so)."""
        deleted = sum(1 for rec in records if rec.get("IsDeleted")
                      and rec["Id"] not in deleted_before)
        self.counts.add("deleted", deleted)
        self.counts.add("new", len(records) - deleted)

    def _cut(self, records: list[dict]) -> list[dict]:
        """The records as ``filter_records`` hands them to the loader."""
        if not self.plan.extra:
            return records
        wanted = self.plan.wanted
        return [{k: v for k, v in rec.items() if k in wanted} for rec in records]

    def _split(self, records: list[dict]) -> tuple[list, list, list]:
        """(records no row holds, nor a tombstone; contacts whose person only a converted
        lead made so far, each with whether that person is flagged deleted; the others)."""
        ids = [rec["Id"] for rec in records]
        t, kind = self.table, self.plan.kind
        firsts: dict[str, bool] = {}  # contact id -> its person is flagged deleted
        if kind == "contact":
            found = self._first_contacts(ids, firsts)
            held = found - set(firsts)
            if "sfdc_converted_contact_id" in t.c:  # looked for by the loader when no person
                held |= taken(self.conn, t, "sfdc_converted_contact_id",  # holds the contact
                              [i for i in ids if i not in found])
        else:
            held = taken(self.conn, t, "sfdc_lead_id" if kind == "lead" else "sfdc_id", ids)
        graves = BOOKS["tombstone"]
        if self.resolver is not None and self.conn.execute(  # two-way tables keep the ids
                sa.select(graves.c.sfdc_id).where(graves.c.table_name == t.name)  # of rows
                .limit(1)).first() is not None:  # deleted here
            held.update(tombstones(self.conn, t.name, [
                i for i in ids if i not in held and i not in firsts]))
        new, first_contacts, rest = [], [], []
        fields = self.plan.fields
        for rec in records:
            if kind != "rows" and (
                    (rec.get("IsDeleted") and rec.get("MasterRecordId"))  # a merge's loser
                    or (kind == "lead" and rec.get("IsConverted")
                        and rec.get("ConvertedContactId"))):
                rest.append(rec)
            elif rec["Id"] in firsts:
                if all(f in rec for f in fields):  # else the loader leaves absent fields be
                    first_contacts.append((rec, firsts[rec["Id"]]))
                else:
                    rest.append(rec)
            elif rec["Id"] in held:
                rest.append(rec)
            else:
                new.append(rec)
        return new, first_contacts, rest

    def _first_contacts(self, ids: list[str], firsts: dict[str, bool]) -> set[str]:
        """The contact ids of ``ids`` some person holds (returned, rows locked); those whose
        person has no contact version yet and no local edit waiting also go into ``firsts``."""
        person = self.table
        found = set()
        query = sa.select(person.c.id, person.c.sfdc_contact_id, person.c.sfdc_is_deleted,
                          person.c.sfdc_contact_system_modstamp).where(
            person.c.sfdc_contact_id.in_(sorted(taken(self.conn, person, "sfdc_contact_id",
                                                      ids))))
        rows = self.conn.execute(self.resolver.lock(query)).all() if self.resolver else \
            self.conn.execute(query).all()
        if self.resolver is not None:
            self.resolver.refresh()  # edits committed before the lock are weighed
        edited = set(self.resolver.entries) if self.resolver is not None else set()
        for row in rows:
            found.add(row.sfdc_contact_id)
            if row.sfdc_contact_system_modstamp is None and row.id not in edited:
                firsts[row.sfdc_contact_id] = bool(row.sfdc_is_deleted)
        return found

"""People: one ``person`` row per human, across leads and contacts.

Salesforce lead and contact ids resolve to person rows; a merge in Salesforce (or a lead
converted into an existing contact) folds one person into another: children move, blanks fill,
the loser row goes away; rows that arrived before their person are linked once it is there.
"""

from __future__ import annotations

import sqlalchemy as sa
from more_itertools import chunked
from sqlalchemy.engine import Connection

from include.sfsync.catalog import Catalog, ObjectCatalog
from include.sfsync.objects import PEOPLE
from include.sfsync.store.engine import utcnow
from include.sfsync.store.outbox import merge_rows
from include.sfsync.store.tables import BOOKS


def resolve_people(conn: Connection, person: sa.Table, sf_ids: set[str]) -> dict[str, int]:
    """Salesforce lead/contact ids -> person ids (converted leads resolve to their person)."""
    if not sf_ids:
        return {}
    out: dict[str, int] = {}
    for part in chunked(sorted(sf_ids), 500):
        for row in conn.execute(sa.select(person.c.id, person.c.sfdc_lead_id,
                                          person.c.sfdc_contact_id).where(
                sa.or_(person.c.sfdc_lead_id.in_(part), person.c.sfdc_contact_id.in_(part)))):
            for sf_id in (row.sfdc_lead_id, row.sfdc_contact_id):
                if sf_id in sf_ids:
                    out[sf_id] = row.id
    return out


def merge_people(conn: Connection, tables: dict[str, sa.Table], loser_id: int, survivor_id: int,
                 *, reason: str, sf_columns: set[str], sfdc_id: str | None = None,
                 loser_wins: bool = False) -> None:
    """Fold one person into another: children move, blanks fill, the loser row goes away.

    ``loser_wins``: the loser's Salesforce values replace the survivor's (a contact absorbed by
    its converted lead's person); otherwise they only fill the survivor's blanks.
    """
    person = tables["person"]
    for table in tables.values():
        if table.name != "person" and "person_id" in table.c:
            conn.execute(table.update().where(table.c.person_id == loser_id)
                         .values(person_id=survivor_id))
    loser = conn.execute(sa.select(person).where(person.c.id == loser_id)).first()
    survivor = conn.execute(sa.select(person).where(person.c.id == survivor_id)).first()
    fill = {}
    for col in person.c:
        name = col.name
        if name == "id" or name.startswith("sfsync_"):  # the stamps are the sync's own
            continue
        mine, theirs = survivor._mapping[name], loser._mapping[name]
        if theirs is None:
            continue
        salesforce_side = name.startswith("sfdc_") or name in sf_columns
        if mine is None or (loser_wins and salesforce_side and name != "sfdc_lead_id"):
            fill[name] = theirs
    if loser_wins:
        fill.update(sfdc_type="Contact", sfdc_id=loser.sfdc_contact_id,
                    sfdc_is_deleted=loser.sfdc_is_deleted)
    conn.execute(person.delete().where(person.c.id == loser_id))
    # The sync's own delete is not pushed. The blanks the loser filled are, so that both sides
    # hold the merged values (unless the fill came from Salesforce itself: ``loser_wins``).
    merge_rows(conn, "person", loser_id, survivor_id, {} if loser_wins else {
        k: survivor._mapping[k] for k in fill if not k.startswith("sfdc_")})
    conn.execute(person.update().where(person.c.id == survivor_id).values(**fill))
    conn.execute(BOOKS["merge"].insert().values(
        loser_person_id=loser_id, survivor_person_id=survivor_id, reason=reason, sfdc_id=sfdc_id,
        merged_at=utcnow()))


def person_refs(table: sa.Table, obj: ObjectCatalog) -> list[str]:
    """The columns of ``obj``'s rows that name a lead or contact, in the order a row's person
    is looked for (each by contact, then by lead)."""
    refs = [c for c in ("sfdc_contact_id", "sfdc_who_id", "sfdc_lead_id") if c in table.c]
    return refs + [f.column for f in obj.synced if f.sf_type == "reference"
                   and set(PEOPLE) & set(f.reference_to) and f.column not in refs]


def link_people(conn: Connection, tables: dict[str, sa.Table], catalog: Catalog, *,
                sfdc_ids: set[str] | None = None) -> int:
    """Fill ``person_id`` where the person arrived after the row that points at it. With
    ``sfdc_ids`` (leads or contacts whose person row was deleted here and came back from
    Salesforce as a new row), point every row that references them, or the other record of
    their person, at that person: they still hold the deleted row's id."""
    fixed = 0
    person = tables["person"]
    if sfdc_ids is not None:
        found = conn.execute(sa.select(person.c.sfdc_lead_id, person.c.sfdc_contact_id).where(
            sa.or_(person.c.sfdc_lead_id.in_(sorted(sfdc_ids)),
                   person.c.sfdc_contact_id.in_(sorted(sfdc_ids))))).all()
        sfdc_ids = set(sfdc_ids) | {i for row in found for i in row if i}
    for obj in catalog.ordered():
        table = tables[obj.type.table]
        if "person_id" not in table.c or obj.sf_object in PEOPLE:
            continue
        for ref in person_refs(table, obj):
            for col in ("sfdc_contact_id", "sfdc_lead_id"):
                match = sa.select(person.c.id).where(person.c[col] == table.c[ref]) \
                    .scalar_subquery()
                which = table.c.person_id.is_(None) if sfdc_ids is None else sa.and_(
                    table.c[ref].in_(sorted(sfdc_ids)),
                    sa.or_(table.c.person_id.is_(None), table.c.person_id != match))
                result = conn.execute(table.update().where(
                    which, table.c[ref].is_not(None),
                    sa.exists().where(person.c[col] == table.c[ref])).values(person_id=match))
                fixed += result.rowcount
    return fixed


def flag_contactless_conversions(conn: Connection, person: sa.Table) -> int:
    """A converted lead's person takes its contact's record; when that contact never arrived
    (deleted in Salesforce before it could be read, or left out by a sync filter), the row holds
    only lead-only values and no live Salesforce record: flag it deleted rather than show a
    half person. The contact's own load clears the flag if it comes back (undelete).

    Never arrived: no version of the contact was ever loaded (its stamp is empty), whether the
    person is new or was a live lead before (its ``sfdc_system_modstamp`` then is the lead's)."""
    never_read = person.c.sfdc_system_modstamp.is_(None)
    if "sfdc_contact_system_modstamp" in person.c:
        never_read = sa.or_(never_read, sa.and_(
            person.c.sfdc_contact_id.is_not(None),
            person.c.sfdc_contact_system_modstamp.is_(None)))
    return conn.execute(person.update().where(
        person.c.sfdc_type == "Contact", never_read,
        person.c.sfdc_is_deleted.is_not(True)).values(sfdc_is_deleted=True)).rowcount

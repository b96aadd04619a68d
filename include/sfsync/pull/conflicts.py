"""Conflicts: both sides changed the same field since the last sync.

The pull consults the outbox before it overwrites a locally edited column of a two-way table.
For each column with a pending local edit, given the value Salesforce had when the edit was
made (the outbox's base), the local value and Salesforce's new value:

* Salesforce's value equals the local one: both sides agree, nothing to push for that column;
* Salesforce's value equals the base: only the marketing side changed it; the local value stays
  and is pushed (for a row just linked to an existing record there is no base: a value beats
  no value);
* otherwise both changed it: a conflict, logged in ``sfsync_conflict`` with the three values,
  and decided by the policy (``conflicts`` in the configuration: leads, marketing wins;
  contacts, Salesforce wins; per-field overrides). The losing side takes the winner's value,
  so the next cycle finds both sides equal: no flip-flop.

"Block updates" columns are marketing-owned: the local value always wins.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from include.sfsync.catalog import Catalog
from include.sfsync.store import outbox
from include.sfsync.store.engine import utcnow
from include.sfsync.values import as_text, jsonable, same


class Resolver:
    """Resolves one load's conflicts for one two-way table, inside the load's transaction."""

    def __init__(self, conn: Connection, table: sa.Table, catalog: Catalog, conflict_t: sa.Table,
                 run_key: str | None, blocked: set[str]):
        self.conn, self.table, self.catalog = conn, table, catalog
        self.conflict_t, self.run_key, self.blocked = conflict_t, run_key, blocked
        self.entries: dict = {}
        self.conflicts = 0
        self.refresh(force=True)

    def refresh(self, *, force: bool = False) -> None:
        """Fold changes committed since (call it after locking the rows about to be written:
        an edit committed before the lock is then weighed, one after it waits for us)."""
        if outbox.fold(self.conn, [self.table.name]) or force:
            self.entries = outbox.outbox_entries(self.conn, self.table.name)

    def lock(self, query):
        """``query`` locking the rows it reads (PostgreSQL; SQLite writers are serialised)."""
        return query.with_for_update() if self.conn.dialect.name == "postgresql" else query

    def resolve(self, sf_object: str, current, values: dict) -> None:
        """Adjust ``values`` (about to overwrite the row ``current``) and the row's outbox entry."""
        entry = self.entries.get(current.id)
        if entry is None or entry.op != "upsert":
            return
        obj = self.catalog.object(sf_object)
        touched = False
        for col in list(entry.columns):
            if col not in values or col not in self.table.c:
                continue
            local, theirs = current._mapping.get(col), values[col]
            base_known = col in entry.base
            base = outbox.stored_value(self.table.c[col], entry.base.get(col))
            if same(local, theirs) or (not base_known and local is None) or (
                    base_known and same(local, base)):
                # both agree, or nothing to weigh (no local value, or changed and changed
                # back): Salesforce's value stands and the column has nothing to push
                entry.columns.remove(col)
                entry.base.pop(col, None)
                touched = True
                continue
            if (base_known and same(base, theirs)) or (not base_known and theirs is None):
                # only the marketing side changed it (or, for a person just linked to an
                # existing record, only it has a value): it will be pushed
                values[col] = local
                continue
            sf_field = next((f.sf_field for f in obj.synced if f.column == col), col)
            winner = "marketing" if col in self.blocked else \
                self.catalog.config.conflicts.winner(sf_object, sf_field)
            self.conn.execute(self.conflict_t.insert().values(
                run_key=self.run_key, table_name=self.table.name, row_id=current.id,
                sf_object=sf_object, sfdc_id=current._mapping.get("sfdc_id"), column_name=col,
                sf_field=sf_field, marketing_value=as_text(local), salesforce_value=as_text(theirs),
                base_value=as_text(base) if base_known else None, winner=winner,
                detected_at=utcnow()))
            self.conflicts += 1
            touched = True
            if winner == "marketing":
                values[col] = local
                entry.base[col] = jsonable(theirs)  # what Salesforce has now: push the local one
            else:
                entry.columns.remove(col)
                entry.base.pop(col, None)
        if not touched:
            return
        if entry.columns or entry.created:
            outbox.save_entry(self.conn, entry)
        else:
            outbox.drop_entry(self.conn, entry)
            del self.entries[current.id]

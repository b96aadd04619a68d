"""Many new rows into one synced table at once, in the form the database stores (the initial
copy's writes).

* Values: :func:`stored` turns a Salesforce value (typed like REST JSON) into exactly what
  SQLAlchemy would hand the driver for ``parse_value(sf_type, value)`` bound to the column, with
  shortcuts for the common types (a SystemModstamp becomes SQLite's stored text by slicing, and
  reaches PostgreSQL as Salesforce's own text: no datetime object in between).
* SQLite: one prepared INSERT, ``executemany`` of tuples.
* PostgreSQL: ``COPY`` into a staging table (temporary, dropped again), then one
  ``INSERT ... SELECT`` merge; or ``COPY`` straight into the table when a taken key is to fail
  like a plain INSERT.

``newer_wins``: a row whose ``sfdc_id`` is taken already (another writer got there first) is
updated only with a newer ``sfdc_system_modstamp``, as :class:`pull.load.Loader` upserts;
``sfsync_created_at`` stays, ``sfsync_updated_at`` is the new stamp (see ``store.capture``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from include.sfsync.store.engine import UtcDateTime, fresh_stamp
from include.sfsync.values import CSV_TYPED, parse_value

_NUMBERS = {"double", "currency", "percent"}
_PARSED = CSV_TYPED | {"datetime", "date"}  # the types parse_value converts; others pass as-is


def stored(column: sa.Column, sf_type: str, dialect) -> tuple[bool, Callable | None]:
    """(exact, convert): ``convert`` turns a non-null Salesforce value into what the driver gets
    for ``column`` (None: the value itself). ``exact`` is False where a COPY could store it
    differently from a bound parameter (a value of another type than the column's, on
    PostgreSQL): such columns are written by the loader's statements instead."""
    kind = column.type
    sqlite = dialect.name == "sqlite"
    if isinstance(kind, (sa.String, sa.Text)) and sf_type not in _PARSED:
        return True, None
    if sf_type == "datetime" and isinstance(kind, (UtcDateTime, sa.DateTime)):
        return True, _sqlite_datetime(column, dialect) if sqlite else _pg_datetime
    if sf_type == "date" and isinstance(kind, sa.Date) and not isinstance(kind, sa.DateTime):
        return True, _date
    if sf_type == "boolean" and isinstance(kind, sa.Boolean):
        return True, _int_bool if sqlite else bool
    if sf_type == "int" and isinstance(kind, sa.Integer):
        return True, int
    if sf_type in _NUMBERS and isinstance(kind, sa.Float):
        return True, float
    process = kind.dialect_impl(dialect).bind_processor(dialect)
    if process is None:
        return sqlite, lambda value: parse_value(sf_type, value)
    return sqlite, lambda value: process(parse_value(sf_type, value))


def _int_bool(value) -> int:
    return 1 if value else 0


def _date(value) -> str:
    # parse_value's date (a datetime's text gives its day), as both databases store it
    return date.fromisoformat(value[:10]).isoformat()


def _utc_millis(value) -> bool:
    """Salesforce's own datetime text: ``2026-11-23T05:00:00.000+0000`` (REST) or ``...000Z``
    (Bulk CSV), UTC, milliseconds."""
    return isinstance(value, str) and value[10:11] == "T" and value[19:20] == "." and (
        (len(value) == 24 and value[23] == "Z") or (len(value) == 28 and value[23:] == "+0000"))


def _sqlite_datetime(column: sa.Column, dialect) -> Callable:
    process = column.type.dialect_impl(dialect).bind_processor(dialect)

    def convert(value):
        if _utc_millis(value):
            datetime.fromisoformat(value)  # a valid instant: raises as parse_value would
            # SQLAlchemy's SQLite DATETIME storage format: naive UTC, microseconds
            return f"{value[:10]} {value[11:19]}.{value[20:23]}000"
        value = parse_value("datetime", value)
        return process(value) if process else value

    return convert


def _pg_datetime(value):
    # PostgreSQL reads Salesforce's text itself (timestamptz input); anything else is parsed here
    return value if _utc_millis(value) else parse_value("datetime", value)


def stamp(table: sa.Table, dialect):
    """A fresh ``sfsync_*`` stamp as the driver gets it for ``table`` (see ``fresh_stamp``)."""
    process = table.c.sfsync_updated_at.type.dialect_impl(dialect).bind_processor(dialect)
    value = fresh_stamp()
    return process(value) if process else value


def taken(conn: Connection, table: sa.Table, column: str, values: list[str]) -> set[str]:
    """Which of ``values`` the table's ``column`` holds (one statement, one parameter)."""
    if not values:
        return set()
    prep = conn.dialect.identifier_preparer
    col, target = prep.quote(column), prep.format_table(table)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        if conn.dialect.name == "sqlite":
            cursor.execute(f"SELECT {col} FROM {target} WHERE {col} IN "
                           "(SELECT value FROM json_each(?))", (json.dumps(values),))
        else:
            cursor.execute(f"SELECT {col} FROM {target} WHERE {col} = ANY(%s)", (values,))
        return {row[0] for row in cursor.fetchall()}
    finally:
        cursor.close()


class RowWriter:
    """Writes rows (sequences in ``columns`` order, values as :func:`stored` made them) into
    ``table`` in one go, inside the caller's transaction.

    ``person``: (the person table, the columns of ``columns`` naming a lead or contact, in
    ``people.person_refs`` order): each row's ``person_id`` is looked up in the same statement,
    set-based, as ``people.link_people`` would link it (by contact, then by lead, per column)."""

    def __init__(self, table: sa.Table, columns: list[str], dialect, *, newer_wins: bool,
                 person: tuple[sa.Table, list[str]] | None = None):
        self.table, self.columns, self.newer_wins = table, columns, newer_wins
        self.dialect = dialect.name
        sqlite = self.dialect == "sqlite"
        prep = dialect.identifier_preparer
        self.target = prep.format_table(table)
        names = [prep.quote(c) for c in columns]
        # SQLite: numbered parameters, so that the person lookup reuses a row's own values
        values = [f"?{i + 1}" for i in range(len(columns))] if sqlite else \
            [f"s.{n}" for n in names]
        if person is not None:
            people, refs = person
            found = [f"(SELECT p.id FROM {prep.format_table(people)} AS p WHERE p.{prep.quote(k)}"
                     f" = {values[columns.index(ref)]})"
                     for ref in refs for k in ("sfdc_contact_id", "sfdc_lead_id")]
            if found:
                names.append(prep.quote("person_id"))
                values.append(f"COALESCE({', '.join(found)})" if len(found) > 1 else found[0])
        cols = ", ".join(names)
        merge = ""
        if newer_wins:
            sets = [f"{n} = excluded.{n}" for n in names
                    if n not in {prep.quote("sfdc_id"), prep.quote("sfsync_created_at"),
                                 prep.quote("person_id")}]
            if prep.quote("person_id") in names:  # a row's person stays if none is found
                sets.append(f"person_id = COALESCE(excluded.person_id, {self.target}.person_id)")
            stamp_col = f"{self.target}.sfdc_system_modstamp"
            merge = (f" ON CONFLICT (sfdc_id) DO UPDATE SET {', '.join(sets)} WHERE {stamp_col}"
                     f" IS NULL OR {stamp_col} < excluded.sfdc_system_modstamp")
        if sqlite:
            self.insert = f"INSERT INTO {self.target} ({cols}) VALUES ({', '.join(values)})" \
                + merge
        elif newer_wins or len(names) > len(columns):
            staged = ", ".join(prep.quote(c) for c in columns)
            self.stage = prep.quote(f"sfsync_stage_{table.name}"[:63])
            self.create = (f"CREATE TEMPORARY TABLE {self.stage} ON COMMIT DROP AS "
                           f"SELECT {staged} FROM {self.target} WITH NO DATA")
            self.copy = f"COPY {self.stage} ({staged}) FROM STDIN"
            self.insert = (f"INSERT INTO {self.target} ({cols}) SELECT {', '.join(values)} FROM "
                           f"{self.stage} AS s{merge}")
            self.drop = f"DROP TABLE {self.stage}"
        else:  # straight into the table: a taken key fails the insert, as a plain INSERT does
            self.copy = f"COPY {self.target} ({cols}) FROM STDIN"
            self.create = None

    def write(self, conn: Connection, rows: list) -> None:
        if not rows:
            return
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            if self.dialect == "sqlite":
                quiet = _idle_insert_triggers(cursor, self.table.name)
                for name, _sql in quiet:
                    cursor.execute(f'DROP TRIGGER "{name}"')
                try:
                    cursor.executemany(self.insert, rows)
                finally:
                    for _name, sql in quiet:
                        cursor.execute(sql)
                return
            if self.create:
                cursor.execute(self.create)
            with cursor.copy(self.copy) as copy:
                for row in rows:
                    copy.write_row(row)
            if self.create:
                cursor.execute(self.insert)
                cursor.execute(self.drop)
        finally:
            cursor.close()


class RowUpdater:
    """Updates rows of ``table`` found by ``key`` that hold no ``unset`` value yet (a person a
    converted lead made, whose contact is copied now) with the same rows a :class:`RowWriter`
    takes (``sfsync_created_at`` left alone), in one go. ``keep``: columns whose value stays
    where the row has one ("block updates"). Returns how many rows it updated."""

    def __init__(self, table: sa.Table, columns: list[str], dialect, *, key: str, unset: str,
                 keep: set[str]):
        self.table, self.columns, self.dialect = table, columns, dialect.name
        prep = dialect.identifier_preparer
        target = prep.format_table(table)
        sqlite = self.dialect == "sqlite"

        def value(i: int, col: str) -> str:
            new = f"?{i + 1}" if sqlite else f"s.{prep.quote(col)}"
            return f"COALESCE({target}.{prep.quote(col)}, {new})" if col in keep else new

        sets = ", ".join(f"{prep.quote(c)} = {value(i, c)}" for i, c in enumerate(columns)
                         if c not in {"sfsync_created_at", key})
        where = f"{target}.{prep.quote(unset)} IS NULL"
        if sqlite:
            self.update = (f"UPDATE {target} SET {sets} WHERE {prep.quote(key)} = "
                           f"?{columns.index(key) + 1} AND {where}")
        else:
            staged = ", ".join(prep.quote(c) for c in columns)
            self.stage = prep.quote(f"sfsync_stage_{table.name}"[:63])
            self.create = (f"CREATE TEMPORARY TABLE {self.stage} ON COMMIT DROP AS "
                           f"SELECT {staged} FROM {target} WITH NO DATA")
            self.copy = f"COPY {self.stage} ({staged}) FROM STDIN"
            self.update = (f"UPDATE {target} SET {sets} FROM {self.stage} AS s WHERE "
                           f"{target}.{prep.quote(key)} = s.{prep.quote(key)} AND {where}")
            self.drop = f"DROP TABLE {self.stage}"

    def write(self, conn: Connection, rows: list) -> int:
        if not rows:
            return 0
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            if self.dialect == "sqlite":
                cursor.executemany(self.update, rows)
                return cursor.rowcount
            cursor.execute(self.create)
            with cursor.copy(self.copy) as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(self.update)
            updated = cursor.rowcount
            cursor.execute(self.drop)
            return updated
        finally:
            cursor.close()


def _idle_insert_triggers(cursor, table: str) -> list[tuple[str, str]]:
    """(name, CREATE TRIGGER) of the table's change-capture insert trigger, which records only
    inserts without ``sfsync_created_at`` (never the sync's: see ``store.capture``). SQLite
    still builds the NEW row for each insert to test that, which doubles the cost of a wide
    table's inserts; the writer drops it around its own INSERT and creates it again in the
    same transaction, which holds the database's only write lock: no other writer ever finds
    the table without it, and a rollback restores it."""
    found = cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND "
                           "tbl_name = ?", (table,)).fetchall()
    return [(name, sql) for name, sql in found if name.startswith("sfsync_capture_")
            and " AFTER INSERT ON " in sql and " FOR EACH ROW WHEN NEW.sfsync_created_at IS "
            "NULL BEGIN " in sql]

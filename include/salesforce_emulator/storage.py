"""SQLite layout of the emulated org: one table per sObject, one column per field.

Tables are named exactly as the sObject (``"Lead"``), columns exactly as the field API name.
Every table has an ``IsDeleted`` column even when the object has no such field (User), so
query code can filter uniformly. Text columns use ``COLLATE NOCASE`` because SOQL ``=``, ``IN``,
``LIKE`` and ``ORDER BY`` on text are case-insensitive; id columns stay binary (ids are
case-sensitive).
"""

from __future__ import annotations

import sqlite3

from .schema import Schema, SObject

# Columns every sync-style query filters or orders on.
_INDEXED = ("SystemModstamp", "CreatedDate", "LastModifiedDate", "IsDeleted", "Email",
            "MasterRecordId")


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_ddl(obj: SObject) -> list[str]:
    cols = []
    for f in obj.fields.values():
        decl = "TEXT NOT NULL UNIQUE" if f.name == "Id" else f.storage
        cols.append(f"{quote(f.name)} {decl}")
    if "IsDeleted" not in obj.fields:
        cols.append('"IsDeleted" INTEGER NOT NULL DEFAULT 0')
    stmts = [f"CREATE TABLE IF NOT EXISTS {quote(obj.name)} ({', '.join(cols)})"]
    for f in obj.fields.values():
        if f.name in _INDEXED or f.type == "reference" or f.external_id:
            stmts.append(index_ddl(obj.name, f.name))
    stmts.append(f"CREATE INDEX IF NOT EXISTS {quote('ix_' + obj.name + '_sync')} "
                 f"ON {quote(obj.name)} (SystemModstamp, Id)")
    return stmts


def index_ddl(table: str, column: str) -> str:
    return (f"CREATE INDEX IF NOT EXISTS {quote('ix_' + table + '_' + column)} "
            f"ON {quote(table)} ({quote(column)})")


def create_tables(db: sqlite3.Connection, schema: Schema) -> None:
    for obj in schema.objects.values():
        for stmt in table_ddl(obj):
            db.execute(stmt)

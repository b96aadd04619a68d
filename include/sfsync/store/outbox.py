"""The push outbox (``sfsync_outbox``): one row per synced row with local changes not yet in
Salesforce, folded from the captured changes (``sfsync_change``, see ``store.capture``).

Each entry keeps the changed columns, their base values (what Salesforce had when the first
change was made: a conflict is judged against it), its state (pending, failed, quarantined),
its attempts and a version that every fold bumps: a push that read an older version never
drops or overwrites changes folded after it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import sqlalchemy as sa
from more_itertools import chunked

from include.sfsync.store.capture import PG_LOCK, unpushed_in_tombstones
from include.sfsync.store.engine import UtcDateTime, utcnow
from include.sfsync.store.tables import change_t, outbox_t

PENDING, FAILED, QUARANTINED = "pending", "failed", "quarantined"


@dataclass
class OutboxEntry:
    table_name: str
    row_id: int
    op: str
    created: bool
    columns: list[str]
    base: dict
    sfdc_id: str | None
    status: str
    attempts: int = 0
    version: int = 0
    create_key: str | None = None
    create_body: dict | None = None  # set while a create's outcome is unknown (in doubt)
    create_sent_at: datetime | None = None

    @classmethod
    def of(cls, row) -> OutboxEntry:
        return cls(row.table_name, row.row_id, row.op, bool(row.created), json.loads(row.columns),
                   json.loads(row.base), row.sfdc_id, row.status, row.attempts, row.version,
                   row.create_key, json.loads(row.create_body) if row.create_body else None,
                   row.create_sent_at)

    @property
    def in_doubt(self) -> bool:
        """A create was sent and its outcome never came back (the worker died, the call
        failed): the record may exist in Salesforce."""
        return self.create_sent_at is not None


def fold(conn, table_names: Iterable[str]) -> int:
    """Move the captured, unprocessed changes of ``table_names`` into the outbox (in the
    caller's transaction). The first change of a column keeps its base value; a new change of
    a failed row makes it pending again. Returns how many changes were folded."""
    names = list(table_names)
    if conn.dialect.name == "postgresql":  # one folder per table at a time (SQLite: one writer)
        for name in sorted(names):
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k, hashtext(:t))"),
                         {"k": PG_LOCK, "t": name})
    changes = conn.execute(sa.select(change_t).where(
        change_t.c.table_name.in_(names), change_t.c.processed_at.is_(None))
        .order_by(change_t.c.id)).all()
    if not changes:
        return 0
    keys = sorted({(c.table_name, c.row_id) for c in changes})
    entries: dict[tuple[str, int], OutboxEntry] = {}
    for name in names:
        row_ids = [k[1] for k in keys if k[0] == name]
        for part in chunked(row_ids, 500):
            for row in conn.execute(sa.select(outbox_t).where(
                    outbox_t.c.table_name == name, outbox_t.c.row_id.in_(part))):
                entries[(name, row.row_id)] = OutboxEntry.of(row)
    known = set(entries)
    first_at: dict[tuple[str, int], datetime] = {}
    last_at: dict[tuple[str, int], datetime] = {}
    gone: set[tuple[str, int]] = set()
    unpushed: list[tuple[str, int, str, dict]] = []  # deleted rows' changes not pushed
    for c in changes:
        key = (c.table_name, c.row_id)
        first_at.setdefault(key, c.changed_at)
        last_at[key] = c.changed_at
        entry = entries.get(key)
        columns = [x for x in (c.columns or "").split(",") if x]
        if c.op == "delete":
            sfdc_id = json.loads(c.old_values or "{}").get("sfdc_id")
            if entry is not None and entry.created and not sfdc_id:
                entries.pop(key)  # created and deleted before it ever reached Salesforce
                gone.add(key)
                continue
            if entry is not None and entry.op == "upsert" and entry.base and sfdc_id:
                unpushed.append((c.table_name, c.row_id, sfdc_id, dict(entry.base)))
            entries[key] = OutboxEntry(c.table_name, c.row_id, "delete", False, [], {}, sfdc_id,
                                       PENDING, 0, entry.version if entry else 0)
            continue
        if entry is None or entry.op == "delete":
            entry = entries[key] = OutboxEntry(c.table_name, c.row_id, "upsert",
                                               c.op == "insert", [], {}, None, PENDING,
                                               entry.attempts if entry else 0,
                                               entry.version if entry else 0)
        old = json.loads(c.old_values or "{}")
        for col in columns:
            if col not in entry.columns:
                entry.columns.append(col)
                if c.op == "update" and not entry.created:
                    entry.base[col] = old.get(col)
        entry.columns.sort()
        if entry.status == FAILED:
            entry.status = PENDING  # the record changed again: worth another try
    now = utcnow()
    for key in gone & known:
        conn.execute(outbox_t.delete().where(outbox_t.c.table_name == key[0],
                                             outbox_t.c.row_id == key[1]))
    for key, entry in entries.items():
        if key not in first_at:
            continue
        values = {"op": entry.op, "created": entry.created, "columns": json.dumps(entry.columns),
                  "base": json.dumps(entry.base, default=str), "sfdc_id": entry.sfdc_id,
                  "status": entry.status, "attempts": entry.attempts,
                  "version": entry.version + 1, "changed_at": last_at[key],
                  "updated_at": now}
        where = (outbox_t.c.table_name == key[0], outbox_t.c.row_id == key[1])
        # the entry may have been dropped since it was read (a push finished): insert it again
        if key not in known or not conn.execute(outbox_t.update().where(*where).values(
                **values)).rowcount:
            conn.execute(outbox_t.insert().values(table_name=key[0], row_id=key[1],
                                                  first_changed_at=first_at[key], **values))
    for table_name, row_id, sfdc_id, base in unpushed:
        unpushed_in_tombstones(conn, table_name, row_id, sfdc_id, base)
    for part in chunked([c.id for c in changes], 500):
        conn.execute(change_t.update().where(change_t.c.id.in_(part)).values(processed_at=now))
    return len(changes)


def outbox_entries(conn, table_name: str, row_ids: Iterable[int] | None = None, *,
                   status: str | None = None) -> dict[int, OutboxEntry]:
    """Outbox rows of one table (of the given rows, or all), by row id."""
    query = sa.select(outbox_t).where(outbox_t.c.table_name == table_name)
    if status is not None:
        query = query.where(outbox_t.c.status == status)
    if row_ids is None:
        return {r.row_id: OutboxEntry.of(r) for r in conn.execute(query.order_by(
            outbox_t.c.first_changed_at, outbox_t.c.row_id))}
    out: dict[int, OutboxEntry] = {}
    for part in chunked(sorted(set(row_ids)), 500):
        for r in conn.execute(query.where(outbox_t.c.row_id.in_(part))):
            out[r.row_id] = OutboxEntry.of(r)
    return out


def _same_version(entry: OutboxEntry):
    return (outbox_t.c.table_name == entry.table_name, outbox_t.c.row_id == entry.row_id,
            outbox_t.c.version == entry.version)


def save_entry(conn, entry: OutboxEntry, **extra) -> bool:
    """Write back an entry's columns, base, status and attempts (and ``extra`` columns), unless
    a fold changed it since it was read (then the newer changes stand). True if written."""
    written = conn.execute(outbox_t.update().where(*_same_version(entry)).values(
        columns=json.dumps(sorted(entry.columns)), base=json.dumps(entry.base, default=str),
        status=entry.status, attempts=entry.attempts, version=entry.version + 1,
        updated_at=utcnow(), **extra)).rowcount == 1
    if written:
        entry.version += 1
    return written


def merge_rows(conn, table_name: str, loser_id: int, survivor_id: int, filled: dict) -> None:
    """The sync merged row ``loser_id`` into ``survivor_id`` and deleted it: the delete is not a
    change to push, the loser's outbox entry goes; ``filled`` (column -> the survivor's value
    before the merge, its base) become the survivor's changes to push."""
    conn.execute(change_t.update().where(
        change_t.c.table_name == table_name, change_t.c.row_id == loser_id,
        change_t.c.processed_at.is_(None)).values(processed_at=utcnow()))
    conn.execute(outbox_t.delete().where(outbox_t.c.table_name == table_name,
                                         outbox_t.c.row_id == loser_id))
    if not filled:
        return
    survivor = outbox_entries(conn, table_name, [survivor_id]).get(survivor_id)
    if survivor is None or survivor.op != "upsert":
        now = utcnow()
        conn.execute(outbox_t.delete().where(outbox_t.c.table_name == table_name,
                                             outbox_t.c.row_id == survivor_id))
        conn.execute(outbox_t.insert().values(
            table_name=table_name, row_id=survivor_id, op="upsert", created=False,
            columns=json.dumps(sorted(filled)), base=json.dumps(filled, default=str),
            status=PENDING, attempts=0, first_changed_at=now, changed_at=now, updated_at=now))
        return
    for col, before in filled.items():
        if col not in survivor.columns:
            survivor.columns.append(col)
            survivor.base[col] = before
    save_entry(conn, survivor)


def create_key(table_name: str, row_id: int) -> str:
    """The identity a created record carries in the org's key field: the table and row (an
    admin can tell where it came from) and a random part (ids a database reuses never match)."""
    return f"{table_name}:{row_id}:{secrets.token_hex(6)}"


def journal_creates(conn, table_name: str, sent: dict[int, tuple[str, dict]]) -> None:
    """Before a create is sent: per row id, its key and the fields about to be sent. Written
    whatever the entry's version (it records a call, not a change); commit it before sending."""
    now = utcnow()
    for row_id, (key, body) in sent.items():
        conn.execute(outbox_t.update().where(
            outbox_t.c.table_name == table_name, outbox_t.c.row_id == row_id).values(
            create_key=key, create_body=json.dumps(body, default=str), create_sent_at=now))


def settle_creates(conn, table_name: str, row_ids: Iterable[int]) -> None:
    """The creates of ``row_ids`` have a known outcome (made, or refused): no longer in doubt."""
    for part in chunked(sorted(set(row_ids)), 500):
        conn.execute(outbox_t.update().where(
            outbox_t.c.table_name == table_name, outbox_t.c.row_id.in_(part),
            outbox_t.c.create_sent_at.is_not(None)).values(create_sent_at=None, create_body=None))


def creates_in_doubt(conn, table_name: str) -> list[OutboxEntry]:
    """Entries of ``table_name`` whose create may have reached Salesforce unrecorded."""
    return [OutboxEntry.of(r) for r in conn.execute(sa.select(outbox_t).where(
        outbox_t.c.table_name == table_name, outbox_t.c.create_sent_at.is_not(None)))]


def drop_entry(conn, entry: OutboxEntry) -> None:
    """Done with the entry, unless a fold added changes since it was read (they stay)."""
    conn.execute(outbox_t.delete().where(*_same_version(entry)))


def stored_value(column: sa.Column, value):
    """A value from ``old_values`` JSON as the column reads it (SQLite and PostgreSQL keep
    booleans and timestamps differently in JSON)."""
    if value is None:
        return None
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return bool(value)
    if isinstance(kind, (UtcDateTime, sa.DateTime)):
        parsed = datetime.fromisoformat(str(value))
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if isinstance(kind, sa.Date):
        return date.fromisoformat(str(value)[:10])
    if isinstance(kind, (sa.Integer, sa.BigInteger)):
        return int(value)
    if isinstance(kind, (sa.Float, sa.Numeric)):
        return float(value)
    return value if isinstance(value, str) else str(value)


def count_pending(conn, table_name: str) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(outbox_t).where(
        outbox_t.c.table_name == table_name, outbox_t.c.status == PENDING)).scalar()


def backlog(conn) -> dict:
    """What waits for Salesforce: outbox rows by state, plus captured changes not folded yet
    (counted as pending), and when the oldest pending change was made."""
    by_state = dict(conn.execute(sa.select(outbox_t.c.status, sa.func.count())
                                 .group_by(outbox_t.c.status)).all())
    unfolded, unfolded_oldest = conn.execute(
        sa.select(sa.func.count(), sa.func.min(change_t.c.changed_at))
        .where(change_t.c.processed_at.is_(None))).one()
    oldest = conn.execute(sa.select(sa.func.min(outbox_t.c.first_changed_at))
                          .where(outbox_t.c.status == PENDING)).scalar()
    oldest = min((t for t in (oldest, unfolded_oldest) if t is not None), default=None)
    return {"pending": by_state.get(PENDING, 0) + unfolded, "failed": by_state.get(FAILED, 0),
            "quarantined": by_state.get(QUARANTINED, 0), "oldest_at": oldest}


def retry_undeleted(conn, table_name: str, row_ids: Iterable[int]) -> int:
    """Changes refused because the record was deleted in Salesforce become pending again once
    the pull loads its undelete (what the refusal told the user to do)."""
    ids = sorted(set(row_ids))
    if not ids:
        return 0
    return conn.execute(outbox_t.update().where(
        outbox_t.c.table_name == table_name, outbox_t.c.row_id.in_(ids),
        outbox_t.c.status != PENDING, outbox_t.c.last_error.like("ENTITY_IS_DELETED%"))
        .values(status=PENDING)).rowcount


def retry_rows(conn, table_name: str | None, row_ids: Iterable[int] | None = None, *,
               quarantined_only: bool = False) -> int:
    """Failed or quarantined changes (of one table's ``row_ids``, or all) become pending."""
    where = [outbox_t.c.status != PENDING]
    if table_name is not None:
        where.append(outbox_t.c.table_name == table_name)
    if row_ids is not None:
        where.append(outbox_t.c.row_id.in_(sorted(row_ids)))
    if quarantined_only:
        where.append(outbox_t.c.status == QUARANTINED)
    return conn.execute(outbox_t.update().where(*where).values(status=PENDING)).rowcount


def _first_change():
    return sa.func.coalesce(outbox_t.c.first_changed_at, outbox_t.c.changed_at,
                            outbox_t.c.updated_at)


def mark_stale(conn, older_than: datetime) -> int:
    """Flag (``stale_at``) the pending entries whose first change not yet in Salesforce was
    made before ``older_than``, and unflag those that no longer are (pushed entries are gone;
    one Salesforce refused is listed as such; a longer ``retention.stale_after_hours``).
    The flag is for the eye (``admin status``): a stale entry is still pushed every cycle, never
    dropped. Returns how many pending entries are stale now."""
    first = _first_change()
    conn.execute(outbox_t.update().where(
        outbox_t.c.status == PENDING, outbox_t.c.stale_at.is_(None), first < older_than)
        .values(stale_at=utcnow()))
    conn.execute(outbox_t.update().where(
        outbox_t.c.stale_at.is_not(None),
        sa.or_(outbox_t.c.status != PENDING, first.is_(None), first >= older_than))
        .values(stale_at=None))
    return conn.execute(sa.select(sa.func.count()).select_from(outbox_t).where(
        outbox_t.c.status == PENDING, outbox_t.c.stale_at.is_not(None))).scalar()


def stale_entries(conn, *, limit: int | None = None) -> tuple[int, list]:
    """(how many, the oldest ``limit``) pending entries flagged stale by :func:`mark_stale`:
    table, row, op, columns, attempts, last error, first change and when it was flagged."""
    stale = (outbox_t.c.status == PENDING, outbox_t.c.stale_at.is_not(None))
    count = conn.execute(sa.select(sa.func.count()).select_from(outbox_t).where(*stale)).scalar()
    rows = conn.execute(sa.select(
        outbox_t.c.table_name, outbox_t.c.row_id, outbox_t.c.op, outbox_t.c.columns,
        outbox_t.c.attempts, outbox_t.c.last_error,
        _first_change().label("first_changed_at"), outbox_t.c.stale_at)
        .where(*stale).order_by(_first_change(), outbox_t.c.table_name, outbox_t.c.row_id)
        .limit(limit)).all() if count else []
    return count, rows

"""Retention of the bookkeeping: what grows with every cycle is pruned once it is older than
the configuration's ``retention`` settings (issue 13, requirement 5), by the incremental DAG's
``maintain`` task (:func:`prune`).

Pruned, older than ``retention.days`` (30 by default):

* ``sfsync_change``: captured changes folded into the outbox that long ago (never one still
  waiting to be folded, and never the newest: SQLite gives a new row the highest id + 1, and
  ``sfsync_table_rows`` counts by id). A pruned change that ``sfsync_table_rows`` would still
  count (captured after its table's last count) is added to that count as it goes, so the
  check for rows lost without a trace (``capture.lost_rows``) gives the same answer after;
* ``sfsync_run`` of finished runs (success or failed) that ended that long ago, with their
  staging (``sfsync_stage``, ``sfsync_extract``) first, and never the latest run nor the latest
  successful one (``admin status``: *Last synced*); a run still running keeps everything;
* ``sfsync_error``, except the errors of changes still failed or quarantined in the outbox
  (the console's Errors page shows them with their first and last time) and of running runs;
* ``sfsync_conflict``; ``sfsync_duplicate`` findings that no longer hold (a person of the pair
  deleted or gone; the dedupe check removes the others as people change, and a finding that
  still holds stays, however old);
* ``sfsync_seen`` entries of an object that are that old and more than a day (the largest
  overlap window) behind its cursor: the loads forget them as the window moves, but not for an
  object that no longer loads.

``sfsync_count`` is kept ``retention.count_days`` (400): the history of New / Updated /
Deleted per object outlives the runs. Kept whatever their age, as they are state rather than
history: the outbox, tombstones, watermarks, the data dictionary, describes, the org lock,
initial-copy windows, table row counts and ``sfsync_merge`` (the push moves rows that other
writers add later for a merged-away person to the survivor by it).

Every batch deletes at most ``retention.batch_size`` rows of one table in its own short
transaction, so the cycles' loads and pushes never wait long. When nothing is old, each table
costs one read of its oldest row by an index, and nothing is written.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from itertools import takewhile
from typing import TYPE_CHECKING

import sqlalchemy as sa
from more_itertools import chunked
from sqlalchemy.engine import Connection, Engine

from include.sfsync.store.engine import reader, utcnow
from include.sfsync.store.outbox import PENDING, outbox_t
from include.sfsync.store.tables import BOOKS, ensure_bookkeeping

if TYPE_CHECKING:
    from include.sfsync.config import Retention

# What prune() reports, in this order: the tables it prunes.
PRUNED = ("sfsync_change", "sfsync_stage", "sfsync_extract", "sfsync_run", "sfsync_error",
          "sfsync_count", "sfsync_conflict", "sfsync_duplicate", "sfsync_seen")
LARGEST_OVERLAP = timedelta(seconds=86_400)  # the most config.overlap_seconds allows
_IDS_PER_STATEMENT = 500  # bound parameters of one IN list (SQLite's limit is far above)
_STEP = {"insert": 1, "delete": -1}  # what a captured change did to its table's row count


def prune(engine: Engine, settings: Retention, *, now: datetime | None = None
          ) -> dict[str, int]:
    """Delete the bookkeeping older than ``settings`` allow; rows deleted per table."""
    ensure_bookkeeping(engine)
    now = now or utcnow()
    cutoff = now - timedelta(days=settings.days)
    batch = settings.batch_size
    pruned = dict.fromkeys(PRUNED, 0)
    pruned["sfsync_change"] = _changes(engine, cutoff, batch)
    # staging first, then the run: a crash in between leaves a run without staging (a retry
    # of it probes again), never staging whose run is gone
    pruned.update(_runs(engine, cutoff, batch))
    pruned["sfsync_error"] = _log(engine, BOOKS["error"], BOOKS["error"].c.created_at, cutoff,
                                  batch, keep=_errors_needed())
    pruned["sfsync_count"] = _counts(engine, now - timedelta(days=settings.count_days), batch)
    pruned["sfsync_conflict"] = _log(engine, BOOKS["conflict"], BOOKS["conflict"].c.detected_at,
                                     cutoff, batch)
    pruned["sfsync_duplicate"] = _log(engine, BOOKS["duplicate"],
                                      BOOKS["duplicate"].c.detected_at, cutoff, batch,
                                      keep=_findings_that_hold)
    pruned["sfsync_seen"] = _seen(engine, cutoff, batch)
    return pruned


# --- append-only logs: integer ids in the order rows were added --------------------------------

Keep = Callable[[Connection, list], set[int]]


def _log(engine: Engine, table: sa.Table, stamp: sa.Column, cutoff: datetime, batch: int, *,
         keep: Keep | None = None) -> int:
    """Delete the rows of a log stamped before ``cutoff``, oldest first, except those ``keep``
    names (and those without a stamp). Rows are stamped as they are added, so their ids follow
    time: the walk goes up the ids and stops at the first row stamped since ``cutoff``. The
    newest row always stays, so that ids never go back (SQLite: the highest id + 1)."""
    id_ = table.c.id
    with reader(engine).connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(id_))).scalar()
        first = conn.execute(sa.select(id_, stamp.label("stamp")).order_by(id_).limit(1)).first()
    if first is None or first.id >= newest or not _before(first.stamp, cutoff, undated=True):
        return 0  # the usual answer: one read of each end of the primary key
    deleted, after = 0, None
    while True:
        with reader(engine).connect() as conn:
            query = sa.select(id_, stamp.label("stamp")).where(id_ < newest).order_by(id_) \
                .limit(batch)
            if after is not None:
                query = query.where(id_ > after)
            rows = conn.execute(query).all()  # narrow: ids and stamps, in primary-key order
            old = list(takewhile(lambda r: _before(r.stamp, cutoff, undated=True), rows))
            dated = [r.id for r in old if r.stamp is not None]
            kept = set()
            if keep and dated:  # what keep() looks at, of these rows only
                for part in chunked(dated, _IDS_PER_STATEMENT):
                    kept |= keep(conn, conn.execute(sa.select(table).where(id_.in_(part))).all())
        doomed = [i for i in dated if i not in kept]
        if doomed:
            with engine.begin() as conn:  # rows of a log never change: delete what was read
                for part in chunked(doomed, _IDS_PER_STATEMENT):
                    deleted += conn.execute(table.delete().where(id_.in_(part))).rowcount
        if not old or len(old) < len(rows) or len(rows) < batch:
            return deleted
        after = old[-1].id


def _before(value: datetime | None, cutoff: datetime, *, undated: bool = False) -> bool:
    return undated if value is None else value < cutoff


def _errors_needed() -> Keep:
    """Errors to keep: those of changes still failed or quarantined in the outbox (matched by
    the record's Salesforce id, or by the local row a new record's error names) and of runs
    still running. Read once, when the first old errors are met."""
    known: dict[str, set] = {}

    def keep(conn: Connection, rows: list) -> set[int]:
        if not known:
            known["ids"], known["rows"] = _rejected(conn)
            run_t = BOOKS["run"]
            known["running"] = set(conn.execute(sa.select(run_t.c.run_key).where(
                run_t.c.status == "running")).scalars())
        kept = set()
        for r in rows:
            if r.sfdc_id in known["ids"] or r.run_key in known["running"] \
                    or _local_row(r.record) in known["rows"]:
                kept.add(r.id)
        return kept

    return keep


def _rejected(conn: Connection) -> tuple[set[str], set[tuple[str, int]]]:
    """The Salesforce ids and (table, row id) of the changes Salesforce refused that still wait
    in the outbox (failed or quarantined)."""
    rows = conn.execute(sa.select(outbox_t.c.table_name, outbox_t.c.row_id, outbox_t.c.sfdc_id)
                        .where(outbox_t.c.status != PENDING)).all()
    local = {(r.table_name, r.row_id) for r in rows}
    ids = {r.sfdc_id for r in rows if r.sfdc_id}
    inspector = sa.inspect(conn)
    present = set(inspector.get_table_names())
    for name in sorted({t for t, _ in local} & present):
        columns = [c["name"] for c in inspector.get_columns(name)
                   if c["name"] in ("sfdc_id", "sfdc_lead_id", "sfdc_contact_id")]
        if not columns:
            continue
        table = sa.table(name, sa.column("id"), *[sa.column(c) for c in columns])
        for part in chunked(sorted(i for t, i in local if t == name), _IDS_PER_STATEMENT):
            for row in conn.execute(sa.select(*[table.c[c] for c in columns])
                                    .where(table.c.id.in_(part))):
                ids.update(v for v in row if v)
    return ids, local


def _local_row(record: str | None) -> tuple[str, int] | None:
    """The (table, row id) a push error's record names (``push.base.Push.fail``)."""
    try:
        found = json.loads(record) if record else None
    except ValueError:
        return None
    if not isinstance(found, dict) or "table" not in found or "row_id" not in found:
        return None
    return found["table"], found["row_id"]


def _findings_that_hold(conn: Connection, rows: list) -> set[int]:
    """Duplicate findings whose two people are both still there and not deleted."""
    if not sa.inspect(conn).has_table("person"):
        return set()
    person = sa.table("person", sa.column("id"), sa.column("sfdc_is_deleted", sa.Boolean))
    deleted = person.c.sfdc_is_deleted
    people = sorted({r.person_id for r in rows} | {r.duplicate_of_person_id for r in rows})
    live = set()
    for part in chunked(people, _IDS_PER_STATEMENT):
        live.update(conn.execute(sa.select(person.c.id).where(
            person.c.id.in_(part), sa.or_(deleted.is_(None), deleted.is_(False)))).scalars())
    return {r.id for r in rows if r.person_id in live and r.duplicate_of_person_id in live}


# --- captured changes -----------------------------------------------------------------------

def _changes(engine: Engine, cutoff: datetime, batch: int) -> int:
    """Captured changes folded before ``cutoff``, oldest first. The walk stops at the first
    change not folded that long ago (changes are folded in id order: a change still waiting
    holds back the ones after it, which keeps every deleted range whole)."""
    change_t = BOOKS["change"]
    id_ = change_t.c.id
    with reader(engine).connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(id_))).scalar()
        first = conn.execute(sa.select(id_, change_t.c.processed_at)
                             .order_by(id_).limit(1)).first()
    if first is None or first.id >= newest or not _before(first.processed_at, cutoff):
        return 0
    deleted, after = 0, None
    while True:
        with engine.begin() as conn:
            query = sa.select(id_, change_t.c.table_name, change_t.c.op,
                              change_t.c.processed_at).where(id_ < newest).order_by(id_) \
                .limit(batch)
            if after is not None:
                query = query.where(id_ > after)
            rows = conn.execute(query).all()
            old = list(takewhile(lambda r: _before(r.processed_at, cutoff), rows))
            if not old:
                return deleted
            _count_into_marks(conn, old)
            for part in chunked([r.id for r in old], _IDS_PER_STATEMENT):
                deleted += conn.execute(change_t.delete().where(id_.in_(part))).rowcount
        if len(old) < len(rows) or len(rows) < batch:
            return deleted
        after = old[-1].id


def _count_into_marks(conn: Connection, rows: list) -> None:
    """Before the changes ``rows`` (every change up to the last of them) are deleted: each
    table's ``sfsync_table_rows`` mark moves past them, its row count taking the inserts and
    deletes among them it counted as captured since (``capture.lost_rows``: the expected count
    stays the same). A mark a load replaced meanwhile (its count taken later, its change id past
    these) is left alone."""
    marks_t = BOOKS["table_rows"]
    last = rows[-1].id
    marks = dict(conn.execute(sa.select(marks_t.c.table_name, marks_t.c.change_id)).all())
    steps = Counter()
    for r in rows:
        mark = marks.get(r.table_name)
        if mark is not None and r.id > mark:
            steps[r.table_name] += _STEP.get(r.op, 0)
    for name, mark in marks.items():
        if mark < last:
            conn.execute(marks_t.update().where(
                marks_t.c.table_name == name, marks_t.c.change_id == mark).values(
                row_count=marks_t.c.row_count + steps[name], change_id=last))


# --- runs and their staging -------------------------------------------------------------------

def _runs(engine: Engine, cutoff: datetime, batch: int) -> dict[str, int]:
    run_t, stage_t, extract_t = BOOKS["run"], BOOKS["stage"], BOOKS["extract"]
    out = {"sfsync_stage": 0, "sfsync_extract": 0, "sfsync_run": 0}
    with reader(engine).connect() as conn:
        keep = {key for key in (
            conn.execute(sa.select(run_t.c.run_key).order_by(run_t.c.started_at.desc())
                         .limit(1)).scalar(),
            conn.execute(sa.select(run_t.c.run_key).where(run_t.c.status == "success")
                         .order_by(run_t.c.ended_at.desc()).limit(1)).scalar()) if key}
    finished = [run_t.c.started_at < cutoff, run_t.c.status != "running",
                sa.func.coalesce(run_t.c.ended_at, run_t.c.started_at) < cutoff,
                run_t.c.run_key.not_in(sorted(keep))]
    while True:
        with reader(engine).connect() as conn:
            keys = list(conn.execute(sa.select(run_t.c.run_key).where(*finished).order_by(
                run_t.c.started_at, run_t.c.run_key).limit(min(batch, _IDS_PER_STATEMENT)))
                .scalars())
        if not keys:
            return out
        # still finished as each batch goes (a cleared Airflow run starts again, same key)
        ended = sa.select(run_t.c.run_key).where(run_t.c.run_key.in_(keys), *finished)
        out["sfsync_stage"] += _batches(engine, stage_t, [stage_t.c.run_key.in_(ended)],
                                        batch, probe=False)
        out["sfsync_extract"] += _batches(engine, extract_t, [extract_t.c.run_key.in_(ended)],
                                          batch, probe=False)
        with engine.begin() as conn:
            out["sfsync_run"] += conn.execute(run_t.delete().where(
                run_t.c.run_key.in_(keys), *finished)).rowcount


def _batches(engine: Engine, table: sa.Table, where: Iterable, batch: int, *,
             probe: bool = True) -> int:
    """Delete ``table``'s rows matching ``where``, ``batch`` at a time by primary key, each
    batch its own transaction; with ``probe``, first look whether there is any (a read)."""
    where = list(where)
    key = sa.tuple_(*table.primary_key.columns)
    if probe:
        with reader(engine).connect() as conn:
            if conn.execute(sa.select(sa.literal(1)).where(*where).limit(1)).first() is None:
                return 0
    deleted = 0
    while True:
        with engine.begin() as conn:
            n = conn.execute(table.delete().where(key.in_(
                sa.select(*table.primary_key.columns).where(*where).limit(batch)))).rowcount
        deleted += n
        if n < batch:
            return deleted


def _counts(engine: Engine, cutoff: datetime, batch: int) -> int:
    """Counts recorded before ``cutoff`` (by their index), not of a run still running."""
    count_t, run_t = BOOKS["count"], BOOKS["run"]
    return _batches(engine, count_t, [
        count_t.c.recorded_at < cutoff,
        count_t.c.run_key.not_in(sa.select(run_t.c.run_key).where(run_t.c.status == "running"))],
        batch)


# --- records the loads processed in the overlap window ----------------------------------------

def _seen(engine: Engine, cutoff: datetime, batch: int) -> int:
    seen_t, mark_t = BOOKS["seen"], BOOKS["watermark"]
    with reader(engine).connect() as conn:
        cursors = dict(conn.execute(sa.select(mark_t.c.sf_object, mark_t.c.cursor_modstamp)).all())
        objects = list(conn.execute(sa.select(seen_t.c.sf_object).distinct()).scalars())
    deleted = 0
    for sf_object in sorted(objects):
        bound = cutoff
        if cursors.get(sf_object) is not None:
            bound = min(bound, cursors[sf_object] - LARGEST_OVERLAP)
        deleted += _batches(engine, seen_t, [seen_t.c.sf_object == sf_object,
                                             seen_t.c.stamp < bound], batch)
    return deleted

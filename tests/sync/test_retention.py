"""Issue 13, requirement 5, retention: bookkeeping older than ``retention.days`` (counts:
``retention.count_days``) is pruned by the maintenance step in small batches, never what an
unfinished run or a change still waiting for Salesforce needs; a pending change older than
``retention.stale_after_hours`` is flagged stale and shown by ``admin status``, and still
pushed. Engine-level tests on SQLite and PostgreSQL, and one incremental cycle against the
emulator."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from include.sfsync import admin, pipeline
from include.sfsync.config import Retention, load_config
from include.sfsync.context import SyncContext
from include.sfsync.maintenance import keep_books
from include.sfsync.report import result_table
from include.sfsync.store import capture, outbox, retention
from include.sfsync.store.engine import utcnow
from include.sfsync.store.tables import BOOKS, ensure_bookkeeping
from tests.sync.test_pull import Sync

pytestmark = pytest.mark.integration

NOW = utcnow()
OLD = NOW - timedelta(days=40)  # past retention.days (30)
RECENT = NOW - timedelta(days=2)
VERY_OLD = NOW - timedelta(days=401)  # past retention.count_days (400)
DEFAULTS = Retention()
NOTHING = dict.fromkeys(retention.PRUNED, 0)


@pytest.fixture
def engine(marketing_db):
    ensure_bookkeeping(marketing_db.engine)
    with marketing_db.engine.begin() as conn:  # the synced table the outbox and findings name
        conn.execute(sa.text("CREATE TABLE person (id INTEGER PRIMARY KEY, email TEXT, "
                             "sfdc_lead_id TEXT, sfdc_contact_id TEXT, sfdc_is_deleted BOOLEAN)"))
    return marketing_db.engine


def add(engine, table: str, *rows: dict) -> None:
    with engine.begin() as conn:
        conn.execute(BOOKS[table].insert(), list(rows))


def keys(engine, table: str, *columns: str) -> set:
    t = BOOKS[table]
    cols = [t.c[c] for c in columns] or list(t.primary_key.columns)
    with engine.connect() as conn:
        return {r[0] if len(r) == 1 else tuple(r) for r in conn.execute(sa.select(*cols))}


def snapshot(engine) -> dict[str, list[tuple]]:
    """Every bookkeeping table's rows, and the person table's."""
    out = {}
    with engine.connect() as conn:
        for name, t in BOOKS.items():
            out[name] = [tuple(r) for r in conn.execute(
                sa.select(t).order_by(*t.primary_key.columns))]
        out["person"] = [tuple(r) for r in conn.execute(sa.text("SELECT * FROM person ORDER BY id"))]
    return out


def run(key: str, status: str, at, kind: str = "incremental") -> dict:
    return {"run_key": key, "dag_id": "salesforce_incremental_sync", "kind": kind,
            "status": status, "started_at": at,
            "ended_at": None if status == "running" else at + timedelta(minutes=1)}


def staging(engine, run_key: str, rows: int) -> None:
    add(engine, "extract", *[{"run_key": run_key, "sf_object": o, "status": "extracted",
                              "updated_at": NOW} for o in ("Lead", "Contact")])
    add(engine, "stage", *[{"run_key": run_key, "sf_object": "Lead", "seq": i,
                            "record": "{}"} for i in range(rows)])


def error(run_key: str, at, *, sfdc_id=None, local=None, code="FIELD_CUSTOM_VALIDATION_EXCEPTION"
          ) -> dict:
    record = {"LastName": "X", **({"table": local[0], "row_id": local[1]} if local else {})}
    return {"run_key": run_key, "sf_object": "Lead", "direction": "push", "sfdc_id": sfdc_id,
            "error_code": code, "message": "no", "record": json.dumps(record), "created_at": at}


def change(row_id: int, op: str, processed_at, changed_at=None, table: str = "person") -> dict:
    return {"table_name": table, "row_id": row_id, "op": op, "columns": "email",
            "old_values": "{}", "changed_at": changed_at or processed_at or NOW,
            "processed_at": processed_at}


def entry(row_id: int, status: str, first_changed_at, *, last_error=None, table="person") -> dict:
    return {"table_name": table, "row_id": row_id, "op": "upsert", "created": False,
            "columns": '["email"]', "base": "{}", "status": status, "attempts": 1,
            "last_error": last_error, "first_changed_at": first_changed_at,
            "changed_at": first_changed_at, "updated_at": first_changed_at}


def count(run_key: str, sf_object: str, at) -> dict:
    return {"run_key": run_key, "sf_object": sf_object, "operation": "pull", "new": 1,
            "recorded_at": at}


def fill(engine) -> None:
    """Old and recent bookkeeping of every kind retention looks at."""
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO person (id, email, sfdc_lead_id, sfdc_contact_id, sfdc_is_deleted) "
            "VALUES (1, 'a@x.org', '00Q000000000001AAA', NULL, false), "
            "(2, 'a@x.org', NULL, '003000000000002AAA', false), "
            "(3, 'b@x.org', '00Q000000000003AAA', NULL, true), "
            "(4, 'b@x.org', '00Q000000000004AAA', NULL, false), "
            "(5, 'c@x.org', '00Q000000000005AAA', NULL, false)"))
    add(engine, "run", run("old-success", "success", OLD), run("old-failed", "failed", OLD),
        run("old-running", "running", OLD), run("recent", "success", RECENT),
        run("latest", "failed", NOW - timedelta(minutes=5)))
    staging(engine, "old-failed", 7)  # a failed run's staging stays until retention
    staging(engine, "old-running", 3)
    staging(engine, "recent", 2)
    add(engine, "error",
        *[error("old-success", OLD) for _ in range(3)],
        error("old-success", OLD, sfdc_id="00Q000000000001AAA"),  # person 1: quarantined
        error("old-failed", OLD, local=("person", 2)),  # person 2 (contact): failed, new record
        error("old-failed", OLD, sfdc_id="00Q000000000005AAA"),  # person 5: pending again
        error("old-running", OLD),
        error("recent", RECENT), error("latest", NOW))
    add(engine, "outbox", entry(1, "quarantined", OLD, last_error="FIELD_CUSTOM_VALIDATION"),
        entry(2, "failed", OLD), entry(5, "pending", RECENT))
    add(engine, "count", count("ancient", "Lead", VERY_OLD), count("old-success", "Lead", OLD),
        count("recent", "Lead", RECENT), count("old-running", "Contact", VERY_OLD))
    add(engine, "change", *[change(1, "update", OLD) for _ in range(5)],
        change(1, "update", RECENT), change(2, "update", None, OLD), change(1, "update", OLD))
    add(engine, "conflict", *[{"table_name": "person", "row_id": 1, "column_name": "email",
                               "winner": "marketing", "detected_at": at}
                              for at in (OLD, OLD, RECENT)])
    add(engine, "duplicate",
        {"rule": "same_email", "person_id": 2, "duplicate_of_person_id": 1, "detected_at": OLD},
        {"rule": "same_email", "person_id": 4, "duplicate_of_person_id": 3, "detected_at": OLD},
        {"rule": "gone", "person_id": 9, "duplicate_of_person_id": 1, "detected_at": RECENT})
    add(engine, "merge", {"loser_person_id": 7, "survivor_person_id": 1, "merged_at": OLD})
    add(engine, "watermark", {"sf_object": "Lead", "cursor_modstamp": NOW},
        {"sf_object": "Stuck__c", "cursor_modstamp": OLD})
    add(engine, "seen", {"sf_object": "Lead", "sfdc_id": "old", "stamp": OLD},
        {"sf_object": "Lead", "sfdc_id": "new", "stamp": NOW - timedelta(minutes=3)},
        {"sf_object": "Gone__c", "sfdc_id": "old", "stamp": OLD},
        {"sf_object": "Stuck__c", "sfdc_id": "near", "stamp": OLD - timedelta(hours=1)},
        {"sf_object": "Stuck__c", "sfdc_id": "far", "stamp": OLD - timedelta(days=2)})
    add(engine, "tombstone", {"table_name": "person", "sfdc_id": "00Q000000000009AAA",
                              "deleted_at": OLD})


def test_old_bookkeeping_is_pruned_and_the_rest_kept(engine):
    fill(engine)
    before = snapshot(engine)
    pruned = retention.prune(engine, DEFAULTS)
    assert pruned == {**NOTHING, "sfsync_change": 5, "sfsync_stage": 7, "sfsync_extract": 2,
                      "sfsync_run": 2, "sfsync_error": 4, "sfsync_count": 1,
                      "sfsync_conflict": 2, "sfsync_duplicate": 1, "sfsync_seen": 3}
    assert "Pruned: sfsync_change 5, sfsync_stage 7, sfsync_extract 2, sfsync_run 2, " \
        "sfsync_error 4, sfsync_count 1, sfsync_conflict 2, sfsync_duplicate 1, sfsync_seen 3" \
        in result_table({"recopied": {}, "api_calls": 0, "pruned": pruned, "stale": 0})
    # finished runs that old go with their staging; a running one keeps everything
    assert keys(engine, "run") == {"old-running", "recent", "latest"}
    assert keys(engine, "stage", "run_key") == {"old-running", "recent"}
    assert keys(engine, "extract", "run_key") == {"old-running", "recent"}
    # errors of changes still failed or quarantined stay (by Salesforce id, by local row), and
    # those of a running run; the one of a change pending again goes
    assert keys(engine, "error", "run_key", "sfdc_id") == {
        ("old-success", "00Q000000000001AAA"), ("old-failed", None), ("old-running", None),
        ("recent", None), ("latest", None)}
    # counts: 400 days, not of a running run
    assert keys(engine, "count", "run_key") == {"old-success", "recent", "old-running"}
    # captured changes: folded 40 days ago go, up to the first one not folded that long ago
    assert [(r[0], r[1]) for r in sorted(keys(engine, "change", "id", "processed_at"))] == [
        (6, RECENT), (7, None), (8, OLD)]
    assert len(keys(engine, "conflict")) == 1
    # a finding whose person was deleted goes; one that holds stays, however old
    assert keys(engine, "duplicate", "person_id") == {2, 9}
    # seen: old and a day behind the object's cursor (an object that no longer loads too)
    assert keys(engine, "seen") == {("Lead", "new"), ("Stuck__c", "near")}
    after = snapshot(engine)
    for name in ("outbox", "tombstone", "merge", "watermark", "table_rows", "copy_window"):
        assert after[name] == before[name], name  # state, not history: kept whatever its age


def test_a_second_prune_changes_nothing(engine):
    fill(engine)
    assert any(retention.prune(engine, DEFAULTS).values())
    once = snapshot(engine)
    assert retention.prune(engine, DEFAULTS) == NOTHING
    assert snapshot(engine) == once
    config = load_config()
    ctx = SyncContext(config, engine, None, {}, BOOKS)
    first = keep_books(ctx)
    marked = snapshot(engine)
    assert keep_books(ctx) == first and first["pruned"] == NOTHING
    assert snapshot(engine) == marked


def test_nothing_old_is_one_read_per_table_and_no_write(engine):
    add(engine, "run", run("recent", "success", RECENT))
    add(engine, "error", *[error("recent", RECENT) for _ in range(3)])
    add(engine, "change", *[change(1, "update", RECENT) for _ in range(3)])
    add(engine, "count", count("recent", "Lead", RECENT))
    statements = []

    def note(conn, cursor, statement, *args):
        statements.append(" ".join(statement.split()[:2]).upper())

    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        assert retention.prune(engine, DEFAULTS) == NOTHING
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)
    reads = [s for s in statements if s != "BEGIN"]  # SQLite: a writer says BEGIN IMMEDIATE
    assert reads and all(s.startswith("SELECT") for s in reads), statements
    assert len(reads) <= 16, reads


def test_pruning_goes_in_small_batches_each_its_own_transaction(engine):
    add(engine, "run", *[run(f"old-{i:02}", "failed", OLD + timedelta(minutes=i))
                         for i in range(8)], run("recent", "success", RECENT))
    for i in range(8):
        staging(engine, f"old-{i:02}", 4)
    add(engine, "error", *[error("old-00", OLD + timedelta(seconds=i)) for i in range(10)],
        error("recent", RECENT))
    add(engine, "change", *[change(1, "update", OLD) for _ in range(11)],
        change(1, "update", RECENT))
    add(engine, "count", *[count(f"old-{i:02}", o, VERY_OLD) for i in range(8)
                           for o in ("Lead", "Contact")], count("recent", "Lead", RECENT))
    add(engine, "conflict", *[{"table_name": "person", "row_id": 1, "column_name": "email",
                               "winner": "marketing", "detected_at": OLD} for _ in range(7)],
        {"table_name": "person", "row_id": 1, "column_name": "email", "winner": "salesforce",
         "detected_at": RECENT})
    transactions: list[Counter] = []
    current = Counter()

    def deleted(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("DELETE FROM") and cursor.rowcount > 0:
            current[statement.split()[2].strip('"')] += cursor.rowcount

    def committed(conn):
        if current:
            transactions.append(Counter(current))
        current.clear()

    sa.event.listen(engine, "after_cursor_execute", deleted)
    sa.event.listen(engine, "commit", committed)
    try:
        pruned = retention.prune(engine, Retention(batch_size=3))
    finally:
        sa.event.remove(engine, "after_cursor_execute", deleted)
        sa.event.remove(engine, "commit", committed)
    assert pruned == {**NOTHING, "sfsync_change": 11, "sfsync_stage": 32, "sfsync_extract": 16,
                      "sfsync_run": 8, "sfsync_error": 10, "sfsync_count": 16,
                      "sfsync_conflict": 7}
    for done in transactions:  # one table per batch, at most batch_size rows
        assert len(done) == 1 and sum(done.values()) <= 3, done
    batches = Counter(table for done in transactions for table in done)
    assert batches["sfsync_change"] >= 4 and batches["sfsync_error"] >= 4
    assert batches["sfsync_stage"] >= 11 and batches["sfsync_count"] >= 6
    assert batches["sfsync_run"] >= 3 and batches["sfsync_conflict"] >= 3
    assert keys(engine, "run") == {"recent"} and keys(engine, "stage") == set()
    assert keys(engine, "error", "run_key") == {"recent"}
    assert keys(engine, "count", "run_key") == {"recent"}
    assert len(keys(engine, "change")) == 1 and len(keys(engine, "conflict")) == 1
    assert retention.prune(engine, Retention(batch_size=3)) == NOTHING


def test_an_unfinished_run_and_waiting_changes_keep_what_they_need(engine):
    add(engine, "run", run("stuck", "running", VERY_OLD),
        run("latest-success", "success", OLD), run("latest", "failed", OLD + timedelta(hours=1)))
    staging(engine, "stuck", 5)
    staging(engine, "latest-success", 1)
    add(engine, "error", error("stuck", VERY_OLD), error("stuck", VERY_OLD), error("x", NOW))
    add(engine, "count", count("stuck", "Lead", VERY_OLD), count("x", "Lead", NOW))
    # not folded yet: whatever their age, and everything captured after them waits too
    add(engine, "change", change(1, "update", None, VERY_OLD), change(1, "update", OLD),
        change(2, "delete", OLD), change(3, "update", RECENT))
    add(engine, "outbox", entry(1, "pending", VERY_OLD), entry(2, "quarantined", VERY_OLD))
    before = snapshot(engine)
    assert retention.prune(engine, DEFAULTS) == NOTHING
    # the latest run and the latest successful one stay (admin status: Last synced), however old
    assert snapshot(engine) == before
    with engine.connect() as conn:
        assert set(outbox.outbox_entries(conn, "person")) == {1, 2}


def test_pruned_changes_leave_the_check_for_lost_rows_as_it_was(engine):
    """``sfsync_table_rows`` counts a table's rows with the captured inserts and deletes since:
    the ones pruned are counted into it, so a lost row is still found, and no other."""
    with engine.begin() as conn:
        for i in range(1, 11):
            conn.execute(sa.text("INSERT INTO person (id, email) VALUES (:i, 'p')"), {"i": i})
        capture.record_rows(conn, "person")
    with engine.begin() as conn:  # other writers since: 3 inserts, 2 deletes, an update
        for i in (11, 12, 13):
            conn.execute(sa.text("INSERT INTO person (id, email) VALUES (:i, 'p')"), {"i": i})
        conn.execute(sa.text("DELETE FROM person WHERE id IN (1, 2)"))
    add(engine, "change", change(11, "insert", OLD), change(12, "insert", OLD),
        change(1, "delete", OLD), change(13, "insert", OLD), change(2, "delete", OLD),
        change(3, "update", OLD), change(13, "update", RECENT))
    with engine.connect() as conn:
        assert capture.lost_rows(conn, "person") is None
    assert retention.prune(engine, Retention(batch_size=4))["sfsync_change"] == 6
    with engine.begin() as conn:
        assert capture.lost_rows(conn, "person") is None
        mark = conn.execute(sa.select(BOOKS["table_rows"])).one()
        assert (mark.row_count, mark.change_id) == (11, 6)
        conn.execute(sa.text("DELETE FROM person WHERE id = 5"))  # lost without a trace
    with engine.connect() as conn:
        assert capture.lost_rows(conn, "person") == (11, 10)


def test_a_pending_change_too_old_is_flagged_stale_shown_and_still_pushed(engine, capsys):
    add(engine, "outbox",
        entry(1, "pending", NOW - timedelta(hours=30),
              last_error="UNABLE_TO_LOCK_ROW: unable to obtain exclusive access"),
        entry(2, "pending", NOW - timedelta(hours=2)),
        entry(3, "failed", NOW - timedelta(days=3), last_error="INVALID_EMAIL_ADDRESS: no"),
        entry(4, "pending", NOW - timedelta(days=3)))
    ctx = SyncContext(load_config(), engine, None, {}, BOOKS)
    result = keep_books(ctx)
    assert result == {"pruned": NOTHING, "stale": 2}
    assert "Stale pending changes: 2" in result_table({"api_calls": 0, **result})
    with engine.connect() as conn:
        flagged = dict(conn.execute(sa.select(outbox.outbox_t.c.row_id,
                                              outbox.outbox_t.c.stale_at)).all())
        # flagged, not dropped, and still what the push sends
        assert set(outbox.outbox_entries(conn, "person", status=outbox.PENDING)) == {1, 2, 4}
    assert {i for i, at in flagged.items() if at is not None} == {1, 4}

    assert admin.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "Stale: 2 pending change(s)" in out, out
    lines = [line.strip() for line in out.splitlines()]
    assert lines.index(next(x for x in lines if x.startswith("person 4: upsert"))) < \
        lines.index(next(x for x in lines if x.startswith("person 1: upsert")))  # oldest first
    assert "last error: UNABLE_TO_LOCK_ROW: unable to obtain exclusive access" in out
    assert "person 2:" not in out and "person 3:" not in out
    assert admin.main(["outbox", "--all"]) == 0
    assert "person 1: pending (stale)" in capsys.readouterr().out

    assert keep_books(ctx) == result  # idempotent: the flags keep their time
    with engine.connect() as conn:
        assert dict(conn.execute(sa.select(outbox.outbox_t.c.row_id,
                                           outbox.outbox_t.c.stale_at)).all()) == flagged
    # a longer setting unflags what is no longer that old; a refused change is listed as such
    ctx.config = load_config(overrides={"retention": {"stale_after_hours": 48}})
    with engine.begin() as conn:
        conn.execute(outbox.outbox_t.update().where(outbox.outbox_t.c.row_id == 4)
                     .values(status="quarantined"))
    assert keep_books(ctx)["stale"] == 0
    with engine.connect() as conn:
        assert conn.execute(sa.select(outbox.outbox_t.c.row_id).where(
            outbox.outbox_t.c.stale_at.is_not(None))).all() == []
    assert admin.main(["status"]) == 0
    assert "Stale" not in capsys.readouterr().out


def test_retention_settings_are_checked():
    assert load_config().retention == Retention(days=30, count_days=400, stale_after_hours=24,
                                                batch_size=5000)
    for bad in ({"days": 0}, {"days": 3}, {"count_days": 0}, {"stale_after_hours": 0},
                {"batch_size": 0}, {"keep": 1}):
        with pytest.raises(Exception, match=f"retention.{next(iter(bad))}"):
            load_config(overrides={"retention": bad})


@pytest.fixture
def sync(org, marketing_db):
    return Sync(org, marketing_db)


def test_an_incremental_cycle_prunes_old_bookkeeping_without_an_api_call(sync):
    engine = sync.mdb.engine
    sync.cycle("copy")
    sync.advance(600)
    sync.cycle("settle")
    sync.advance(600)
    add(engine, "run", run("old", "failed", OLD))
    staging(engine, "old", 3)
    add(engine, "error", *[error("old", OLD) for _ in range(4)], error("settle", NOW))
    add(engine, "change", *[change(1, "update", OLD, table="campaign") for _ in range(3)],
        change(1, "update", NOW, table="campaign"))
    before = sync.usage()
    sync.cycle("idle")
    assert sync.usage() - before <= 2  # an idle cycle stays at two calls, retention included
    assert "old" not in keys(engine, "run") and "old" not in keys(engine, "extract", "run_key")
    assert "old" not in keys(engine, "error", "run_key")
    assert len(keys(engine, "change")) == 1
    assert {"copy", "settle", "idle"} <= keys(engine, "run")
    used = sync.usage()
    result = pipeline.maintain("again", sync.context())
    assert result["pruned"] == NOTHING and result["stale"] == 0 and result["api_calls"] == 0
    assert sync.usage() == used

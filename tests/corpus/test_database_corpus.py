"""A marketing database in a bad way: read-only, locked by another session, synced or
bookkeeping tables dropped, a column dropped, a table renamed away, a constraint the pulled
records break. The run either fails with one line naming the connection and the table and
leaves everything as it was (Salesforce not even asked when the database cannot take the
run), or recovers as documented (a table that disappeared is copied again, a column that
disappeared is filled again) with nothing lost. Each case repairs what it broke; the module's
database then carries on to the next.

Steps run in new Airflow task processes: a case that drops a table runs its cycle with a new
engine, as the next task would (each engine prepares the bookkeeping tables once)."""

from __future__ import annotations

import logging
import sqlite3

import psycopg
import pytest
import sqlalchemy as sa

from include.sfsync import pipeline as P
from include.sfsync.airflow_glue import fail_fast
from include.sfsync.errors import MarketingDatabaseError
from include.sfsync.store.engine import create_engine
from tests.conftest import POSTGRES_ADMIN_URL
from tests.corpus.conftest import books, one_line, state

pytestmark = pytest.mark.integration


def fresh_engine(mdb, **connect_settings) -> sa.engine.Engine:
    """The marketing database as a new task process opens it; ``connect_settings``: what the
    database's administrator set for the sync's sessions (lock and busy timeouts)."""
    engine = create_engine(mdb.engine.url.render_as_string(hide_password=False))

    @sa.event.listens_for(engine, "connect")
    def _settings(dbapi_connection, _record):  # after the engine's own connect settings
        cur = dbapi_connection.cursor()
        for statement in connect_settings.values():
            cur.execute(statement)
        cur.close()
        if mdb.kind == "postgres":
            dbapi_connection.commit()

    return engine


def cycle(sync, run_key: str, engine=None, **overrides) -> dict:
    engine = engine or fresh_engine(sync.mdb)
    try:
        return P.run_cycle(run_key, config=sync.config(**overrides), engine=engine)
    finally:
        engine.dispose()


def refused(sync, run_key: str, engine) -> str:
    """The run fails with MarketingDatabaseError (one line); returns the message."""
    config = sync.config()
    try:
        with pytest.raises(MarketingDatabaseError) as failed:
            fail_fast(lambda: P.run_cycle(run_key, config=config, engine=engine), run_key)
    finally:
        engine.dispose()
    message = one_line(str(failed.value))
    del failed
    assert message.startswith("marketing database (Airflow connection 'marketing_db', "), message
    return message


def admin_sql(mdb, sql: str) -> None:
    """As the database's administrator (PostgreSQL: another database's session)."""
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.format(db=mdb.conn["schema"]))


@pytest.fixture(scope="module")
def db(synced):
    synced.advance(600)
    return synced


def test_a_read_only_database_fails_before_asking_salesforce(db):
    """A read-only copy (SQLite opened read-only; PostgreSQL with read-only transactions, as
    on a standby): the run's first write fails, naming the database and the table."""
    mdb = db.mdb
    before = state(mdb)
    db.org.control("DELETE", "/counters")
    if mdb.kind == "sqlite":
        engine = create_engine(f"sqlite:///file:{mdb.conn['host']}?mode=ro&uri=true")
        said = "attempt to write a readonly database (INSERT on table sfsync_run)"
    else:
        admin_sql(mdb, "ALTER DATABASE {db} SET default_transaction_read_only = on")
        engine = fresh_engine(mdb)
        said = "cannot execute INSERT in a read-only transaction (INSERT on table sfsync_run)"
    try:
        message = refused(db, "db-read-only", engine)
    finally:
        if mdb.kind == "postgres":
            admin_sql(mdb, "ALTER DATABASE {db} SET default_transaction_read_only = off")
    assert said in message, message
    assert not db.org.counters()  # Salesforce was not asked
    assert state(mdb) == before
    cycle(db, "db-read-only")  # writable again: the retry goes through


def test_a_database_locked_by_another_session_names_it_and_the_retry_goes_on(db):
    """SQLite: another writer holds the database past the busy timeout; PostgreSQL: another
    session holds the person table past the lock timeout, as the new lead's load needs it."""
    mdb = db.mdb
    lead = db.create("Lead", {"LastName": "Locked Out", "Company": "Lock Co"})[0]
    db.advance(60)
    before = books(mdb)
    if mdb.kind == "sqlite":
        holder = sqlite3.connect(mdb.conn["host"], isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        engine = fresh_engine(mdb, busy="PRAGMA busy_timeout = 300")
        said = "database is locked (BEGIN IMMEDIATE)"
    else:
        holder = psycopg.connect(POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + mdb.conn["schema"])
        holder.execute("LOCK TABLE person IN ACCESS EXCLUSIVE MODE")
        engine = fresh_engine(mdb, lock="SET lock_timeout = '300ms'")
        said = "canceling statement due to lock timeout"
    try:
        message = refused(db, "db-locked", engine)
    finally:
        holder.rollback()
        holder.close()
    assert said in message, message
    after = books(mdb)
    lead_cursor = [w for w in before["sfsync_watermark"] if w[0] == "Lead"]
    assert [w for w in after["sfsync_watermark"] if w[0] == "Lead"] == lead_cursor
    assert not mdb.rows("person", "sfdc_lead_id = :i", i=lead)
    cycle(db, "db-locked")  # the task's retry, once the other session let go
    assert db.person(lead)["last_name"] == "Locked Out"


SYNCED_TABLES = {"company": "Account", "campaign": "Campaign",
                 "campaign_member": "CampaignMember", "opportunity": "Opportunity",
                 "opportunity_contact_role": "OpportunityContactRole", "activity": "Task",
                 "sales_user": "User"}


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def dropped(db):
    """Every synced table of SYNCED_TABLES dropped by hand, then one cycle (new processes)."""
    mdb = db.mdb
    db.advance(600)
    before = {t: mdb.rows(t, order="sfdc_id") for t in SYNCED_TABLES}
    for table in SYNCED_TABLES:
        mdb.execute(f"DROP TABLE {table}")
    handler = _Warnings()
    logging.getLogger("include.sfsync").addHandler(handler)
    try:
        summary = cycle(db, "db-dropped")
    finally:
        logging.getLogger("include.sfsync").removeHandler(handler)
    return {"before": before, "summary": summary, "warnings": handler.lines}


@pytest.mark.parametrize("table", list(SYNCED_TABLES))
def test_a_dropped_synced_table_is_copied_again_and_says_why(table, dropped, db):
    sf_object = SYNCED_TABLES[table]
    before, after = dropped["before"][table], db.mdb.rows(table, order="sfdc_id")
    assert f"{sf_object}: its table {table} is gone from the marketing database; copying the " \
        "object again" in dropped["warnings"]
    assert [r["sfdc_id"] for r in after] == [r["sfdc_id"] for r in before]
    assert dropped["summary"]["counts"][sf_object]["new"] >= len(
        [r for r in before if r.get("sfdc_object", sf_object) == sf_object])
    if "person_id" in (before[0] if before else {}):  # linked to the same people again
        assert sum(r["person_id"] is None for r in after) == sum(
            r["person_id"] is None for r in before)
    # Salesforce's values, not just the rows: the columns before are filled the same
    skip = {"id", "person_id", "sfsync_created_at", "sfsync_updated_at"}
    for old, new in zip(before, after, strict=True):
        assert {k: v for k, v in old.items() if k not in skip} == \
            {k: v for k, v in new.items() if k not in skip}
    if table in {"campaign", "campaign_member"}:  # two-way: local edits are captured again
        changes = db.mdb.scalar("SELECT count(*) FROM sfsync_change")
        db.mdb.execute(f"UPDATE {table} SET sfdc_is_deleted = sfdc_is_deleted WHERE id = :i",
                       i=after[0]["id"])
        assert db.mdb.scalar("SELECT count(*) FROM sfsync_change") >= changes


# bookkeeping table -> what the recovery restores
BOOKKEEPING = ["sfsync_watermark", "sfsync_org_lock", "sfsync_describe", "sfsync_extract",
               "sfsync_stage", "sfsync_count"]


@pytest.fixture(scope="module")
def dropped_books(db, dropped):
    mdb = db.mdb
    db.advance(600)
    db.cycle("db-books-before")
    before = {**state(mdb), "lock": mdb.rows("sfsync_org_lock"),
              "cursors": {r["sf_object"] for r in mdb.rows("sfsync_watermark", order="sf_object")
                          if r["cursor_modstamp"] is not None}}
    for table in BOOKKEEPING:
        mdb.execute(f"DROP TABLE {table}")
    db.advance(60)
    summary = cycle(db, "db-books")
    return {"before": before, "summary": summary}


@pytest.mark.parametrize("table", BOOKKEEPING)
def test_a_dropped_bookkeeping_table_is_made_again_and_nothing_is_lost(table, dropped_books, db):
    mdb, before = db.mdb, dropped_books["before"]
    assert sa.inspect(mdb.engine).has_table(table)
    assert mdb.snapshot() == {k: v for k, v in before.items()
                              if not k.startswith(("sfsync_", "lock", "cursors"))}
    if table == "sfsync_watermark":  # every object copied again: its cursor is back
        assert {r["sf_object"] for r in mdb.rows("sfsync_watermark", order="sf_object")
                if r["cursor_modstamp"] is not None} == before["cursors"]
    if table == "sfsync_org_lock":  # locked again, to the same org
        assert [r["org_id"] for r in mdb.rows("sfsync_org_lock")] == \
            [r["org_id"] for r in before["lock"]]
    if table == "sfsync_count":
        assert mdb.scalar("SELECT count(*) FROM sfsync_count WHERE run_key = 'db-books'")


def test_a_dropped_change_table_refuses_local_edits_until_the_next_cycle(db, dropped_books):
    """Without ``sfsync_change`` the capture triggers refuse a local edit (naming the table):
    no edit goes unrecorded. The next cycle makes the table again; edits then reach
    Salesforce."""
    mdb = db.mdb
    person = mdb.rows("person", "sfdc_type = 'Lead' AND sfdc_is_deleted = :f AND "
                      "sfdc_converted_contact_id IS NULL", f=False)[-1]
    mdb.execute("DROP TABLE sfsync_change")
    with pytest.raises(sa.exc.DBAPIError, match="sfsync_change"):
        mdb.execute("UPDATE person SET title = 'Lost?' WHERE id = :i", i=person["id"])
    assert mdb.one("person", "id = :i", i=person["id"])["title"] == person["title"]
    db.advance(60)
    cycle(db, "db-change-dropped")
    mdb.engine.dispose()  # a new session (SQLite keeps a dropped table's triggers stale in
    # the session that dropped it)
    mdb.execute("UPDATE person SET title = 'Captured again' WHERE id = :i", i=person["id"])
    db.advance(60)
    cycle(db, "db-change-back")
    lead = next(r for r in db.truth("Lead")["Lead"] if r["Id"] == person["sfdc_lead_id"])
    assert lead["Title"] == "Captured again"


@pytest.mark.parametrize("table, column", [("company", "industry"),
                                           ("opportunity", "next_step")])
def test_a_dropped_column_is_filled_again_not_left_empty(table, column, db, dropped_books):
    mdb = db.mdb
    before = {r["sfdc_id"]: r[column] for r in mdb.rows(table)}
    assert any(before.values())
    mdb.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.advance(60)
    cycle(db, f"db-column-{table}")
    assert {r["sfdc_id"]: r[column] for r in mdb.rows(table)} == before


def test_a_table_renamed_away_fails_naming_it_then_recovers(db, dropped_books):
    """``person`` renamed: the sync cannot make it again while the renamed table holds its
    index names; the run fails naming the table and the index. Renamed back, the next cycle
    copies leads and contacts again with nothing lost."""
    mdb = db.mdb
    before = state(mdb)
    mdb.execute("ALTER TABLE person RENAME TO person_old")
    db.advance(60)
    message = refused(db, "db-renamed", fresh_engine(mdb))
    assert "already exists (CREATE on table person)" in message and "ix_person" in message, \
        message
    mdb.execute("ALTER TABLE person_old RENAME TO person")
    cycle(db, "db-renamed")
    after = state(mdb)
    for name in ("person", "campaign_member", "activity", "opportunity_contact_role"):
        assert after[name] == before[name], name


def test_a_constraint_the_pulled_record_breaks_fails_its_load_and_nothing_else(db,
                                                                               dropped_books):
    """A rule the marketing team added to their table (a CHECK constraint; on SQLite, a
    trigger) refuses an account Salesforce has: the load of Account fails naming the table;
    the account's cursor stays; the rule dropped, the task's retry loads it."""
    mdb = db.mdb
    account = db.create("Account", {"Name": "ZZ Forbidden Name Inc"})[0]
    db.advance(60)
    if mdb.kind == "sqlite":
        mdb.execute("CREATE TRIGGER no_zz BEFORE INSERT ON company WHEN NEW.name LIKE 'ZZ%' "
                    "BEGIN SELECT RAISE(ABORT, 'company names may not start with ZZ'); END")
    else:
        mdb.execute("ALTER TABLE company ADD CONSTRAINT no_zz CHECK (name NOT LIKE 'ZZ%') "
                    "NOT VALID")
    before = books(mdb)
    message = refused(db, "db-constraint", fresh_engine(mdb))
    assert "(INSERT on table company)" in message and ("no_zz" in message or "ZZ" in message), \
        message
    assert [w for w in books(mdb)["sfsync_watermark"] if w[0] == "Account"] == \
        [w for w in before["sfsync_watermark"] if w[0] == "Account"]
    assert not mdb.rows("company", "sfdc_id = :i", i=account)
    mdb.execute("DROP TRIGGER no_zz" if mdb.kind == "sqlite" else
                "ALTER TABLE company DROP CONSTRAINT no_zz")
    cycle(db, "db-constraint")
    assert mdb.one("company", "sfdc_id = :i", i=account)["name"] == "ZZ Forbidden Name Inc"


def test_rows_deleted_by_hand_are_copied_again_and_it_says_why(db, dropped_books):
    """A DELETE on a one-way table (or a TRUNCATE, an older backup restored): the rows the
    sync wrote are missed at the next cycle's start and the object is copied again."""
    mdb = db.mdb
    before = mdb.rows("sales_user", order="sfdc_id")
    mdb.execute("DELETE FROM sales_user")
    db.advance(60)
    handler = _Warnings()
    logging.getLogger("include.sfsync").addHandler(handler)
    try:
        cycle(db, "db-rows-deleted")
    finally:
        logging.getLogger("include.sfsync").removeHandler(handler)
    assert any(line.startswith("User: its table sales_user lost rows the sync wrote")
               and line.endswith("; copying the object again") for line in handler.lines), \
        handler.lines
    assert [r["sfdc_id"] for r in mdb.rows("sales_user", order="sfdc_id")] == \
        [r["sfdc_id"] for r in before]

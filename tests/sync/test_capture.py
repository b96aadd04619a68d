"""Change capture triggers (issue 4, requirement 1). Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from include.sfsync.store import capture, outbox
from include.sfsync.store.engine import UtcDateTime, utcnow


def _tables(engine) -> dict[str, sa.Table]:
    metadata = sa.MetaData()
    def stamps():
        return [sa.Column("sfsync_created_at", UtcDateTime),
                sa.Column("sfsync_updated_at", UtcDateTime)]

    person = sa.Table(
        "person", metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("email", sa.Text), sa.Column("first_name", sa.Text),
        sa.Column("score", sa.Integer), *stamps())
    member = sa.Table(
        "campaign_member", metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("sfdc_id", sa.Text, unique=True),
        sa.Column("person_id", sa.BigInteger), sa.Column("status", sa.Text),
        *stamps())
    metadata.create_all(engine)
    return {"person": person, "campaign_member": member}


@pytest.fixture
def db(marketing_db):
    tables = _tables(marketing_db.engine)
    capture.install_triggers(marketing_db.engine, list(tables.values()))
    return marketing_db, tables


@dataclass(frozen=True)
class Change:
    id: int
    table_name: str
    row_id: int
    op: str
    columns: tuple[str, ...]
    changed_at: datetime
    processed_at: datetime | None = None


def pending_changes(engine, table_name: str) -> list[Change]:
    """Unfolded changes of one table, oldest first."""
    t = outbox.change_t
    query = sa.select(t).where(t.c.table_name == table_name,
                               t.c.processed_at.is_(None)).order_by(t.c.id)
    with engine.connect() as conn:
        return [Change(id=r.id, table_name=r.table_name, row_id=r.row_id, op=r.op,
                       columns=tuple(c for c in (r.columns or "").split(",") if c),
                       changed_at=r.changed_at, processed_at=r.processed_at)
                for r in conn.execute(query)]


def _changes(engine, table="person") -> list[tuple]:
    return [(c.op, c.row_id, c.columns) for c in pending_changes(engine, table)]


def test_external_insert_update_delete_are_captured(db):
    mdb, t = db
    person = t["person"]
    before = utcnow()
    with mdb.engine.begin() as conn:
        pid = conn.execute(person.insert().values(email="a@x.io", first_name="Ann")) \
            .inserted_primary_key[0]
    mdb.execute("UPDATE person SET first_name = 'Anne', score = 3 WHERE id = :i", i=pid)
    mdb.execute("UPDATE person SET email = 'anne@x.io' WHERE id = :i", i=pid)
    mdb.execute("DELETE FROM person WHERE id = :i", i=pid)
    assert _changes(mdb.engine) == [
        ("insert", pid, ("email", "first_name", "score")),
        ("update", pid, ("first_name", "score")),
        ("update", pid, ("email",)),
        ("delete", pid, ()),
    ]
    changes = pending_changes(mdb.engine, "person")
    assert all(c.table_name == "person" and c.processed_at is None for c in changes)
    for c in changes:  # aware UTC, around now
        assert before - timedelta(seconds=5) <= c.changed_at <= utcnow() + timedelta(seconds=5)
    assert pending_changes(mdb.engine, "campaign_member") == []


def test_the_syncs_own_writes_are_not_captured(db):
    mdb, t = db
    person = t["person"]
    now = utcnow()
    with mdb.engine.begin() as conn:  # as the loader: inserts stamp sfsync_created_at
        pid = conn.execute(person.insert().values(
            email="b@x.io", first_name="Bo", sfsync_created_at=now,
            sfsync_updated_at=now)).inserted_primary_key[0]
        conn.execute(person.update().where(person.c.id == pid).values(  # updates: a new stamp
            first_name="Bob", sfsync_updated_at=now + timedelta(seconds=1)))
        conn.execute(person.insert().values(email="c@x.io", sfsync_created_at=now))
    assert _changes(mdb.engine) == []
    # a later external edit of a synced row is captured (its stamp left alone)
    mdb.execute("UPDATE person SET first_name = 'Robert' WHERE id = :i", i=pid)
    # an ORM rewriting every column, stamps included, with their loaded values
    with mdb.engine.begin() as conn:
        row = conn.execute(sa.select(person).where(person.c.id == pid)).mappings().one()
        conn.execute(person.update().where(person.c.id == pid).values(
            {k: v for k, v in row.items() if k != "id"} | {"score": 7}))
    assert _changes(mdb.engine) == [("update", pid, ("first_name",)), ("update", pid, ("score",))]


def test_the_loaders_upsert_is_not_captured(db):
    """``Loader._upsert``: INSERT .. ON CONFLICT DO UPDATE with both stamps."""
    mdb, t = db
    member = t["campaign_member"]
    if mdb.kind == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    for i, status in enumerate(["Sent", "Responded"]):
        now = utcnow() + timedelta(seconds=i)
        stmt = insert(member).values(sfdc_id="00v1", status=status, sfsync_created_at=now,
                                     sfsync_updated_at=now)
        stmt = stmt.on_conflict_do_update(index_elements=[member.c.sfdc_id], set_={
            "status": stmt.excluded.status, "sfsync_updated_at": stmt.excluded.sfsync_updated_at})
        with mdb.engine.begin() as conn:
            conn.execute(stmt)
    assert mdb.one("campaign_member", "sfdc_id = '00v1'")["status"] == "Responded"
    assert _changes(mdb.engine, "campaign_member") == []


def _fold(engine, *tables: str) -> int:
    with engine.begin() as conn:
        return outbox.fold(conn, tables or ("person", "campaign_member"))


def _outbox(engine, table="person") -> dict[int, outbox.OutboxEntry]:
    with engine.connect() as conn:
        return outbox.outbox_entries(conn, table)


def test_an_update_writing_equal_values_records_nothing(db):
    mdb, t = db
    mdb.execute("INSERT INTO person (email, first_name, score) VALUES ('d@x.io', 'Di', 1)")
    assert _fold(mdb.engine) == 1
    mdb.execute("UPDATE person SET email = email, first_name = 'Di', score = 1")
    mdb.execute("UPDATE person SET sfsync_updated_at = sfsync_updated_at")
    assert _changes(mdb.engine) == []


def test_updates_keep_old_values_and_fold_into_one_outbox_row(db):
    mdb, t = db
    now = utcnow()
    with mdb.engine.begin() as conn:  # a synced row, written by the sync
        pid = conn.execute(t["person"].insert().values(
            email="h@x.io", first_name="Hu", score=2, sfsync_created_at=now,
            sfsync_updated_at=now)).inserted_primary_key[0]
    mdb.execute("UPDATE person SET first_name = 'Hugo', score = NULL WHERE id = :i", i=pid)
    mdb.execute("UPDATE person SET first_name = 'Hugh' WHERE id = :i", i=pid)
    olds = [c["old_values"] for c in mdb.rows("sfsync_change", "op = 'update'")]
    import json
    assert [json.loads(o) for o in olds] == [{"first_name": "Hu", "score": 2},
                                           {"first_name": "Hugo"}]
    assert _fold(mdb.engine) == 2
    entry = _outbox(mdb.engine)[pid]
    # the base is what the row held before the first change: what Salesforce has
    assert (entry.op, entry.created, entry.columns, entry.base, entry.status) == (
        "upsert", False, ["first_name", "score"], {"first_name": "Hu", "score": 2}, "pending")
    assert _fold(mdb.engine) == 0  # every change is folded once
    assert pending_changes(mdb.engine, "person") == []
    # a failed entry becomes pending again when the row changes again
    with mdb.engine.begin() as conn:
        entry.status, entry.attempts = outbox.FAILED, 1
        outbox.save_entry(conn, entry)
    mdb.execute("UPDATE person SET email = 'hugh@x.io' WHERE id = :i", i=pid)
    _fold(mdb.engine)
    entry = _outbox(mdb.engine)[pid]
    assert (entry.columns, entry.status, entry.attempts) == (
        ["email", "first_name", "score"], "pending", 1)
    assert entry.base == {"first_name": "Hu", "score": 2, "email": "h@x.io"}


def test_deletes_keep_the_salesforce_id(db):
    mdb, t = db
    now = utcnow()
    mdb.execute("INSERT INTO campaign_member (sfdc_id, person_id, status, sfsync_created_at) "
                "VALUES ('00v9', 1, 'Sent', :n)", n=now)
    mdb.execute("INSERT INTO campaign_member (person_id, status) VALUES (2, 'Sent')")
    mdb.execute("DELETE FROM campaign_member")
    _fold(mdb.engine)
    entries = _outbox(mdb.engine, "campaign_member")
    # the synced member is to be deleted in Salesforce; the local-only one never existed there
    assert [(e.op, e.sfdc_id) for e in entries.values()] == [("delete", "00v9")]


def test_stored_values_read_back_typed(db):
    mdb, t = db
    metadata = sa.MetaData()
    typed = sa.Table("typed", metadata,
                     sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("flag", sa.Boolean), sa.Column("at", UtcDateTime),
                     sa.Column("on", sa.Date), sa.Column("amount", sa.Float),
                     sa.Column("sfsync_created_at", UtcDateTime),
                     sa.Column("sfsync_updated_at", UtcDateTime))
    metadata.create_all(mdb.engine)
    capture.install_triggers(mdb.engine, [typed])
    at = utcnow().replace(microsecond=123456)
    import datetime as dt
    with mdb.engine.begin() as conn:
        conn.execute(typed.insert().values(id=1, flag=True, at=at, on=dt.date(2026, 1, 2),
                                           amount=1.5, sfsync_created_at=at))
        conn.execute(typed.update().values(flag=False, at=None, on=None, amount=None))
    _fold(mdb.engine, "typed")
    base = _outbox(mdb.engine, "typed")[1].base
    assert {k: outbox.stored_value(typed.c[k], v) for k, v in base.items()} == {
        "flag": True, "at": at, "on": dt.date(2026, 1, 2), "amount": 1.5}


def test_new_columns_are_captured_after_reinstalling(db):
    mdb, t = db
    mdb.execute("INSERT INTO person (email) VALUES ('e@x.io')")
    capture.install_triggers(mdb.engine, list(t.values()))  # twice: harmless
    if mdb.kind == "sqlite":  # unchanged triggers are not rewritten
        version = mdb.scalar("PRAGMA schema_version")
    capture.install_triggers(mdb.engine, ["person", "campaign_member"])
    if mdb.kind == "sqlite":
        assert mdb.scalar("PRAGMA schema_version") == version
    mdb.execute("ALTER TABLE person ADD COLUMN city TEXT")
    capture.install_triggers(mdb.engine, list(t.values()))  # the stale Table objects will do
    mdb.execute("UPDATE person SET city = 'Lyon'")
    mdb.execute("INSERT INTO person (email, city) VALUES ('f@x.io', 'Nice')")
    changes = _changes(mdb.engine)
    assert [c[0] for c in changes] == ["insert", "update", "insert"]  # nothing twice
    assert changes[1][2] == ("city",)
    assert changes[2][2] == ("city", "email", "first_name", "score")
    assert changes[0][2] == ("email", "first_name", "score")
    assert mdb.scalar("SELECT count(*) FROM sfsync_change") == 3
    if mdb.kind == "sqlite":
        names = {r["name"] for r in mdb.rows(
            "sqlite_master", "type = 'trigger'", order="name")}
        assert names == {f"sfsync_capture_{tn}_{op}" for tn in t for op in capture.OPS}
    else:
        assert mdb.scalar("SELECT count(*) FROM pg_trigger WHERE tgname = 'sfsync_capture'") == 2


def test_other_roles_and_search_paths_can_write(db):
    """PostgreSQL: a BI tool's role needs no privilege on sfsync_change, and its search_path
    does not matter; SQLite: a plain sqlite3 connection (another client) is captured too."""
    mdb, t = db
    if mdb.kind == "sqlite":
        import sqlite3

        raw = sqlite3.connect(mdb.conn["host"])
        with raw:
            raw.execute("INSERT INTO person (email) VALUES ('g@x.io')")
        raw.close()
    else:
        mdb.execute("CREATE SCHEMA other")
        mdb.execute("CREATE ROLE sfsync_test_bi_tool")  # roles are cluster-wide: drop after
        try:
            mdb.execute("GRANT SELECT, INSERT, UPDATE ON person TO sfsync_test_bi_tool")
            mdb.execute("GRANT USAGE ON SEQUENCE person_id_seq TO sfsync_test_bi_tool")
            with mdb.engine.begin() as conn:
                conn.exec_driver_sql("SET LOCAL ROLE sfsync_test_bi_tool")
                conn.exec_driver_sql("SET LOCAL search_path = other")
                conn.exec_driver_sql("INSERT INTO public.person (email) VALUES ('g@x.io')")
        finally:
            mdb.execute("DROP OWNED BY sfsync_test_bi_tool")
            mdb.execute("DROP ROLE sfsync_test_bi_tool")
    assert [c[0] for c in _changes(mdb.engine)] == ["insert"]


def test_bookkeeping_tables_and_incomplete_tables_are_refused(marketing_db):
    engine = marketing_db.engine
    metadata = sa.MetaData()
    plain = sa.Table("plain", metadata, sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("name", sa.Text))
    metadata.create_all(engine)
    with pytest.raises(ValueError, match="sfsync_created_at"):
        capture.install_triggers(engine, [plain])
    with pytest.raises(ValueError, match="bookkeeping"):
        capture.install_triggers(engine, [capture.CHANGE_TABLE])


def test_an_entry_read_before_a_newer_fold_is_not_dropped_or_overwritten(db):
    """A push that read an entry must not drop changes folded after it read it (e.g. by the
    pull of another DAG run): they are pushed next time."""
    mdb, t = db
    mdb.execute("INSERT INTO person (email) VALUES ('v@x.io')")
    _fold(mdb.engine)
    (stale,) = _outbox(mdb.engine).values()
    mdb.execute("UPDATE person SET first_name = 'Vi' WHERE id = :i", i=stale.row_id)
    _fold(mdb.engine)
    with mdb.engine.begin() as conn:
        stale.status = outbox.FAILED
        assert outbox.save_entry(conn, stale) is False
        outbox.drop_entry(conn, stale)
    (entry,) = _outbox(mdb.engine).values()
    assert (entry.status, entry.version) == ("pending", stale.version + 1)
    assert "first_name" in entry.columns
    with mdb.engine.begin() as conn:
        outbox.drop_entry(conn, entry)
    assert _outbox(mdb.engine) == {}

"""The initial copy's fast path (``pull.copyload`` over ``store.bulk``: SQLite executemany of
tuples, PostgreSQL COPY and a set-based merge, values in the form the database stores) on SQLite
and PostgreSQL: it stores exactly what the loader's per-record path stores, byte for byte, and
the marketing database equals the org's truth."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from include.sfsync import pipeline as P
from include.sfsync.context import open_context
from include.sfsync.pull import copyload
from include.sfsync.store.bulk import RowWriter, stamp, stored
from include.sfsync.store.engine import UtcDateTime, create_engine
from tests.conftest import throwaway_postgres
from tests.fixtures_emulator import on_demo_and_standard_orgs
from tests.sync.test_pull import Sync, assert_full_copy

pytestmark = pytest.mark.integration


@pytest.fixture
def sync(org, marketing_db):
    return Sync(org, marketing_db)


def copy_everything(sync, run_key: str, engine: sa.engine.Engine) -> dict:
    """The initial-copy DAG's steps for every object, one window each (as its tasks run)."""
    config = sync.config()
    objects = P.prepare_copy(run_key, ["all"], config=config, engine=engine)
    ctx = open_context(config, engine=engine)
    for name in objects:
        P.copy_object(run_key, name, None, None, ctx)
    return P.finish_copy(run_key, objects, ctx)


def raw_rows(engine: sa.engine.Engine) -> dict[str, list[tuple]]:
    """Every synced table's rows as the database stores them (SQLite: typed literals; PostgreSQL:
    the text of each value), rows named by their Salesforce ids instead of local row ids (the
    order rows are inserted in is no contract), the sync's own stamps left out."""
    sqlite = engine.dialect.name == "sqlite"
    person_key = ("COALESCE(p.sfdc_lead_id, '') || '/' || COALESCE(p.sfdc_contact_id, '')")
    out = {}
    with engine.connect() as conn:
        insp = sa.inspect(conn)
        names = [n for n in insp.get_table_names() if not n.startswith("sfsync_")]
        for name in sorted(names):
            cols = [c["name"] for c in insp.get_columns(name)
                    if c["name"] not in {"id", "sfsync_created_at", "sfsync_updated_at"}]
            shown = []
            for c in cols:
                if c == "person_id":
                    shown.append(f"(SELECT {person_key} FROM person AS p WHERE p.id = t.person_id)")
                else:
                    shown.append(f'quote(t."{c}")' if sqlite else f't."{c}"::text')
            rows = conn.execute(sa.text(f'SELECT {", ".join(shown)} FROM "{name}" AS t')).all()
            out[name] = sorted((tuple(r) for r in rows), key=repr)
    return out


@on_demo_and_standard_orgs
@pytest.mark.parametrize("read", ["rest", "bulk"])
def test_the_fast_copy_equals_the_truth_and_stores_what_the_loader_stores(sync, read,
                                                                          monkeypatch, tmp_path):
    if read == "bulk":  # Bulk API 2.0's CSV (every value text) for every object
        sync.overrides["bulk_threshold"] = 1
    summary = copy_everything(sync, "fast", sync.mdb.engine)
    assert_full_copy(sync, summary)
    fast = raw_rows(sync.mdb.engine)
    assert sum(map(len, fast.values())) > 500

    # The same copy with every record through the loader's per-record rules, into a second,
    # fresh database of the same kind.
    made = []
    real_init = copyload.CopyPlan.__init__

    def loader_only(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        made.append(self.fast)
        self.fast = False

    monkeypatch.setattr(copyload.CopyPlan, "__init__", loader_only)
    if sync.mdb.kind == "sqlite":
        slow_engine = create_engine(f"sqlite:///{tmp_path / 'loader.db'}")
        slow_summary = copy_everything(sync, "slow", slow_engine)
        slow = raw_rows(slow_engine)
        slow_engine.dispose()
    else:
        with throwaway_postgres() as url:
            slow_engine = create_engine(url)
            slow_summary = copy_everything(sync, "slow", slow_engine)
            slow = raw_rows(slow_engine)
            slow_engine.dispose()
    assert made and all(made), "every object of these orgs takes the fast path"
    assert slow_summary["counts"] == summary["counts"]
    assert fast.keys() == slow.keys()
    for table in fast:
        assert fast[table] == slow[table], table


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request, tmp_path):
    if request.param == "sqlite":
        eng = create_engine(f"sqlite:///{tmp_path / 'bulk.db'}")
        yield eng
        eng.dispose()
    else:
        with throwaway_postgres() as url:
            eng = create_engine(url)
            yield eng
            eng.dispose()


def _tables():
    meta = sa.MetaData()
    person = sa.Table("person", meta, sa.Column("id", sa.Integer, primary_key=True),
                      sa.Column("sfdc_lead_id", sa.String(18), unique=True),
                      sa.Column("sfdc_contact_id", sa.String(18), unique=True))
    member = sa.Table(
        "campaign_member", meta, sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sfdc_id", sa.String(18), unique=True, nullable=False),
        sa.Column("sfdc_lead_id", sa.String(18)), sa.Column("sfdc_contact_id", sa.String(18)),
        sa.Column("status", sa.String(40)), sa.Column("responded", sa.Boolean),
        sa.Column("first_responded", sa.Date),
        sa.Column("sfdc_system_modstamp", UtcDateTime),
        sa.Column("person_id", sa.BigInteger),
        sa.Column("sfsync_created_at", UtcDateTime), sa.Column("sfsync_updated_at", UtcDateTime))
    return meta, person, member


def test_the_merge_keeps_the_newer_version_and_finds_people_set_based(engine):
    meta, person, member = _tables()
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(person.insert(), [{"id": 7, "sfdc_lead_id": "00Q000000000001AAA"},
                                       {"id": 8, "sfdc_lead_id": "00Q000000000002AAA",
                                        "sfdc_contact_id": "003000000000002AAA"}])
    columns = ["sfdc_id", "sfdc_lead_id", "sfdc_contact_id", "status", "responded",
               "first_responded", "sfdc_system_modstamp", "sfsync_created_at",
               "sfsync_updated_at"]
    types = ["id", "reference", "reference", "picklist", "boolean", "date", "datetime"]
    converts = [stored(member.c[c], t, engine.dialect)
                for c, t in zip(columns[:len(types)], types, strict=True)]
    assert all(exact for exact, _ in converts)
    writer = RowWriter(member, columns, engine.dialect, newer_wins=True,
                       person=(person, ["sfdc_contact_id", "sfdc_lead_id"]))

    def rows(*records):
        now = stamp(member, engine.dialect)
        out = []
        for rec in records:
            row = [None if v is None else (conv(v) if conv else v)
                   for v, (_, conv) in zip(rec, converts, strict=True)]
            out.append([*row, now, now])
        return out

    with engine.begin() as conn:
        writer.write(conn, rows(
            ("00v000000000001AAA", "00Q000000000001AAA", None, "Sent", False, None,
             "2026-11-01T10:00:00.000Z"),
            # the lead's contact wins over the lead (people.link_people's order)
            ("00v000000000002AAA", "00Q000000000002AAA", "003000000000002AAA", "Responded",
             True, "2026-11-02", "2026-11-02T10:00:00.000+0000"),
            ("00v000000000003AAA", "00Q000000000009AAA", None, "Sent", False, None,
             "2026-11-03T10:00:00.000Z")))
    with engine.begin() as conn:
        writer.write(conn, rows(
            # older than the stored version: ignored
            ("00v000000000001AAA", "00Q000000000001AAA", None, "Old", True, None,
             "2026-10-01T10:00:00.000Z"),
            # newer: taken, its person (none found) stays
            ("00v000000000002AAA", None, None, "Opened", True, "2026-11-05",
             "2026-11-05T10:00:00.000Z")))
    with engine.connect() as conn:
        got = {r.sfdc_id: r for r in conn.execute(sa.select(member))}
    assert (got["00v000000000001AAA"].status, got["00v000000000001AAA"].person_id) == ("Sent", 7)
    assert got["00v000000000001AAA"].responded is False
    assert got["00v000000000001AAA"].sfdc_system_modstamp == datetime(2026, 11, 1, 10,
                                                                      tzinfo=UTC)
    second = got["00v000000000002AAA"]
    assert (second.status, second.person_id, str(second.first_responded)) == (
        "Opened", 8, "2026-11-05")
    assert second.sfdc_system_modstamp == datetime(2026, 11, 5, 10, tzinfo=UTC)
    assert got["00v000000000003AAA"].person_id is None  # linked when the run finishes


def test_a_taken_person_key_fails_the_write_and_leaves_nothing_behind(engine):
    meta, person, _member = _tables()
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(person.insert().values(id=1, sfdc_lead_id="00Q000000000001AAA"))
    writer = RowWriter(person, ["sfdc_lead_id"], engine.dialect, newer_wins=False)
    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        with engine.begin() as conn:
            writer.write(conn, [["00Q000000000002AAA"], ["00Q000000000001AAA"]])
    with engine.connect() as conn:
        assert conn.execute(sa.select(person.c.sfdc_lead_id)).scalars().all() == [
            "00Q000000000001AAA"]


@pytest.mark.parametrize("org", ["standard"], indirect=True)
def test_every_bulk_job_is_started_up_front_and_a_failed_one_is_replaced_on_retry(sync):
    """The plan counts every object's window in shared /composite calls and starts each Bulk
    query job before any copy runs; the copies count nothing and start no job. A job that failed
    (QUERY_TIMEOUT) fails its copy, whose retry counts again and starts a new one."""
    sync.overrides["bulk_threshold"] = 1  # a Bulk job for every object with two records or more
    config, engine = sync.config(), sync.mdb.engine

    def calls() -> dict:
        return sync.org.control("GET", "/counters")["calls"]

    sync.org.control("POST", "/faults", json={"endpoint": "bulk2.query.create",
                                              "kind": "query_timeout", "count": 1})
    before = calls()
    objects = P.prepare_copy("upfront", ["all"], config=config, engine=engine)
    with engine.connect() as conn:
        planned = dict(conn.execute(sa.text(
            "SELECT sf_object, planned_count FROM sfsync_copy_window")).all())
    jobs = {o for o, n in planned.items() if n > 1}
    assert set(planned) == set(objects) and len(jobs) >= 8
    made = calls()
    assert made.get("bulk2.query.create", 0) - before.get("bulk2.query.create", 0) == len(jobs)
    assert made.get("queryAll", 0) == before.get("queryAll", 0), "counts share composite calls"
    assert made["composite"] - before.get("composite", 0) <= 2 + -(-len(objects) // 5)

    ctx = open_context(config, engine=engine)
    failed = []
    for name in objects:
        try:
            P.copy_object("upfront", name, None, None, ctx)
        except Exception as exc:  # noqa: BLE001 - the one job the fault failed
            failed.append((name, str(exc)))
    assert len(failed) == 1 and "QUERY_TIMEOUT" in failed[0][1], failed
    copied = calls()
    assert copied.get("bulk2.query.create", 0) == made.get("bulk2.query.create", 0)
    assert copied.get("queryAll", 0) == made.get("queryAll", 0)

    P.copy_object("upfront", failed[0][0], None, None, ctx)  # the task's retry
    retried = calls()
    assert retried["bulk2.query.create"] - copied["bulk2.query.create"] == 1
    assert retried.get("queryAll", 0) - copied.get("queryAll", 0) == 1  # its count
    assert_full_copy(sync, P.finish_copy("upfront", objects, ctx))

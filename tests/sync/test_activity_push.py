"""Marketing activities logged to Salesforce as Tasks (``include/sfsync/push/activities.py``)
against the emulator, on SQLite and PostgreSQL: activities are inserted with plain SQL, as a
marketing tool would, and the Tasks are checked in the org's own truth (``/export``)."""

from __future__ import annotations

import pytest

from include.salesforce_emulator.demo import demo_sync_settings
from include.sfsync import pipeline as P
from include.sfsync.config import load_config
from include.sfsync.context import open_context
from include.sfsync.push.activities import push_activities
from include.sfsync.store.schema import ensure_activity_table

pytestmark = pytest.mark.integration

BASE = {**demo_sync_settings(), "bulk_poll_seconds": 0}
FORM, CLICK = "Filled out form", "Clicked link in e-mail"  # the default Subject prefixes


class Activities:
    """A synced demo org and marketing database, with helpers to log activities."""

    def __init__(self, org, mdb):
        self.org, self.mdb = org, mdb
        P.run_cycle("seed", config=self.config(), engine=mdb.engine)
        ensure_activity_table(mdb.engine)
        self.lead = self.person("sfdc_type = 'Lead' AND sfdc_contact_id IS NULL")
        self.other_lead = self.person("sfdc_type = 'Lead' AND sfdc_contact_id IS NULL "
                                      "AND id <> :i", i=self.lead["id"])
        self.converted = self.person("sfdc_type = 'Contact' AND sfdc_lead_id IS NOT NULL")

    def config(self, **activities):
        return load_config(overrides={**BASE, "push": {"activities": activities}})

    def person(self, where: str, **params) -> dict:
        return self.mdb.rows("person", f"sfdc_is_deleted = :f AND {where}", f=False,
                             **params)[0]

    def ts(self, when: str) -> str:
        """A UTC timestamp as a tool writes it in plain SQL."""
        return when + ("+00" if self.mdb.kind == "postgres" else "")

    def add(self, person: dict | int, activity_type: str, when: str, detail: str | None = None
            ) -> int:
        person_id = person if isinstance(person, int) else person["id"]
        with self.mdb.engine.begin() as conn:
            return conn.exec_driver_sql(
                "INSERT INTO marketing_activity (person_id, activity_type, occurred_at, detail) "
                f"VALUES ({person_id}, '{activity_type}', '{self.ts(when)}', "
                f"{'NULL' if detail is None else repr(detail)}) RETURNING id").scalar()

    def push(self, run_key: str = "push", **activities) -> dict:
        self.ctx = open_context(self.config(**activities), engine=self.mdb.engine)
        return push_activities(run_key, self.ctx)

    def row(self, activity_id: int) -> dict:
        return self.mdb.one("marketing_activity", "id = :i", i=activity_id)

    def status(self, *ids: int) -> list:
        return [self.row(i)["push_status"] for i in ids]

    def tasks(self) -> dict[str, dict]:
        """The org's Tasks created by the sync, by Id."""
        pushed = {r["sfdc_task_id"] for r in self.mdb.rows("marketing_activity")
                  if r["sfdc_task_id"]}
        return {t["Id"]: t for t in self.org.control("GET", "/export?objects=Task")["Task"]
                if t["Id"] in pushed}

    def task(self, activity_id: int) -> dict:
        return self.tasks()[self.row(activity_id)["sfdc_task_id"]]

    def usage(self) -> int:
        return self.org.control("GET", "/counters")["api_usage"]["used"]


@pytest.fixture
def act(org, marketing_db):
    return Activities(org, marketing_db)


def summary(pushed=0, suppressed=0, ignored=0, failed=0, waiting=0) -> dict:
    return {"pushed": pushed, "suppressed": suppressed, "ignored": ignored, "failed": failed,
            "waiting": waiting}


def without_calls(result: dict) -> dict:
    assert result["api_calls"] >= (1 if result["pushed"] + result["failed"] else 0)
    return {k: v for k, v in result.items() if k != "api_calls"}


def test_once_per_person_type_and_utc_day(act):
    first = act.add(act.lead, "form_filled", "2024-05-01 10:00:00", "Pricing request")
    same_day = [act.add(act.lead, "form_filled", "2024-05-01 11:00:00", "Demo request"),
                act.add(act.lead, "form_filled", "2024-05-01 23:30:00", "Trial")]
    click = act.add(act.lead, "email_clicked", "2024-05-01 12:00:00", "https://x.example/p")
    next_day = act.add(act.lead, "form_filled", "2024-05-02 00:30:00", "x" * 300)
    other = act.add(act.other_lead, "form_filled", "2024-05-01 10:30:00")
    before = act.usage()
    result = act.push()
    assert without_calls(result) == summary(pushed=4, suppressed=2)
    assert result["api_calls"] == act.usage() - before == 1  # one /composite call
    assert act.status(first, *same_day, click, next_day, other) == [
        "pushed", "suppressed", "suppressed", "pushed", "pushed", "pushed"]

    assert len(act.tasks()) == 4
    task = act.task(first)
    assert (task["WhoId"], task["Subject"], task["ActivityDate"], task["Status"],
            task["Priority"]) == (act.lead["sfdc_lead_id"], f"{FORM}: Pricing request",
                                  "2024-05-01", "Completed", "Normal")
    assert task["Description"].startswith("Pricing request\n") and "2024-05-01T10:00" in \
        task["Description"]
    assert act.task(click)["Subject"] == f"{CLICK}: https://x.example/p"
    long = act.task(next_day)
    assert (long["ActivityDate"], len(long["Subject"])) == ("2024-05-02", 255)
    assert long["Subject"].startswith(f"{FORM}: xxx")
    no_detail = act.task(other)
    assert (no_detail["WhoId"], no_detail["Subject"]) == (act.other_lead["sfdc_lead_id"], FORM)
    row = act.row(first)
    assert row["sfdc_task_id"] == task["Id"] and row["pushed_at"] is not None

    # A later cycle: the day already has its Task.
    late = act.add(act.lead, "form_filled", "2024-05-01 18:00:00", "Late")
    assert without_calls(act.push("push-2")) == summary(suppressed=1)
    assert act.status(late) == ["suppressed"] and len(act.tasks()) == 4
    count = act.mdb.one("sfsync_count", "run_key = 'push' AND sf_object = 'Task' AND "
                        "operation = 'push_activity'", order="run_key")
    assert (count["new"], count["skipped"], count["failed"], count["api_calls"]) == (4, 2, 0, 1)


def test_unconfigured_types_are_ignored(act):
    viewed = act.add(act.lead, "page_viewed", "2024-05-01 09:00:00", "/pricing")
    click = act.add(act.lead, "email_clicked", "2024-05-01 10:00:00", "https://x.example")
    form = act.add(act.lead, "form_filled", "2024-05-01 11:00:00", "Contact us")
    result = act.push(types={"form_filled": "Web form"})
    assert without_calls(result) == summary(pushed=1, ignored=2)
    assert act.status(viewed, click, form) == ["ignored", "ignored", "pushed"]
    assert [t["Subject"] for t in act.tasks().values()] == ["Web form: Contact us"]
    # Ignored for good: a later configuration logs only what is recorded from then on.
    assert without_calls(act.push("again")) == summary()
    assert act.status(click) == ["ignored"]


def test_per_cycle_cap_oldest_first(act):
    ids = [act.add(act.lead, "form_filled", f"2024-05-0{day} 10:00:00", f"Form {day}")
           for day in (5, 3, 4, 1, 2)]
    same_day = act.add(act.lead, "form_filled", "2024-05-01 12:00:00", "Again")
    oldest_first = [ids[3], ids[4], ids[1], ids[2], ids[0]]
    # Rows of a day that gets its Task this cycle are suppressed: they take no slot.
    assert without_calls(act.push("c1", max_per_cycle=2)) == summary(pushed=2, suppressed=1)
    assert act.status(*oldest_first, same_day) == ["pushed", "pushed", None, None, None,
                                                   "suppressed"]
    assert len(act.tasks()) == 2
    assert without_calls(act.push("c2", max_per_cycle=2)) == summary(pushed=2)
    assert act.status(*oldest_first) == ["pushed"] * 4 + [None]
    assert without_calls(act.push("c3", max_per_cycle=2)) == summary(pushed=1)
    assert sorted(t["ActivityDate"] for t in act.tasks().values()) == [
        f"2024-05-0{day}" for day in range(1, 6)]


def test_person_not_in_salesforce_waits_without_blocking_others(act):
    act.mdb.execute("INSERT INTO person (email, sync_to_salesforce) VALUES "
                    "('new@prospect.example', true)")
    newcomer = act.mdb.one("person", "email = 'new@prospect.example'")
    waiting = act.add(newcomer, "form_filled", "2024-05-01 08:00:00", "Newsletter")
    known = act.add(act.lead, "form_filled", "2024-05-01 09:00:00", "Newsletter")
    result = act.push(max_per_cycle=1)  # the waiting row is the oldest: it takes no slot
    assert without_calls(result) == summary(pushed=1, waiting=1)
    assert act.status(waiting, known) == [None, "pushed"]

    # The person reaches Salesforce (the push creates the lead): the activity follows.
    lead_id = act.org.control("POST", "/records/Lead", json={"records": [
        {"LastName": "Prospect", "Company": "New Co", "Email": "new@prospect.example"}]}
    )["ids"][0]
    act.mdb.execute("UPDATE person SET sfdc_type = 'Lead', sfdc_id = :l, sfdc_lead_id = :l "
                    "WHERE id = :i", l=lead_id, i=newcomer["id"])
    assert without_calls(act.push("later", max_per_cycle=1)) == summary(pushed=1)
    assert act.task(waiting)["WhoId"] == lead_id


def test_converted_lead_logs_on_the_contact(act):
    activity = act.add(act.converted, "email_clicked", "2024-05-01 10:00:00", "Webinar link")
    assert without_calls(act.push()) == summary(pushed=1)
    assert act.task(activity)["WhoId"] == act.converted["sfdc_contact_id"]
    assert act.converted["sfdc_contact_id"] != act.converted["sfdc_lead_id"]


def test_rows_of_a_merged_away_person_follow_the_survivor(act):
    loser = 10 ** 9  # its person row is gone, the merge is recorded
    act.mdb.execute("INSERT INTO sfsync_merge (loser_person_id, survivor_person_id, reason) "
                    "VALUES (:l, :s, 'test')", l=loser, s=act.lead["id"])
    activity = act.add(loser, "form_filled", "2024-05-01 10:00:00", "Pricing")
    assert without_calls(act.push()) == summary(pushed=1)
    assert act.row(activity)["person_id"] == act.lead["id"]
    assert act.task(activity)["WhoId"] == act.lead["sfdc_lead_id"]


def test_data_error_fails_the_row_and_records_it(act):
    act.mdb.execute("INSERT INTO person (email, sfdc_type, sfdc_lead_id) VALUES "
                    "('ghost@x.example', 'Lead', '00Q000000000000AAA')")
    ghost = act.mdb.one("person", "email = 'ghost@x.example'")
    bad = act.add(ghost, "form_filled", "2024-05-01 10:00:00", "Pricing")
    good = act.add(act.lead, "form_filled", "2024-05-01 10:00:00", "Pricing")
    assert without_calls(act.push()) == summary(pushed=1, failed=1)
    assert act.status(bad, good) == ["failed", "pushed"]
    error = act.mdb.one("sfsync_error", "sf_object = 'Task'")
    assert error["run_key"] == "push" and error["direction"] == "push" and error["error_code"]
    assert '"WhoId": "00Q000000000000AAA"' in error["record"]
    # Nothing was logged for that day: the next activity of the day is tried.
    retry = act.add(ghost, "form_filled", "2024-05-01 11:00:00", "Demo")
    assert without_calls(act.push("again")) == summary(failed=1)
    assert act.status(retry) == ["failed"]


def test_idle_cycle_makes_no_api_call(act):
    empty = act.push("empty")
    assert empty == {**summary(), "api_calls": 0} and act.ctx.client is None
    act.add(act.lead, "form_filled", "2024-05-01 10:00:00", "Pricing")
    assert act.push("busy")["pushed"] == 1
    before, calls = act.usage(), act.org.counters()
    idle = act.push("idle")
    assert idle == {**summary(), "api_calls": 0}
    assert act.ctx.client is None  # not even a login
    assert act.usage() == before and act.org.counters() == calls
    assert act.mdb.rows("sfsync_count", "run_key = 'idle'", order="run_key") == []


def test_request_limit_stops_the_cycle_without_losing_rows(act):
    ids = [act.add(act.lead, "form_filled", "2024-05-01 10:00:00", "Pricing"),
           act.add(act.lead, "form_filled", "2024-05-01 11:00:00", "Demo"),
           act.add(act.other_lead, "email_clicked", "2024-05-02 10:00:00", "Link")]
    act.org.control("POST", "/faults", json={"endpoint": "composite", "kind": "request_limit",
                                             "count": 1})
    result = act.push("limited")
    assert result["stopped"] == "REQUEST_LIMIT_EXCEEDED"
    assert without_calls({k: v for k, v in result.items() if k != "stopped"}) == summary()
    assert act.status(*ids) == [None, None, None]
    assert act.mdb.rows("sfsync_error") == []
    assert without_calls(act.push("next")) == summary(pushed=2, suppressed=1)
    assert act.status(*ids) == ["pushed", "suppressed", "pushed"]
    assert len(act.tasks()) == 2


def test_paging_keeps_ties_and_stored_formats(act, monkeypatch):
    from include.sfsync.push import activities as activity_push

    monkeypatch.setattr(activity_push, "PAGE", 2)
    people = (act.lead, act.other_lead, act.converted)
    tied = [act.add(p, t, "2024-05-01 10:00:00") for p in people
            for t in ("form_filled", "email_clicked")]  # one second, more than a page
    t_format = act.add(act.lead, "form_filled", "2024-05-01T10:00:00", "T separator")
    midnight = act.add(act.lead, "form_filled", "2024-05-02 00:00:00", "Midnight")
    assert without_calls(act.push()) == summary(pushed=7, suppressed=1)
    assert act.status(*tied, t_format, midnight) == ["pushed"] * 6 + ["suppressed", "pushed"]
    later = act.add(act.lead, "form_filled", "2024-05-02 13:00:00", "Later")
    assert without_calls(act.push("later")) == summary(suppressed=1)
    assert act.status(later) == ["suppressed"]

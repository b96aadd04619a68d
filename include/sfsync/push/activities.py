"""Marketing activities logged to Salesforce as Tasks on the person's lead or contact.

Any marketing tool records an activity with plain SQL, e.g.::

    INSERT INTO marketing_activity (person_id, activity_type, occurred_at, detail)
    VALUES (42, 'form_filled', '2024-05-01 10:00:00', 'Pricing request');

``occurred_at`` is UTC (on SQLite: ``YYYY-MM-DD HH:MM:SS`` text, as ``CURRENT_TIMESTAMP`` writes
it, which is also the column's default). The sync fills the bookkeeping columns; ``push_status``
null means "not considered yet". One cycle of :func:`push_activities`, oldest activity first:

* a type not under ``push.activities.types`` is marked ``ignored`` (for good: adding the type
  later logs only activities recorded from then on);
* the Task goes on the person's contact (``sfdc_contact_id``, also a converted lead's) or else
  on the lead; a person not in Salesforce yet keeps its rows pending (they are looked at again
  every cycle) without holding back anyone else's; rows of a person merged away follow the merge;
* at most one Task per person, type and UTC day of ``occurred_at``: the others of that day are
  marked ``suppressed`` once the first one is ``pushed`` (if it fails, the next one is tried);
* at most ``max_per_cycle`` Tasks are sent per cycle; the rest wait for the next cycle;
* a data error is an ``sfsync_error`` row and the activity is ``failed`` (not retried); a
  transient one keeps it pending; ``REQUEST_LIMIT_EXCEEDED`` stops the cycle with every
  unsent row pending;
* ``pushed_at`` is written before a Task is sent: a pending row that has one was sent by a
  cycle that never learnt the outcome (its worker died). The next cycle looks for that Task
  (on the person, created since, with the same subject, date and description) and marks the
  row pushed when it exists, instead of logging it twice.

Rows and counts (``sfsync_count``: Task / push_activity) are written in one transaction per
write batch (1,000 Tasks, one API call). A cycle with nothing pending makes no API call.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta

import sqlalchemy as sa
from more_itertools import chunked

from include.sfsync.catalog import CREATE_CLOCK_SKEW
from include.sfsync.context import SyncContext
from include.sfsync.errors import RequestLimitExceeded, WriteInterrupted
from include.sfsync.salesforce import soql
from include.sfsync.salesforce.reads import query_all
from include.sfsync.salesforce.writes import COLLECTION_SIZE, write_with_retries
from include.sfsync.store.engine import reader, utcnow
from include.sfsync.store.ledger import COUNT_KEYS, add_api_calls, record_counts, record_error
from include.sfsync.store.schema import activity_t, ensure_activity_table

log = logging.getLogger(__name__)

OPERATION = "push_activity"
PAGE = 1000  # pending rows read at a time
BATCH = 5 * COLLECTION_SIZE  # Tasks per write: one /composite call
RESULT_KEYS = ("pushed", "suppressed", "ignored", "failed", "waiting", "api_calls")
# The Task fields a Task sent by a lost call is recognised by.
MATCHED = ("WhoId", "Subject", "ActivityDate", "Description")


def _day(value: datetime) -> date:
    return value.astimezone(UTC).date()


def task_record(prefix: str, who_id: str, occurred_at: datetime, detail: str | None) -> dict:
    return {"WhoId": who_id, "Subject": (f"{prefix}: {detail}" if detail else prefix)[:255],
            "ActivityDate": _day(occurred_at).isoformat(), "Status": "Completed",
            "Priority": "Normal",
            "Description": (f"{detail}\n" if detail else "") + "Occurred at "
            + occurred_at.isoformat()}


class _Cycle:
    def __init__(self, run_key: str, ctx: SyncContext):
        self.run_key, self.ctx = run_key, ctx
        self.settings = ctx.config.push.activities
        self.result = dict.fromkeys(RESULT_KEYS, 0)
        self.counts: Counter = Counter()  # this run's sfsync_count row, kept cumulative
        self.pushed_keys: set = set()  # (person, type, day) logged during this cycle
        self.leaders: dict = {}  # key -> (row id, Task) to send
        self.followers: dict = {}  # key -> row ids, suppressed once the leader is pushed
        self.suppressed: list[int] = []  # rows whose key was logged before
        self.sent = 0  # Tasks sent this cycle, whatever their outcome

    # --- reading -----------------------------------------------------------------------

    def pages(self):
        t, person = activity_t, self.ctx.tables["person"]
        # SQLite: page on the stored text itself (a tool may write "2024-05-01 10:00:00", the
        # bound datetime would read "2024-05-01 10:00:00.000000" and compare differently).
        at = sa.type_coerce(t.c.occurred_at, sa.Text) \
            if self.ctx.engine.dialect.name == "sqlite" else t.c.occurred_at
        query = sa.select(t.c.id, t.c.person_id, t.c.activity_type, t.c.occurred_at, t.c.detail,
                          at.label("sort_at"), person.c.sfdc_contact_id, person.c.sfdc_lead_id) \
            .select_from(t.outerjoin(person, person.c.id == t.c.person_id)) \
            .where(t.c.push_status.is_(None), t.c.activity_type.in_(list(self.settings.types))) \
            .order_by(at, t.c.id).limit(PAGE)
        last = None
        while True:
            page_q = query if last is None else query.where(sa.or_(
                at > last.sort_at, sa.and_(at == last.sort_at, t.c.id > last.id)))
            with reader(self.ctx.engine).connect() as conn:
                rows = conn.execute(page_q).all()
                if not rows:
                    return
                logged = self.logged_before(conn, rows)
            yield rows, logged
            last = rows[-1]

    @staticmethod
    def logged_before(conn, rows) -> set:
        """Keys of the page that have a pushed Task already (earlier cycles)."""
        t = activity_t
        # A day wider on each side: on SQLite the comparison is on text (see ``pages``).
        first = datetime.combine(min(_day(r.occurred_at) for r in rows), time(), tzinfo=UTC)
        last = datetime.combine(max(_day(r.occurred_at) for r in rows), time(), tzinfo=UTC)
        found = conn.execute(sa.select(t.c.person_id, t.c.activity_type, t.c.occurred_at).where(
            t.c.push_status == "pushed", t.c.person_id.in_({r.person_id for r in rows}),
            t.c.activity_type.in_({r.activity_type for r in rows}),
            t.c.occurred_at >= first - timedelta(days=1),
            t.c.occurred_at < last + timedelta(days=2)))
        return {(r.person_id, r.activity_type, _day(r.occurred_at)) for r in found}

    # --- one cycle ---------------------------------------------------------------------

    def run(self) -> dict:
        engine, t = self.ctx.engine, activity_t
        count_t = self.ctx.books["count"]
        with reader(engine).connect() as conn:
            if conn.execute(sa.select(t.c.id).where(t.c.push_status.is_(None)).limit(1)).first() \
                    is None:
                return self.result  # idle: not even a Salesforce login
            row = conn.execute(sa.select(count_t).where(
                count_t.c.run_key == self.run_key, count_t.c.sf_object == "Task",
                count_t.c.operation == OPERATION)).first()
            if row is not None:
                self.counts.update({k: getattr(row, k) for k in (*COUNT_KEYS, "api_calls")})
        with engine.begin() as conn:
            self.follow_merges(conn)
        try:
            self.settle_in_doubt()
        except RequestLimitExceeded as exc:
            log.warning("activities: %s; the rest waits for the next cycle", exc)
            self.result["stopped"] = "REQUEST_LIMIT_EXCEEDED"
            return self.result
        with engine.begin() as conn:
            ignored = conn.execute(t.update().where(
                t.c.push_status.is_(None), t.c.activity_type.not_in(list(self.settings.types)))
                .values(push_status="ignored")).rowcount
            self.result["ignored"] = ignored
            if ignored:
                self.counts["skipped"] += ignored
                self.record_counts(conn)
        try:
            for rows, logged in self.pages():
                if any(self.consider(row, logged) for row in rows):
                    break  # the cap is reached
                if len(self.suppressed) >= PAGE:
                    self.flush()
            self.flush()
        except RequestLimitExceeded as exc:
            log.warning("activities: %s; the rest waits for the next cycle", exc)
            self.result["stopped"] = "REQUEST_LIMIT_EXCEEDED"
        return self.result

    def consider(self, row, logged: set) -> bool:
        """Place one pending row; True once the cycle's cap of Tasks is reached."""
        who = row.sfdc_contact_id or row.sfdc_lead_id
        if who is None:
            self.result["waiting"] += 1
            return False
        key = (row.person_id, row.activity_type, _day(row.occurred_at))
        if key in logged or key in self.pushed_keys:
            self.suppressed.append(row.id)
        elif key in self.leaders:
            self.followers.setdefault(key, []).append(row.id)
        else:
            prefix = self.settings.types[row.activity_type]
            self.leaders[key] = (row.id, task_record(prefix, who, row.occurred_at, row.detail))
            if self.sent + len(self.leaders) >= self.settings.max_per_cycle:
                return True
            if len(self.leaders) == BATCH:
                self.flush()
        return False

    def settle_in_doubt(self) -> None:
        """Rows sent by a cycle that died before it learnt the outcome: pushed if their Task
        exists (one query per 300 people), else sent again as any pending row."""
        t, person = activity_t, self.ctx.tables["person"]
        with reader(self.ctx.engine).connect() as conn:
            rows = conn.execute(sa.select(
                t.c.id, t.c.activity_type, t.c.occurred_at, t.c.detail, t.c.pushed_at,
                person.c.sfdc_contact_id, person.c.sfdc_lead_id).select_from(
                t.join(person, person.c.id == t.c.person_id)).where(
                t.c.push_status.is_(None), t.c.pushed_at.is_not(None))).all()
        sent = {r.id: task_record(self.settings.types[r.activity_type],
                                  r.sfdc_contact_id or r.sfdc_lead_id, r.occurred_at, r.detail)
                for r in rows if r.activity_type in self.settings.types
                and (r.sfdc_contact_id or r.sfdc_lead_id)}
        if not sent:
            return
        since = min(r.pushed_at for r in rows) - CREATE_CLOCK_SKEW
        client = self.ctx.salesforce()
        before = client.api_calls
        queries = [soql.select("Task", ["Id", *MATCHED], conditions=[
            soql.where("CreatedDate", ">=", since), soql.one_of("WhoId", ids)])
            for ids in soql.in_lists(sorted({task["WhoId"] for task in sent.values()}))]
        tasks = [r for part in query_all(client, queries) for r in part]
        calls = client.api_calls - before
        self.result["api_calls"] += calls
        self.counts["api_calls"] += calls
        add_api_calls(self.ctx.engine, self.run_key, calls, client.api_usage)
        with self.ctx.engine.begin() as conn:
            for row_id, task in sent.items():
                found = next((r for r in tasks if all(
                    (r.get(k) or "")[:15] == (task[k] or "")[:15] if k == "WhoId"
                    else r.get(k) == task[k] for k in MATCHED)), None)
                if found is None:
                    continue
                tasks.remove(found)
                conn.execute(t.update().where(t.c.id == row_id).values(
                    push_status="pushed", sfdc_task_id=found["Id"]))
                log.info("activity %s: Task %s was created by an earlier attempt", row_id,
                         found["Id"])
                self.result["pushed"] += 1
                self.counts["new"] += 1
            self.record_counts(conn)

    def follow_merges(self, conn) -> None:
        """Rows of a person merged into another (the person row is gone) move to the survivor."""
        t, merge_t, person = activity_t, self.ctx.books["merge"], self.ctx.tables["person"]
        survivor = sa.select(merge_t.c.survivor_person_id).where(
            merge_t.c.loser_person_id == t.c.person_id).order_by(
            merge_t.c.merged_at.desc()).limit(1).scalar_subquery()
        for _ in range(10):  # a survivor merged away later: follow the chain
            moved = conn.execute(t.update().where(
                t.c.person_id.in_(sa.select(merge_t.c.loser_person_id)),
                ~sa.exists().where(person.c.id == t.c.person_id)).values(person_id=survivor))
            if not moved.rowcount:
                return

    def flush(self) -> None:
        """Send the batch's Tasks, then mark its rows and the counts in one transaction."""
        leaders, self.leaders = list(self.leaders.items()), {}
        followers, self.followers = self.followers, {}
        suppressed, self.suppressed = self.suppressed, []
        outcomes: dict = {}
        limit = None
        if leaders:
            with self.ctx.engine.begin() as conn:  # the journal: sent, outcome unknown yet
                for part in chunked([row_id for _k, (row_id, _task) in leaders], PAGE):
                    conn.execute(activity_t.update().where(activity_t.c.id.in_(part))
                                 .values(pushed_at=utcnow()))
            client = self.ctx.salesforce()
            before = client.api_calls
            try:
                outcomes = write_with_retries(
                    client, "POST", "Task", [(row_id, task) for _k, (row_id, task) in leaders],
                    retries=self.ctx.config.push.transient_retries)
                self.sent += len(leaders)
            except WriteInterrupted as exc:
                # what got through before the limit (or a failed call) is marked; the rest is
                # sent next cycle (or by the task's retry)
                limit, outcomes = exc, exc.outcomes
            finally:
                calls = client.api_calls - before
                self.result["api_calls"] += calls
                self.counts["api_calls"] += calls
                add_api_calls(self.ctx.engine, self.run_key, calls, client.api_usage)
        t, now = activity_t, utcnow()
        with self.ctx.engine.begin() as conn:
            for key, (row_id, task) in leaders:
                outcome = outcomes.get(row_id)
                if outcome is None and not isinstance(limit, RequestLimitExceeded):
                    continue  # a failed call: in doubt (pushed_at kept), settled next cycle
                if outcome is None or outcome.transient:  # not made: no longer in doubt
                    conn.execute(t.update().where(t.c.id == row_id).values(pushed_at=None))
                    continue
                if outcome.ok:
                    conn.execute(t.update().where(t.c.id == row_id).values(
                        push_status="pushed", sfdc_task_id=outcome.id, pushed_at=now))
                    self.pushed_keys.add(key)
                    suppressed += followers.get(key, [])
                    self.result["pushed"] += 1
                    self.counts["new"] += 1
                else:
                    record_error(conn, self.run_key, "Task", outcome,
                                   sfdc_id=None, record={"marketing_activity_id": row_id, **task})
                    conn.execute(t.update().where(t.c.id == row_id).values(
                        push_status="failed", pushed_at=now))
                    self.result["failed"] += 1
                    self.counts["failed"] += 1
            for part in chunked(suppressed, PAGE):
                conn.execute(t.update().where(t.c.id.in_(part)).values(push_status="suppressed"))
            self.result["suppressed"] += len(suppressed)
            self.counts["skipped"] += len(suppressed)
            if leaders or suppressed:
                self.record_counts(conn)
        if limit is not None:
            raise limit

    def record_counts(self, conn) -> None:
        record_counts(conn, self.run_key, "Task", OPERATION,
                      dict(self.counts), self.counts["api_calls"])


def push_activities(run_key: str, ctx: SyncContext) -> dict:
    """One cycle of logging pending marketing activities as Tasks (see the module docstring).

    Returns ``pushed``, ``suppressed``, ``ignored``, ``failed``, ``waiting`` (person not in
    Salesforce yet), ``api_calls`` and, when the org's API allowance ran out, ``stopped``.
    """
    ensure_activity_table(ctx.engine)
    return _Cycle(run_key, ctx).run()

"""Chaos convergence: seeded, randomised two-sided runs of the sync against the emulator.

    .venv/bin/python scripts/chaos.py [--seeds 5] [--seed-start 1] [--backend both|sqlite|postgres]
                                      [--ops 120] [--rounds 6] [--org standard]
    .venv/bin/python scripts/chaos.py --seed 7 --backend sqlite        # replay one seed
    make chaos SEEDS=50 [SEED_START=1] [BACKEND=sqlite|postgres]

Per seed and backend: an emulator process with the plain ``standard`` org profile (reseeded
with the seed; no custom object or field of ours), a fresh marketing database (a SQLite file, or
a throwaway PostgreSQL database), the initial copy, then ``--rounds`` rounds. A round applies
its share of a plan drawn from the seed alone (same seed, same operations: the plan's digest is
printed), then runs one incremental cycle (``pipeline.run_cycle``) with faults armed:

* Salesforce side (simple-salesforce REST and the emulator's control API): creates, updates,
  deletes and undeletes of leads and contacts, merges, lead conversions (new contact, or into
  an existing one), campaign member adds, status changes and removals, campaign renames;
* marketing side (plain SQL on the synced tables, as a marketing app writes them): person
  edits, inserts with a new, a missing and an already-used e-mail, person deletes (local only),
  campaign member inserts, status changes and deletes, campaign inserts and renames;
* faults: about one call in ten (HTTP 500/503, ``UNABLE_TO_LOCK_ROW`` per record, session
  expiry, ``QUERY_TIMEOUT``, ``REQUEST_LIMIT_EXCEEDED``), drawn by the emulator from seeded
  random sequences (``POST /__emulator__/faults`` with ``probability`` and ``seed``);
* kills: at least two cycles run in a subprocess (``scripts/chaos.py --worker``) that is
  SIGKILLed, one at a random moment and one while a create call is in flight (the emulator
  holds the answer of the first create back: fault ``slow_answer`` with ``creates_only``; the
  record exists, the worker never learns its id; when a fault stopped that cycle before any
  create was sent, the kill is tried again on its creates). A failed or killed cycle is
  retried with the same run key, as Airflow retries the task.

Cycles run seconds apart on the real clock, with the emulator's replication endpoints
working to the second instead of the minute (``--advance`` moves the emulator's clock on
instead, away from the database's: see ``Settings.advance``). Then the faults stop and cycles
run until one writes nothing on either side (at most 6). Five counts must be zero:

* divergent fields: every synced field of every record, Salesforce against the marketing
  database under the field mapping (``catalog``) and the documented policies (deleted records:
  only the deleted flag; converted leads: their lead-only columns; a person deleted locally
  stays deleted unless Salesforce changed it later); missing and ghost rows count too;
* duplicates made by the sync: two live Salesforce records carrying one marketing row (its
  marker), a record the sync created with an e-mail another live record had, two local rows
  for one Salesforce record (or one marketing row), two live local members for one membership;
* revived deletes: a record deleted in Salesforce live again, a membership removed on either
  side back again, a person row deleted locally back although Salesforce did not change its
  record after the sync last read it (a change in the same sync window may bring it back);
* lost marketing edits: the last marketing edit of a field (inserts included) that Salesforce
  did not change later, nor in the same sync window where its policy wins, must be the value
  Salesforce ends with;
* writes in the converged cycle: records Salesforce changed plus rows the database changed.

Exit status 1 when any seed fails; each failing seed prints how to replay it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import select
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

POSTGRES_URL = os.environ.get("SFSYNC_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/postgres")
WORKER_READY = "CHAOS_WORKER_READY"
ATTEMPTS = 4  # tries of one cycle (the first and Airflow's retries), same run key
QUIET_MAX = 6  # cycles after the faults stop, until one writes nothing
SETTLE_SECONDS = 600  # clock moved before each quiet cycle: past the 300 s overlap
CREATE_HOLD_SECONDS = 3.0  # how long the emulator holds back the answer of a create
CREATE_KILL_TRIES = 3  # attempts at killing a cycle mid-create while no create was sent yet
# (kind, probability per call, or per record for row locks): about 10 % of calls in all
# Draws happen per request and per composite sub-request (about six per API call), per record
# for row locks: tuned so that faults fire on about 10 % of the API calls a cycle makes.
FAULT_MIX = (("http_500", 0.003), ("http_503", 0.003), ("session_expiry", 0.015),
             ("query_timeout", 0.005), ("request_limit", 0.002), ("unable_to_lock_row", 0.03))
KILL_SLOW = ("slow", 0.25, 0.12)  # in killed cycles: stretch calls so the kill lands anywhere
COUNTS = ("divergent", "duplicates", "revived", "lost_edits", "converged_writes")
# Marketing columns the harness edits (person), and the Salesforce fields behind them.
PERSON_COLUMNS = {"title": ("Title", "Title"), "phone": ("Phone", "Phone"),
                  "mobile_phone": ("MobilePhone", "MobilePhone"), "city": ("City", "MailingCity"),
                  "first_name": ("FirstName", "FirstName"), "last_name": ("LastName", "LastName"),
                  "email": ("Email", "Email"), "company": ("Company", None),
                  "department": (None, "Department")}
FIELD_COLUMN = {f: col for col, pair in PERSON_COLUMNS.items() for f in pair if f}
POLICY = {"Lead": "marketing", "Contact": "salesforce", "Campaign": "salesforce",
          "CampaignMember": "salesforce"}  # the default conflict policy (README)
log = logging.getLogger("chaos")


# --- settings and results ---------------------------------------------------------------------

@dataclass
class Settings:
    ops: int = 120  # operations planned per seed (both sides)
    rounds: int = 6  # rounds of operations, each followed by a cycle with faults
    org: str = "standard"  # the emulator's org profile (and size): never the demo org
    postgres_url: str = POSTGRES_URL  # where throwaway databases are made
    db_url: str | None = None  # a PostgreSQL database to use as it is (the tests' fixture)
    verbose: bool = False
    keep: bool = False  # keep the working directory (emulator data, SQLite file, worker logs)
    # Move the emulator's clock on between cycles (the plan's "advance", 10 minutes before each
    # quiet cycle), as if cycles ran minutes apart, with the replication endpoints in whole
    # minutes as Salesforce's are. Off by default: the database's clock does not move with it,
    # and the sync compares the two clocks in places (the tombstone of a row deleted before it
    # held a version read back, store.capture.buried; which record a lost create made), where
    # a skew of minutes no real org and database have would decide. Without it the org's clock
    # is the real one, its replication endpoints work to the second
    # (``replication_granularity_seconds: 1``), cycles run seconds apart and every change stays
    # inside the 300 s overlap, re-read by each cycle.
    advance: bool = False


@dataclass
class SeedResult:
    seed: int
    backend: str
    ops_planned: int = 0
    ops_done: int = 0
    ops_skipped: int = 0
    plan_digest: str = ""
    faults: int = 0
    calls: int = 0
    kills: int = 0
    kills_in_create: int = 0
    cycles: int = 0
    quiet_cycles: int = 0
    cycle_errors: Counter = field(default_factory=Counter)
    skips: Counter = field(default_factory=Counter)  # operations skipped, by why (errors)
    fault_kinds: Counter = field(default_factory=Counter)
    counts: dict = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    details: dict = field(default_factory=lambda: defaultdict(list))
    notes: list = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None  # the harness itself failed
    args: list = field(default_factory=list)  # the settings that differ from the defaults

    @property
    def ok(self) -> bool:
        return self.error is None and not any(self.counts.values()) and self.kills >= 2 \
            and self.kills_in_create >= 1

    def replay(self) -> str:
        extra = " ".join(self.args)
        make_args = f' CHAOS_ARGS="{extra}"' if extra else ""
        return (f"make chaos SEEDS=1 SEED_START={self.seed} BACKEND={self.backend}{make_args}   "
                f"(or .venv/bin/python scripts/chaos.py --seed {self.seed} --backend "
                f"{self.backend}{' ' + extra if extra else ''})")

    def line(self) -> str:
        share = f"{100 * self.faults / self.calls:.0f}%" if self.calls else "-"
        counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.counts.items())
        return (f"seed {self.seed} {self.backend}: ops {self.ops_done} (+{self.ops_skipped} "
                f"skipped, plan {self.plan_digest}), faults {self.faults} of {self.calls} calls "
                f"({share}), kills {self.kills} ({self.kills_in_create} mid-create), cycles "
                f"{self.cycles} (+{self.quiet_cycles} quiet) | {counts} -> "
                f"{'PASS' if self.ok else 'FAIL'} [{self.seconds:.0f}s]")

    def report(self, limit: int = 12) -> str:
        lines = [self.line()]
        if self.error:
            lines.append(f"  harness error: {self.error}")
        if self.kills < 2 or self.kills_in_create < 1:
            lines.append(f"  kills landed: {self.kills} (need 2), mid-create: "
                         f"{self.kills_in_create} (need 1)")
        for name in COUNTS:
            found = self.details.get(name) or []
            for item in found[:limit]:
                lines.append(f"  {name}: {item}")
            if len(found) > limit:
                lines.append(f"  {name}: ... {len(found) - limit} more")
        for note in self.notes:
            lines.append(f"  note: {note}")
        if self.fault_kinds:
            lines.append("  faults: " + ", ".join(f"{k} {n}" for k, n in
                                                  sorted(self.fault_kinds.items())))
        errors = [f"{n}x {k}" for k, n in self.skips.most_common() if ": " in k]
        if errors:
            lines.append("  operations refused: " + "; ".join(errors[:6]))
        if self.cycle_errors:
            lines.append("  cycle errors (retried): " + "; ".join(
                f"{n}x {e}" for e, n in self.cycle_errors.most_common(6)))
        if not self.ok:
            lines.append(f"  replay: {self.replay()}")
        return "\n".join(lines)


# --- the plan: drawn from the seed alone --------------------------------------------------------

@dataclass
class PModel:
    """The planner's view of one human (a handle): what the plan itself did to it."""

    handle: str
    kind: str | None  # Lead / Contact (None: a marketing insert, not known in Salesforce)
    sf: str = "live"  # live / deleted / gone (merged away)
    local: bool = True  # a person row exists locally (as far as the plan knows)
    email: str | None = None


class Planner:
    """Plans every round of one seed from the seed org's state and the seed, nothing else:
    targets are handles (``s:<id>`` seed people, ``c<n>`` created in Salesforce, ``m<n>``
    inserted by marketing; ``C:<id>`` seed campaigns, ``mc<n>`` marketing campaigns)."""

    SF_WEIGHTS = {"sf_create_lead": 6, "sf_create_contact": 3, "sf_update": 16, "sf_delete": 4,
                  "sf_undelete": 2, "sf_merge": 3, "sf_convert": 4, "sf_member_add": 5,
                  "sf_member_status": 3, "sf_member_delete": 3, "sf_campaign_update": 1}
    MK_WEIGHTS = {"mk_edit": 20, "mk_insert_new": 6, "mk_insert_noemail": 3, "mk_insert_used": 4,
                  "mk_delete": 3, "mk_member_insert": 5, "mk_member_status": 3,
                  "mk_member_delete": 3, "mk_campaign_insert": 1, "mk_campaign_edit": 2}

    def __init__(self, seed: int, state: dict, settings: Settings):
        self.seed = seed
        self.settings = settings
        self.rng = random.Random(f"sfsync-chaos-plan-{seed}")
        self.people: dict[str, PModel] = {}
        for h, p in state["people"].items():
            self.people[h] = PModel(h, p["kind"], "deleted" if p["deleted"] else "live",
                                    local=True, email=p["email"])
        self.campaigns: list[str] = list(state["campaigns"])
        self.statuses: dict[str, list[str]] = {c: list(s) for c, s in state["statuses"].items()}
        self.members: set[tuple[str, str]] = set(state["members"])
        self.accounts: list[str] = list(state["accounts"])
        self.n = 0
        self.fresh_local: set[str] = set()  # created in Salesforce this round: local next round
        # what each side changed this round and the round before (handle -> columns): later
        # operations aim at them now and then, for same-field conflicts in one sync window
        # and for local deletes just after a Salesforce change (the overlap re-read)
        self.sf_changed: dict[str, set[str]] = {}
        self.mk_changed: dict[str, set[str]] = {}
        self.recent: dict[str, int] = {}  # handle -> the round it last changed on either side
        self.r = 0

    def next(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def value(self, side: str, column: str) -> str:
        self.n += 1
        if column in {"phone", "mobile_phone", "Phone", "MobilePhone"}:
            return f"+1 555 {self.seed % 100:02d}{self.n:05d}"
        return f"{side}-{column[:5]}-{self.seed}-{self.n}"

    def email(self) -> str:
        self.n += 1
        return f"chaos.{self.seed}.{self.n}@example.net"

    def plan(self) -> list[dict]:
        rounds = []
        per_round = max(4, self.settings.ops // max(1, self.settings.rounds))
        # a random kill that misses (the worker ended first) is owed to the next cycle
        kills = {1: "random", 2: "create"} if self.settings.rounds >= 4 else \
            {0: "random", 1: "create"}
        for r in range(self.settings.rounds):
            self.r = r
            for h in self.fresh_local:
                if h in self.people:
                    self.people[h].local = True
            self.fresh_local = set()
            self.sf_changed, self.mk_changed = {}, {}
            ops = []
            for _ in range(per_round):
                op = self.draw()
                if op:
                    ops.append(op)
            if kills.get(r) == "create":  # the cycle killed mid-create must have creates
                ops.append(self.mk_insert("noemail", last_name=False))
                ops.append(self.mk_insert("new"))
            rounds.append({"round": r, "ops": ops, "kill": kills.get(r),
                           "kill_at": round(self.rng.uniform(0.05, 0.95), 3),
                           "advance": self.rng.choice([20, 60, 150, 280, 420])})
        return rounds

    def draw(self) -> dict | None:
        for _ in range(8):
            weights = self.SF_WEIGHTS if self.rng.random() < 0.5 else self.MK_WEIGHTS
            kind = self.rng.choices(list(weights), list(weights.values()))[0]
            op = getattr(self, kind)() if not kind.startswith("mk_insert") else \
                self.mk_insert(kind.rsplit("_", 1)[1])
            if op:
                return op
        return None

    # candidates ------------------------------------------------------------------------------

    def pick(self, pred) -> PModel | None:
        found = [p for p in self.people.values() if pred(p)]
        return self.rng.choice(found) if found else None

    def live(self, kind: str | None = None, local: bool | None = None) -> PModel | None:
        return self.pick(lambda p: p.sf == "live" and (kind is None or p.kind == kind)
                         and (local is None or p.local == local))

    def pair(self) -> tuple[str, str] | None:
        pairs = sorted(p for p in self.members if p[1] in self.people
                       and self.people[p[1]].sf == "live")
        return self.rng.choice(pairs) if pairs else None

    def drop_members(self, handle: str, to: str | None = None) -> None:
        for camp, h in sorted(self.members):
            if h == handle:
                self.members.discard((camp, h))
                if to is not None:
                    self.members.add((camp, to))

    # Salesforce side -------------------------------------------------------------------------

    def sf_create_lead(self) -> dict:
        h = self.next("c")
        email = self.email() if self.rng.random() < 0.8 else None
        values = {"LastName": f"Chaos {h}", "FirstName": self.value("sf", "first"),
                  "Company": f"Chaos Co {self.n % 7}", "Title": self.value("sf", "title")}
        if email:
            values["Email"] = email
        self.people[h] = PModel(h, "Lead", local=False, email=email)
        self.fresh_local.add(h)
        self.recent[h] = self.r
        return {"op": "sf_create", "sobject": "Lead", "handle": h, "values": values}

    def sf_create_contact(self) -> dict | None:
        if not self.accounts:
            return None
        h = self.next("c")
        email = self.email()
        self.people[h] = PModel(h, "Contact", local=False, email=email)
        self.fresh_local.add(h)
        return {"op": "sf_create", "sobject": "Contact", "handle": h, "values": {
            "LastName": f"Chaos {h}", "FirstName": self.value("sf", "first"), "Email": email,
            "AccountId": self.rng.choice(self.accounts)}}

    def changed(self, side: dict, h: str, columns) -> None:
        side.setdefault(h, set()).update(columns)
        self.recent[h] = self.r

    def aim(self, other: dict[str, set[str]], pred) -> tuple[PModel, list[str]] | None:
        """Now and then, a person the other side changed this round, and those columns."""
        found = [h for h in sorted(other) if h in self.people and pred(self.people[h])]
        if not found or self.rng.random() >= 0.3:
            return None
        h = self.rng.choice(found)
        return self.people[h], sorted(other[h])

    def sf_update(self) -> dict | None:
        aimed = self.aim(self.mk_changed, lambda q: q.sf == "live")
        p = aimed[0] if aimed else self.live()
        if p is None:
            return None
        names = ["Title", "Phone", "MobilePhone", "FirstName", "City"] + (
            ["Company"] if p.kind == "Lead" else ["Department"] if p.kind == "Contact" else [])
        if aimed:
            names = [n for n in names if FIELD_COLUMN.get(n) in aimed[1]] or names
        values = {}
        for name in self.rng.sample(names, min(len(names), self.rng.choice([1, 1, 2]))):
            values[name] = self.value("sf", name)
        if self.rng.random() < 0.1:
            values["Email"] = p.email = self.email()
        self.changed(self.sf_changed, p.handle, {FIELD_COLUMN.get(n, n) for n in values})
        return {"op": "sf_update", "handle": p.handle, "values": values}

    def sf_delete(self) -> dict | None:
        p = self.live()
        if p is None:
            return None
        p.sf = "deleted"
        self.drop_members(p.handle)
        self.recent[p.handle] = self.r
        return {"op": "sf_delete", "handle": p.handle}

    def sf_undelete(self) -> dict | None:
        p = self.pick(lambda q: q.sf == "deleted")
        if p is None:
            return None
        p.sf = "live"
        self.recent[p.handle] = self.r
        return {"op": "sf_undelete", "handle": p.handle}

    def sf_merge(self) -> dict | None:
        kind = self.rng.choice(["Lead", "Contact"])
        found = [p for p in self.people.values() if p.sf == "live" and p.kind == kind]
        if len(found) < 2:
            return None
        master, loser = self.rng.sample(found, 2)
        loser.sf = "gone"
        self.drop_members(loser.handle, to=master.handle)
        return {"op": "sf_merge", "sobject": kind, "master": master.handle,
                "loser": loser.handle}

    def sf_convert(self) -> dict | None:
        lead = self.live("Lead")
        if lead is None:
            return None
        into = self.live("Contact") if self.rng.random() < 0.3 else None
        if into is not None:
            lead.sf = "gone"
            self.drop_members(lead.handle, to=into.handle)
        else:
            lead.kind = "Contact"
            self.recent[lead.handle] = self.r
        return {"op": "sf_convert", "lead": lead.handle,
                "contact": into.handle if into else None}

    def new_member(self, op: str, p) -> dict | None:
        """A membership of person ``p`` in a random campaign it is not in yet."""
        if p is None or not self.campaigns:
            return None
        camp = self.rng.choice(self.campaigns)
        if (camp, p.handle) in self.members:
            return None
        self.members.add((camp, p.handle))
        return {"op": op, "campaign": camp, "handle": p.handle,
                "status": self.rng.choice(self.statuses.get(camp) or ["Sent"])}

    def sf_member_add(self) -> dict | None:
        return self.new_member("sf_member_add", self.live())

    def sf_member_status(self) -> dict | None:
        pair = self.pair()
        if pair is None:
            return None
        return {"op": "sf_member_status", "campaign": pair[0], "handle": pair[1],
                "status": self.rng.choice(self.statuses.get(pair[0]) or ["Sent"])}

    def sf_member_delete(self) -> dict | None:
        pair = self.pair()
        if pair is None:
            return None
        self.members.discard(pair)
        return {"op": "sf_member_delete", "campaign": pair[0], "handle": pair[1]}

    def sf_campaign_update(self) -> dict | None:
        if not self.campaigns:
            return None
        camp = self.rng.choice(self.campaigns)
        return {"op": "sf_campaign_update", "campaign": camp,
                "values": {"Name": self.value("sf", "campaign")}}

    # marketing side --------------------------------------------------------------------------

    def mk_edit(self) -> dict | None:
        aimed = self.aim(self.sf_changed, lambda q: q.local and q.sf != "gone")
        p = aimed[0] if aimed else self.pick(lambda q: q.local and q.sf != "gone")
        if p is None:
            return None
        columns = ["title", "phone", "mobile_phone", "first_name", "city", "last_name"]
        if aimed:
            columns = [c for c in columns if c in aimed[1]] or columns
        values = {c: self.value("mk", c)
                  for c in self.rng.sample(columns, min(len(columns), self.rng.choice([1, 1, 2])))}
        if self.rng.random() < 0.08:
            values["email"] = p.email = self.email()
        self.changed(self.mk_changed, p.handle, values)
        return {"op": "mk_edit", "handle": p.handle, "values": values}

    def mk_insert(self, how: str, *, last_name: bool = True) -> dict | None:
        h = self.next("m")
        if how == "used":
            used = [p.email for p in self.people.values() if p.email and p.local]
            if not used:
                return None
            email = self.rng.choice(sorted(used))
            email = self.rng.choice([email, email.upper(), f"  {email} ", email.title()])
        else:
            email = self.email() if how == "new" else None
        values = {"email": email, "first_name": self.value("mk", "first"),
                  "title": self.value("mk", "title"), "description": f"chaos {h}"}
        if last_name and (how != "noemail" or self.rng.random() < 0.5):
            values["last_name"] = f"Chaos {h}"
        if self.rng.random() < 0.7:
            values["company"] = f"Marketing Co {self.n % 5}"
        self.people[h] = PModel(h, None, email=(email or "").strip().lower() or None)
        self.recent[h] = self.r
        return {"op": "mk_insert", "how": how, "handle": h, "values": values}

    def mk_delete(self) -> dict | None:
        """Half the time a person changed (on either side) this round or the last one: its
        record's last change is then inside the next cycle's overlap re-read."""
        recent = [h for h, r in sorted(self.recent.items()) if r >= self.r - 1
                  and h in self.people and self.people[h].local and self.people[h].sf != "gone"]
        if recent and self.rng.random() < 0.5:
            p = self.people[self.rng.choice(recent)]
        else:
            p = self.pick(lambda q: q.local and q.sf != "gone")
        if p is None:
            return None
        p.local = False
        self.drop_members(p.handle)
        return {"op": "mk_delete", "handle": p.handle}

    def mk_member_insert(self) -> dict | None:
        return self.new_member("mk_member_insert", self.pick(lambda q: q.local and q.sf == "live"))

    def mk_member_status(self) -> dict | None:
        pair = self.pair()
        if pair is None or not self.people[pair[1]].local:
            return None
        return {"op": "mk_member_status", "campaign": pair[0], "handle": pair[1],
                "status": self.rng.choice(self.statuses.get(pair[0]) or ["Sent"])}

    def mk_member_delete(self) -> dict | None:
        pair = self.pair()
        if pair is None or not self.people[pair[1]].local:
            return None
        self.members.discard(pair)
        return {"op": "mk_member_delete", "campaign": pair[0], "handle": pair[1]}

    def mk_campaign_insert(self) -> dict:
        h = self.next("mc")
        self.campaigns.append(h)
        self.statuses[h] = ["Sent", "Responded"]
        return {"op": "mk_campaign_insert", "campaign": h,
                "values": {"name": f"Chaos campaign {h}", "description": f"chaos {h}"}}

    def mk_campaign_edit(self) -> dict | None:
        if not self.campaigns:
            return None
        camp = self.rng.choice(self.campaigns)
        return {"op": "mk_campaign_edit", "campaign": camp,
                "values": {"name": self.value("mk", "campaign")}}


def plan_digest(plan: list[dict]) -> str:
    return hashlib.sha1(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:10]


# --- the emulator and the marketing database ----------------------------------------------------

class Emulator:
    """The emulator process and its control API."""

    def __init__(self, data_dir: Path, profile: str, seed: int, *, advance: bool = False):
        from include.salesforce_emulator.process import start_emulator

        self.process = start_emulator(data_dir=data_dir, seed=profile, timeout=120)
        self.info = self.process.info
        import requests

        self.http = requests.Session()
        self.http.verify = self.info["ca_bundle"]
        self.control("POST", "/seed", {"size": profile, "seed": seed})
        if not advance:  # cycles seconds apart on the real clock (see Settings.advance)
            self.control("PATCH", "/settings", {"replication_granularity_seconds": 1})
        self._sf = None

    def control(self, method: str, path: str, body: dict | None = None, **params):
        # verify per request: requests lets REQUESTS_CA_BUNDLE override a session's verify
        resp = self.http.request(method, self.info["control_url"] + path, json=body,
                                 params=params or None, timeout=300,
                                 verify=self.info["ca_bundle"])
        if resp.status_code >= 300:
            raise RuntimeError(f"control {method} {path}: {resp.status_code} {resp.text[:300]}")
        return resp.json()

    def salesforce(self):
        """The harness's own simple-salesforce client (a sales rep, as it were)."""
        if self._sf is None:
            from simple_salesforce import Salesforce

            session = __import__("requests").Session()
            session.verify = self.info["ca_bundle"]
            self._sf = Salesforce(username=self.info["username"], password=self.info["password"],
                                  security_token=self.info["security_token"],
                                  domain=self.info["login_domain"], session=session)
        return self._sf

    def export(self) -> dict[str, list[dict]]:
        return self.control("GET", "/export", include_deleted="true")

    def stop(self) -> None:
        self.process.stop()


def connection_env(info: dict) -> str:
    return json.dumps({"conn_type": "salesforce", "login": info["username"],
                       "password": info["password"],
                       "extra": {"security_token": info["security_token"],
                                 "domain": info["login_domain"], "version": "59.0"}})


@contextmanager
def marketing_database(backend: str, workdir: Path, settings: Settings):
    """(Airflow connection JSON) of a fresh marketing database; dropped afterwards."""
    if backend == "sqlite":
        yield json.dumps({"conn_type": "sqlite", "host": str(workdir / "marketing.db")})
        return
    if settings.db_url:
        yield _pg_conn(settings.db_url)
        return
    import psycopg
    from psycopg import sql

    admin = psycopg.connect(settings.postgres_url, autocommit=True, connect_timeout=5)
    name = f"sfsync_chaos_{uuid.uuid4().hex[:12]}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _pg_conn(settings.postgres_url.rsplit("/", 1)[0] + "/" + name)
    finally:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        admin.close()


def _pg_conn(url: str) -> str:
    parts = urlsplit(url)
    return json.dumps({"conn_type": "postgres", "host": parts.hostname or "127.0.0.1",
                       "port": parts.port or 5432, "login": parts.username or "postgres",
                       "password": parts.password or "", "schema": parts.path.lstrip("/")})


@contextmanager
def environment(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --- one seed -----------------------------------------------------------------------------------

def seed_state(truth: dict[str, list[dict]]) -> dict:
    """The seed org as the planner sees it (from ``/export``): people by handle (``s:<id>``,
    one per human: a converted lead is its contact's), campaigns, their member statuses,
    memberships, accounts; ``ids`` and ``known`` for the harness."""
    state = {"people": {}, "ids": {}, "campaigns": [], "statuses": defaultdict(list),
             "members": [], "accounts": [], "known": set()}
    for records in truth.values():
        state["known"].update(r["Id"] for r in records if "Id" in r)
    converted = {r["ConvertedContactId"]: r["Id"] for r in truth["Lead"] if r["IsConverted"]}
    for name in ("Lead", "Contact"):
        for rec in truth[name]:
            if rec.get("MasterRecordId") or (name == "Lead" and rec["IsConverted"]):
                continue
            h = f"s:{rec['Id']}"
            state["ids"][h] = {"lead": rec["Id"] if name == "Lead" else converted.get(rec["Id"]),
                               "contact": rec["Id"] if name == "Contact" else None}
            state["people"][h] = {"kind": name, "deleted": rec["IsDeleted"],
                                  "email": (rec.get("Email") or "").lower() or None}
    state["campaigns"] = [f"C:{r['Id']}" for r in truth["Campaign"] if not r["IsDeleted"]]
    for rec in truth["CampaignMemberStatus"]:
        if not rec["IsDeleted"]:
            state["statuses"][f"C:{rec['CampaignId']}"].append(rec["Label"])
    state["statuses"] = {k: sorted(v) for k, v in state["statuses"].items()}
    by_id = {rid: h for h, ids in state["ids"].items() for rid in ids.values() if rid}
    members = set()
    for rec in truth["CampaignMember"]:
        h = by_id.get(rec.get("ContactId") or "") or by_id.get(rec.get("LeadId") or "")
        if h and f"C:{rec['CampaignId']}" in state["campaigns"]:
            members.add((f"C:{rec['CampaignId']}", h))
    state["members"] = sorted(members)
    state["accounts"] = [r["Id"] for r in truth["Account"] if not r["IsDeleted"]]
    return state


@dataclass
class Handle:
    lead: str | None = None
    contact: str | None = None
    row: int | None = None
    gone: bool = False  # merged away (or converted into another person's contact)
    locally_deleted: bool = False


@dataclass
class Touch:
    seq: int
    round: int
    target: tuple  # ("person", handle) / ("campaign", handle) / ("pair", campaign, handle)
    column: str  # a marketing column, or "*" (the record's lifecycle: delete, merge, ...)
    sobject: str | None = None


class Chaos:
    """One seed's run: executes the plan's operations (resolving handles to what they are now:
    an operation whose target is gone is skipped and counted so), runs the cycles (in-process,
    or in a killed worker) and records what each side did, for :class:`Checks`."""

    def __init__(self, seed: int, backend: str, settings: Settings, emu: Emulator, workdir: Path,
                 result: SeedResult):
        import sqlalchemy as sa

        from include.sfsync.config import load_config
        from include.sfsync.store.engine import engine_for

        self.sa = sa
        self.seed, self.backend, self.settings = seed, backend, settings
        self.emu, self.workdir, self.result = emu, workdir, result
        self.config = load_config()
        self.engine = engine_for(self.config.marketing_conn_id)
        self.round = -1
        self.seq = 0
        self.people: dict[str, Handle] = {}
        self.campaigns: dict[str, dict] = {}  # handle -> {"sfid", "row"}
        self.sf_deleted: set[str] = set()  # records the harness deleted (and did not undelete)
        self.ever_deleted: set[str] = set()
        self.known_ids: set[str] = set()  # seed records and what the harness created
        self.touches: list[Touch] = []
        self.mk_edits: list[dict] = []
        self.local_deletes: list[dict] = []
        self.pair_last: dict[tuple, tuple] = {}  # (campaign, handle) -> (seq, action, side)
        self.inserts: dict[str, dict] = {}
        self.completed: dict[int, bool] = {}  # round -> its cycle completed
        self.synced_at: dict[int, int] = {}  # round -> the last operation its cycle saw
        self.cycle_seconds: list[float] = []
        self.last_second = 0
        self.kill_owed = 0

    # small helpers ---------------------------------------------------------------------------

    def sql(self, statement: str, **params):
        """A marketing write in its own transaction; the value a RETURNING clause gives."""
        with self.engine.begin() as conn:
            result = conn.execute(self.sa.text(statement), params)
            return result.scalar() if "RETURNING" in statement else None

    def scalar(self, statement: str, **params):
        with self.engine.connect() as conn:
            return conn.execute(self.sa.text(statement), params).scalar()

    def context(self):
        from include.sfsync.context import open_context

        return open_context(self.config, engine=self.engine)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def touch(self, target: tuple, column: str = "*", sobject: str | None = None) -> None:
        self.touches.append(Touch(self.seq, self.round, target, column, sobject))

    # setup -----------------------------------------------------------------------------------

    def initial(self) -> dict:
        """The initial copy, then the seed org as the planner sees it."""
        self.run_attempts("chaos:initial")
        self.advance(SETTLE_SECONDS)
        self.run_attempts("chaos:settle")
        state = seed_state(self.emu.export())
        for h, ids in state.pop("ids").items():
            self.people[h] = Handle(lead=ids["lead"], contact=ids["contact"])
            if state["people"][h]["deleted"]:
                self.sf_deleted.add(ids["contact"] or ids["lead"])
        self.ever_deleted |= self.sf_deleted
        self.known_ids |= state.pop("known")
        for h in state["campaigns"]:
            self.campaigns[h] = {"sfid": h[2:], "row": None}
        return state

    def next_second(self) -> None:
        """Real-clock runs: start a cycle (or its retry, as Airflow's come seconds later) in a
        second of its own, after the changes before it. SystemModstamp has whole seconds: a
        push in the very second of the version its pull just read would tie with it, which
        cycles minutes apart never do."""
        if not self.settings.advance and int(time.time()) <= self.last_second:
            time.sleep(1.02 - time.time() % 1)

    def wrote(self) -> None:
        """Salesforce may have changed in this second (an operation, a cycle's push)."""
        self.last_second = int(time.time())

    def advance(self, seconds: int) -> None:
        """Move the emulator's clock on (``--advance`` only: see ``Settings.advance``)."""
        if self.settings.advance:
            self.emu.control("POST", "/clock", {"advance_seconds": seconds})

    # cycles ----------------------------------------------------------------------------------

    def run_attempts(self, run_key: str, attempts: int = ATTEMPTS) -> bool:
        from include.sfsync import pipeline

        for _attempt in range(attempts):
            self.next_second()
            started = time.perf_counter()
            try:
                pipeline.run_cycle(run_key, config=self.config, engine=self.engine)
                self.cycle_seconds.append(time.perf_counter() - started)
                return True
            except Exception as exc:  # noqa: BLE001 - a failed try, as Airflow sees it
                self.result.cycle_errors[_short(exc)] += 1
                log.info("%s: %s", run_key, _short(exc))
            finally:
                self.wrote()
        return False

    def arm_faults(self, extra: list[dict] = (), salt: int = 0) -> list[str]:
        ids = []
        for i, (kind, p) in enumerate(FAULT_MIX):
            ids.append(self.emu.control("POST", "/faults", {
                "kind": kind, "endpoint": "*", "count": 10 ** 9, "probability": p,
                "seed": ((self.seed * 100 + self.round) * 10 + salt) * 10 + i})["id"])
        for fault in extra:
            ids.append(self.emu.control("POST", "/faults", fault)["id"])
        return ids

    def disarm_faults(self) -> None:
        for fault in self.emu.control("GET", "/faults"):
            if fault["kind"] not in {"slow", "slow_answer"}:
                self.result.faults += fault["fired"]
                self.result.fault_kinds[fault["kind"]] += fault["fired"]
        self.emu.control("DELETE", "/faults")

    def calls(self) -> int:
        return self.emu.control("GET", "/counters")["total"]

    def cycle(self, rnd: dict) -> None:
        run_key = f"chaos:{self.seed}:r{self.round}"
        kill = rnd["kill"] or ("random" if self.kill_owed else None)
        calls_before = self.calls()
        self.result.cycles += 1
        done = False
        if kill:
            before_kills = self.result.kills
            done = self.killed_cycle(run_key, kill, rnd["kill_at"])
            for again in range(1, CREATE_KILL_TRIES):
                # No create was in flight (a fault stopped the push, or failed the cycle, before
                # it): the creates still wait, so the kill is tried again on the next attempt
                # (a new run when this one ended), with other faults drawn.
                if kill != "create" or self.result.kills > before_kills or not self.hold_unused():
                    break
                self.disarm_faults()
                if done:
                    run_key = f"{run_key}:again{again}"
                done = self.killed_cycle(run_key, kill, rnd["kill_at"], salt=again)
            if self.result.kills == before_kills and kill == "random":
                self.kill_owed += 1  # it finished first: kill a later one
            elif kill == "random" and self.kill_owed and not rnd["kill"]:
                self.kill_owed -= 1
            self.disarm_faults()  # the retry runs with faults, not slowed down
            self.arm_faults(salt=1)
        else:
            self.arm_faults()
        if not done:
            done = self.run_attempts(run_key)
        self.disarm_faults()
        self.result.calls += self.calls() - calls_before
        self.completed[self.round] = done
        if done:
            self.synced_at[self.round] = self.seq  # operations up to here were in a pull
        if not done:
            self.result.notes.append(f"round {self.round}: the cycle failed {ATTEMPTS} times "
                                     "(faults); the next round goes on")

    def hold_unused(self) -> bool:
        """The create-answer hold of the last killed cycle is still armed: no create was sent."""
        return self.last_hold in {f["id"] for f in self.emu.control("GET", "/faults")}

    def killed_cycle(self, run_key: str, mode: str, kill_at: float, salt: int = 0) -> bool:
        """Run the cycle in a subprocess and SIGKILL it; returns whether it completed first."""
        slow_kind, slow_p, slow_delay = KILL_SLOW
        extra = [{"kind": slow_kind, "endpoint": "*", "count": 10 ** 9, "probability": slow_p,
                  "seed": self.seed * 1000 + self.round * 10 + 9, "delay_seconds": slow_delay}]
        if mode == "create":
            extra.append({"kind": "slow_answer", "endpoint": "*", "creates_only": True,
                          "count": 1, "delay_seconds": CREATE_HOLD_SECONDS})
        ids = self.arm_faults(extra, salt=2 * salt)  # the retry of a cycle arms salt 1
        hold_id = self.last_hold = ids[-1] if mode == "create" else None
        self.next_second()
        logfile = self.workdir / f"worker-{self.seed}-r{self.round}.log"
        with open(logfile, "w") as err:
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker",
                                     run_key], cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
                                    text=True, start_new_session=True)
            try:
                if not _wait_line(proc, WORKER_READY, 120):
                    raise RuntimeError(f"the worker did not start (see {logfile})")
                landed = False
                if mode == "create":
                    deadline = time.monotonic() + 120
                    while proc.poll() is None and time.monotonic() < deadline:
                        if hold_id not in {f["id"] for f in self.emu.control("GET", "/faults")}:
                            time.sleep(kill_at * (CREATE_HOLD_SECONDS - 1.0))
                            landed = proc.poll() is None
                            break
                        time.sleep(0.02)
                else:
                    estimate = max(0.5, statistics.median(self.cycle_seconds or [1.0])) * 2.0
                    deadline = time.monotonic() + kill_at * estimate
                    while proc.poll() is None and time.monotonic() < deadline:
                        time.sleep(0.01)
                    landed = proc.poll() is None
                if landed:
                    proc.kill()  # SIGKILL
                    self.result.kills += 1
                    if mode == "create":
                        self.result.kills_in_create += 1
                proc.wait(timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                self.wrote()
        if not landed:
            lines = [x for x in logfile.read_text(errors="replace").splitlines()
                     if x.startswith("attempt ")]
            self.result.notes.append(f"round {self.round}: the {mode} kill missed (the worker "
                                     f"ended first, exit {proc.returncode})"
                                     + (f"; its last try: {lines[-1]}" if lines else ""))
        # a worker that ended on its own with success did the cycle; else it is retried
        return not landed and proc.returncode == 0

    # operations ------------------------------------------------------------------------------

    def execute(self, op: dict) -> None:
        self.next_seq()
        self.wrote()
        try:
            done = getattr(self, op["op"])(op)
        except Exception as exc:  # noqa: BLE001 - a refused operation is skipped, said why
            done = False
            self.result.skips[f"{op['op']}: {_short(exc)[:90]}"] += 1
        if done is False:
            self.result.ops_skipped += 1
            self.result.skips[op["op"]] += 0
        else:
            self.result.ops_done += 1

    def record_of(self, h: str) -> tuple[str, str] | None:
        """(sobject, id) of the person's current Salesforce record, if it has one."""
        p = self.people.get(h)
        if p is None or p.gone:
            return None
        if h.startswith("m"):
            self.refresh_handle(h)
        if p.contact:
            return "Contact", p.contact
        if p.lead:
            return "Lead", p.lead
        return None

    def refresh_handle(self, h: str) -> None:
        p = self.people[h]
        row = self.row_of(h)
        if row is not None:
            p.lead = row.sfdc_lead_id or p.lead
            p.contact = row.sfdc_contact_id or p.contact

    def row_of(self, h: str):
        sa = self.sa
        p = self.people.get(h)
        if p is None or p.gone:
            return None
        with self.engine.connect() as conn:
            if p.row is not None:
                row = conn.execute(sa.text("SELECT id, sfdc_lead_id, sfdc_contact_id, "
                                           "sfdc_is_deleted FROM person WHERE id = :i"),
                                   {"i": p.row}).first()
                if row is not None:
                    return row
            ids = [x for x in (p.contact, p.lead) if x]
            if not ids:
                return None
            row = conn.execute(sa.text(
                "SELECT id, sfdc_lead_id, sfdc_contact_id, sfdc_is_deleted FROM person WHERE "
                "sfdc_contact_id IN (:a, :b) OR sfdc_lead_id IN (:a, :b) ORDER BY id"),
                {"a": ids[0], "b": ids[-1]}).first()
        if row is not None:
            p.row = row.id
        return row

    def campaign_sfid(self, c: str) -> str | None:
        camp = self.campaigns.get(c)
        if camp is None:
            return None
        if not camp["sfid"] and camp["row"] is not None:
            camp["sfid"] = self.scalar("SELECT sfdc_id FROM campaign WHERE id = :i", i=camp["row"])
        return camp["sfid"]

    def campaign_row(self, c: str) -> int | None:
        camp = self.campaigns.get(c)
        if camp is None:
            return None
        if camp["row"] is None and camp["sfid"]:
            camp["row"] = self.scalar("SELECT id FROM campaign WHERE sfdc_id = :s",
                                      s=camp["sfid"])
        return camp["row"]

    def translate(self, sobject: str, values: dict) -> dict:
        out = {}
        for name, value in values.items():
            col = FIELD_COLUMN.get(name)
            pair = PERSON_COLUMNS.get(col) if col else None
            target = (pair[0] if sobject == "Lead" else pair[1]) if pair else name
            if target:
                out[target] = value
        return out

    # Salesforce side

    def sf_create(self, op: dict):
        sf = self.emu.salesforce()
        new_id = getattr(sf, op["sobject"]).create(op["values"])["id"]
        self.known_ids.add(new_id)
        self.people[op["handle"]] = Handle(**({"lead": new_id} if op["sobject"] == "Lead"
                                              else {"contact": new_id}))
        return True

    def sf_update(self, op: dict):
        rec = self.record_of(op["handle"])
        if rec is None or rec[1] in self.sf_deleted:
            return False
        values = self.translate(rec[0], op["values"])
        if not values:
            return False
        getattr(self.emu.salesforce(), rec[0]).update(rec[1], values)
        for name in values:
            self.touch(("person", op["handle"]), FIELD_COLUMN.get(name, name), rec[0])
        return True

    def sf_delete(self, op: dict):
        rec = self.record_of(op["handle"])
        if rec is None or rec[1] in self.sf_deleted:
            return False
        getattr(self.emu.salesforce(), rec[0]).delete(rec[1])
        self.sf_deleted.add(rec[1])
        self.ever_deleted.add(rec[1])
        self.touch(("person", op["handle"]))
        self.touch_members(op["handle"])
        return True

    def sf_undelete(self, op: dict):
        rec = self.record_of(op["handle"])
        if rec is None or rec[1] not in self.sf_deleted:
            return False
        self.emu.control("POST", "/undelete", {"ids": [rec[1]]})
        self.sf_deleted.discard(rec[1])
        self.touch(("person", op["handle"]))
        self.touch_members(op["handle"])
        return True

    def touch_members(self, h: str) -> None:
        for c in self.campaigns:
            self.touch(("pair", c, h))

    def sf_merge(self, op: dict):
        master, loser = self.record_of(op["master"]), self.record_of(op["loser"])
        if master is None or loser is None or master[0] != op["sobject"] or \
                loser[0] != op["sobject"] or {master[1], loser[1]} & self.sf_deleted \
                or master[1] == loser[1]:
            return False
        if master[0] == "Lead" and (self.people[op["master"]].contact
                                    or self.people[op["loser"]].contact):
            return False
        self.emu.control("POST", "/merge", {"sobject": op["sobject"], "master_id": master[1],
                                             "loser_ids": [loser[1]]})
        self.people[op["loser"]].gone = True
        self.ever_deleted.add(loser[1])
        self.touch(("person", op["master"]))
        self.touch(("person", op["loser"]))
        self.touch_members(op["master"])
        self.touch_members(op["loser"])
        return True

    def sf_convert(self, op: dict):
        lead = self.record_of(op["lead"])
        if lead is None or lead[0] != "Lead" or lead[1] in self.sf_deleted:
            return False
        body = {"lead_id": lead[1]}
        if op["contact"]:
            contact = self.record_of(op["contact"])
            if contact is None or contact[0] != "Contact" or contact[1] in self.sf_deleted:
                return False
            body["contact_id"] = contact[1]
        result = self.emu.control("POST", "/convert-lead", body)
        self.known_ids.update(v for v in result.values() if v)
        self.touch(("person", op["lead"]))
        self.touch_members(op["lead"])
        if op["contact"]:
            self.people[op["lead"]].gone = True
            self.touch(("person", op["contact"]))
            self.touch_members(op["contact"])
        else:
            self.people[op["lead"]].contact = result["contactId"]
        return True

    def member_of(self, c: str, h: str) -> tuple[str, str] | None:
        """(Id, Status) of the person's membership in the campaign, in Salesforce."""
        camp, rec = self.campaign_sfid(c), self.record_of(h)
        if not camp or rec is None:
            return None
        p = self.people[h]
        ids = [x for x in (p.lead, p.contact) if x]
        found = self.emu.salesforce().query(
            f"SELECT Id, Status FROM CampaignMember WHERE CampaignId = '{camp}' AND "
            f"(LeadId IN ('{ids[0]}', '{ids[-1]}') OR ContactId IN ('{ids[0]}', '{ids[-1]}'))")
        return (found["records"][0]["Id"], found["records"][0]["Status"]) \
            if found["records"] else None

    def sf_member_add(self, op: dict):
        camp, rec = self.campaign_sfid(op["campaign"]), self.record_of(op["handle"])
        if not camp or rec is None or rec[1] in self.sf_deleted or \
                self.member_of(op["campaign"], op["handle"]):
            return False
        self.emu.salesforce().CampaignMember.create({"CampaignId": camp,
                                                     f"{rec[0]}Id": rec[1],
                                                     "Status": op["status"]})
        self.pair_event(op, "add", "sf")
        return True

    def sf_member_status(self, op: dict):
        member = self.member_of(op["campaign"], op["handle"])
        if member is None:
            return False
        self.emu.salesforce().CampaignMember.update(member[0], {"Status": op["status"]})
        self.touch(("pair", op["campaign"], op["handle"]), "status", "CampaignMember")
        return True

    def sf_member_delete(self, op: dict):
        member = self.member_of(op["campaign"], op["handle"])
        if member is None:
            return False
        self.emu.salesforce().CampaignMember.delete(member[0])
        self.pair_event(op, "remove", "sf")
        return True

    def pair_event(self, op: dict, action: str, side: str) -> None:
        key = (op["campaign"], op["handle"])
        self.pair_last[key] = (self.seq, action, side, self.round)
        if side == "sf":
            self.touch(("pair", *key))

    def sf_campaign_update(self, op: dict):
        camp = self.campaign_sfid(op["campaign"])
        if not camp:
            return False
        self.emu.salesforce().Campaign.update(camp, op["values"])
        self.touch(("campaign", op["campaign"]), "name", "Campaign")
        return True

    # marketing side

    def mk_edit(self, op: dict):
        row = self.row_of(op["handle"])
        if row is None:
            return False
        sets = ", ".join(f"{c} = :{c}" for c in op["values"])
        self.sql(f"UPDATE person SET {sets} WHERE id = :row_id", row_id=row.id, **op["values"])
        rec = self.record_of(op["handle"])
        on_deleted = bool(row.sfdc_is_deleted) or (rec is not None and rec[1] in self.sf_deleted)
        for col, value in op["values"].items():
            self.mk_edits.append({"seq": self.seq, "round": self.round, "column": col,
                                  "target": ("person", op["handle"]), "value": value,
                                  "on_deleted": on_deleted})
        return True

    def mk_insert(self, op: dict):
        values = {**op["values"], "sync_to_salesforce": True}  # for Salesforce (create_leads)
        cols = [c for c in values if values[c] is not None]
        new_id = self.sql(f"INSERT INTO person ({', '.join(cols)}) VALUES "
                          f"({', '.join(':' + c for c in cols)}) RETURNING id",
                          **{c: values[c] for c in cols})
        self.people[op["handle"]] = Handle(row=new_id)
        self.inserts[op["handle"]] = {"how": op["how"], "seq": self.seq, "round": self.round}
        if op["how"] != "used":  # a linked insert's values are weighed by the policy
            for col in ("first_name", "last_name", "title"):
                if values.get(col) is not None:
                    self.mk_edits.append({"seq": self.seq, "round": self.round, "column": col,
                                          "target": ("person", op["handle"]),
                                          "value": values[col], "on_deleted": False})
        return True

    def mk_delete(self, op: dict):
        row = self.row_of(op["handle"])
        if row is None:
            return False
        self.sql("DELETE FROM person WHERE id = :i", i=row.id)
        p = self.people[op["handle"]]
        p.row, p.locally_deleted = None, True
        self.local_deletes.append({"seq": self.seq, "round": self.round, "handle": op["handle"],
                                   "ids": [x for x in (row.sfdc_lead_id, row.sfdc_contact_id)
                                           if x]})
        return True

    def merges(self) -> list:
        with self.engine.connect() as conn:
            return list(conn.execute(self.sa.text("SELECT * FROM sfsync_merge ORDER BY id")))

    def local_member(self, c: str, h: str):
        camp, row = self.campaign_sfid(c), self.row_of(h)
        if not camp or row is None:
            return None
        with self.engine.connect() as conn:
            return conn.execute(self.sa.text(
                "SELECT id, status FROM campaign_member WHERE person_id = :p AND "
                "substr(sfdc_campaign_id, 1, 15) = :c AND (sfdc_is_deleted IS NULL OR "
                "sfdc_is_deleted = :f) ORDER BY id"), {"p": row.id, "c": camp[:15], "f": False}
            ).first()

    def mk_member_insert(self, op: dict):
        camp, row = self.campaign_sfid(op["campaign"]), self.row_of(op["handle"])
        if not camp or row is None or self.local_member(op["campaign"], op["handle"]):
            return False
        self.sql("INSERT INTO campaign_member (person_id, sfdc_campaign_id, status) VALUES "
                 "(:p, :c, :s)", p=row.id, c=camp, s=op["status"])
        self.pair_event(op, "add", "mk")
        return True

    def mk_member_status(self, op: dict):
        member = self.local_member(op["campaign"], op["handle"])
        if member is None:
            return False
        self.sql("UPDATE campaign_member SET status = :s WHERE id = :i", s=op["status"],
                 i=member.id)
        self.mk_edits.append({"seq": self.seq, "round": self.round, "column": "status",
                              "target": ("pair", op["campaign"], op["handle"]),
                              "value": op["status"], "on_deleted": False})
        return True

    def mk_member_delete(self, op: dict):
        member = self.local_member(op["campaign"], op["handle"])
        if member is None:
            return False
        self.sql("DELETE FROM campaign_member WHERE id = :i", i=member.id)
        self.pair_event(op, "remove", "mk")
        return True

    def mk_campaign_insert(self, op: dict):
        v = op["values"]
        new_id = self.sql("INSERT INTO campaign (name, description) VALUES (:n, :d) RETURNING id",
                          n=v["name"], d=v["description"])
        self.campaigns[op["campaign"]] = {"sfid": None, "row": new_id}
        self.mk_edits.append({"seq": self.seq, "round": self.round, "column": "name",
                              "target": ("campaign", op["campaign"]), "value": v["name"],
                              "on_deleted": False})
        return True

    def mk_campaign_edit(self, op: dict):
        row = self.campaign_row(op["campaign"])
        if row is None:
            return False
        self.sql("UPDATE campaign SET name = :n WHERE id = :i", n=op["values"]["name"], i=row)
        self.mk_edits.append({"seq": self.seq, "round": self.round, "column": "name",
                              "target": ("campaign", op["campaign"]),
                              "value": op["values"]["name"], "on_deleted": False})
        return True

    # the run ---------------------------------------------------------------------------------

    def run(self, plan: list[dict]) -> None:
        for rnd in plan:
            self.round = rnd["round"]
            for op in rnd["ops"]:
                self.execute(op)
            self.advance(rnd["advance"])
            self.cycle(rnd)
        self.round = len(plan)
        self.quiet()

    def quiet(self) -> None:
        """No more faults: cycles until one writes nothing on either side."""
        writes = None
        for i in range(QUIET_MAX):
            self.advance(SETTLE_SECONDS)
            sf_before, local_before = self.sf_state(), self.local_state()
            self.result.quiet_cycles += 1
            if not self.run_attempts(f"chaos:{self.seed}:quiet{i}", attempts=1):
                self.result.notes.append(f"quiet cycle {i} failed without faults")
            writes = _diff(sf_before, self.sf_state(), "Salesforce") + \
                _diff(local_before, self.local_state(), "marketing")
            if not writes:
                break
        self.result.counts["converged_writes"] = len(writes or [])
        self.result.details["converged_writes"] = writes or []

    def sf_state(self) -> dict:
        return {(name, r["Id"]): (r.get("SystemModstamp"), r.get("IsDeleted"))
                for name, records in self.emu.export().items() for r in records}

    def local_state(self) -> dict:
        sa = self.sa
        ctx = self.context()
        out = {}
        with self.engine.connect() as conn:
            for name, table in ctx.tables.items():
                for row in conn.execute(sa.select(table)):
                    out[(name, row.id)] = tuple(row)
        return out


def _diff(before: dict, after: dict, side: str) -> list[str]:
    out = []
    for key in sorted(set(before) | set(after), key=str):
        if before.get(key) != after.get(key):
            what = "new" if key not in before else "gone" if key not in after else "changed"
            out.append(f"{side} {key[0]} {key[1]} {what}")
    return out


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}"


def _wait_line(proc: subprocess.Popen, wanted: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        ready, _w, _x = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline()
            if wanted in line:
                return True
            if not line:
                return False
    return False


# --- the checks ---------------------------------------------------------------------------------

class Checks:
    """The five counts, from the final state of both sides and what the harness did."""

    def __init__(self, chaos: Chaos):
        self.c = chaos
        self.sa = chaos.sa
        self.ctx = chaos.context()
        self.truth = chaos.emu.export()
        self.records = {r["Id"]: (name, r) for name, rs in self.truth.items() for r in rs}
        self.rows: dict[str, list] = {}
        with chaos.engine.connect() as conn:
            for name, table in self.ctx.tables.items():
                self.rows[name] = list(conn.execute(self.sa.select(table).order_by(table.c.id)))
        for h in chaos.people:
            if h.startswith("m") and not chaos.people[h].gone:
                chaos.refresh_handle(h)
        self.details = chaos.result.details

    def add(self, name: str, text: str) -> None:
        self.c.result.counts[name] += 1
        self.details[name].append(text)

    def run(self) -> None:
        self.divergent()
        self.duplicates()
        self.revived()
        self.lost_edits()

    # divergent fields ------------------------------------------------------------------------

    def later_touch(self, target: tuple, seq: int, column: str | None = None) -> bool:
        return any(t.seq > seq and t.target == target and (column is None or t.column in
                                                           (column, "*"))
                   for t in self.c.touches)

    def window_start(self, rnd: int) -> int:
        """The last operation the sync had read before round ``rnd``'s operations: Salesforce
        changes after it are news to the sync (concurrent with the round's local changes)."""
        done = [r for r in self.c.synced_at if r < rnd]
        return self.c.synced_at[max(done)] if done else 0

    def changed_since_sync(self, d: dict) -> bool:
        """A Salesforce change of a locally deleted person's record that the sync had not
        read when the row was deleted (later, or in the same sync window): it may come back."""
        return self.later_touch(("person", d["handle"]), self.window_start(d["round"]))

    def locally_deleted_ids(self) -> set[str]:
        """Records whose person row marketing deleted and that Salesforce did not change
        after that: no row is right for them (one is too where Salesforce changed it in the
        same sync window, before the delete: see ``revived``)."""
        out = set()
        for d in self.c.local_deletes:
            if not self.later_touch(("person", d["handle"]), d["seq"]):
                out.update(d["ids"])
        return out

    def compare(self, where: str, row, rec: dict, fields, table, *,
                blanks_filled: bool = False) -> None:
        """Every field against its column; ``blanks_filled``: a value where Salesforce has none
        is the merge policy's (the loser's values fill the survivor's blanks) on a record the
        sync never writes (a converted lead)."""
        from include.sfsync.values import parse_value, same

        for f in fields:
            if f.column not in table.c or f.sf_field not in rec:
                continue
            theirs = parse_value(f.sf_type, rec[f.sf_field])
            mine = row._mapping.get(f.column)
            if blanks_filled and theirs is None:
                continue
            if not same(mine, theirs):
                self.add("divergent", f"{where} {f.column}: local {mine!r} != Salesforce "
                                      f"{f.sf_field} {theirs!r}")

    def survivor(self, record_id: str | None) -> str | None:
        """The record a merged-away record lives on in (its MasterRecordId, transitively)."""
        seen = set()
        while record_id and record_id not in seen:
            seen.add(record_id)
            rec = self.records.get(record_id, (None, {}))[1]
            if not rec.get("IsDeleted") or not rec.get("MasterRecordId"):
                break
            record_id = rec["MasterRecordId"]
        return record_id

    def divergent(self) -> None:
        cat = self.ctx.catalog
        person_t = self.ctx.tables["person"]
        people = self.rows["person"]
        by_lead = {r.sfdc_lead_id: r for r in people if r.sfdc_lead_id}
        by_contact = {r.sfdc_contact_id: r for r in people if r.sfdc_contact_id}
        person_cols = cat.tables["person"]
        lead_only = {c for c, col in person_cols.items()
                     if all(s.startswith("Lead.") for s in col.sources)}
        gone_locally = self.locally_deleted_ids()
        survivors = {r.survivor_person_id for r in self.c.merges()}
        edited = {(e["target"][1], e["column"]) for e in self.c.mk_edits
                  if e["target"][0] == "person"}
        handle_of = {}
        for h, p in self.c.people.items():
            for rid in (p.lead, p.contact):
                if rid:
                    handle_of[rid] = h
        for sobject, by_id in (("Lead", by_lead), ("Contact", by_contact)):
            obj = cat.object(sobject)
            for rec in self.truth[sobject]:
                rid = rec["Id"]
                row = by_id.get(rid)
                where = f"person row {row.id if row is not None else '-'} ({sobject} {rid})"
                if row is None:
                    if rec["IsDeleted"] or rid in gone_locally:
                        continue
                    if rec.get("IsConverted"):
                        holder = by_contact.get(self.survivor(rec.get("ConvertedContactId")))
                        if rec.get("ConvertedContactId") not in gone_locally and (
                                holder is None or not holder.sfdc_lead_id):
                            self.add("divergent", f"converted Lead {rid}: no person row holds "
                                                  "it")
                        continue
                    self.add("divergent", f"{sobject} {rid} ({rec.get('Email')}): no person row")
                    continue
                if rec["IsDeleted"]:
                    if sobject == "Contact" or not row.sfdc_contact_id:
                        if not row.sfdc_is_deleted:
                            self.add("divergent", f"{where}: deleted in Salesforce, live locally")
                    continue
                if sobject == "Lead" and rec.get("IsConverted"):
                    h = handle_of.get(rid)
                    fields = [f for f in obj.synced if f.column in lead_only
                              and (h, f.column) not in edited]
                    self.compare(where, row, rec, fields, person_t,
                                 blanks_filled=row.id in survivors)
                    if row.sfdc_contact_id and row.sfdc_contact_id != self.survivor(
                            rec["ConvertedContactId"]):
                        self.add("divergent", f"{where}: converted to "
                                 f"{rec['ConvertedContactId']}, row holds {row.sfdc_contact_id}")
                    continue
                if sobject == "Lead" and row.sfdc_contact_id:
                    self.add("divergent", f"{where}: an unconverted lead on a contact's row")
                    continue
                self.compare(where, row, rec, obj.synced, person_t)
        for row in people:
            for rid in (row.sfdc_lead_id, row.sfdc_contact_id):
                if rid and rid not in self.records:
                    self.add("divergent", f"person row {row.id}: {rid} is not in Salesforce")
        # every other synced table: one row per record
        for obj in cat.ordered():
            if obj.sf_object in {"Lead", "Contact"}:
                continue
            table = self.ctx.tables[obj.type.table]
            rows = {r.sfdc_id: r for r in self.rows[obj.type.table]
                    if r._mapping.get("sfdc_object", obj.sf_object) == obj.sf_object}
            for rec in self.truth.get(obj.sf_object, []):
                row = rows.get(rec["Id"])
                where = f"{obj.type.table} row {row.id if row is not None else '-'} " \
                        f"({obj.sf_object} {rec['Id']})"
                if row is None:
                    if not rec.get("IsDeleted"):
                        self.add("divergent", f"{obj.sf_object} {rec['Id']}: no row")
                    continue
                if rec.get("IsDeleted"):
                    if not row.sfdc_is_deleted:
                        self.add("divergent", f"{where}: deleted in Salesforce, live locally")
                    continue
                self.compare(where, row, rec, obj.synced, table)
                if "person_id" in table.c:
                    self.person_link(where, row, rec, by_lead, by_contact)
            for sfid, row in rows.items():
                if sfid and sfid not in self.records and not row.sfdc_is_deleted:
                    self.add("divergent", f"{obj.type.table} row {row.id}: {obj.sf_object} "
                                          f"{sfid} is not in Salesforce, live locally")

    def person_link(self, where: str, row, rec: dict, by_lead: dict, by_contact: dict) -> None:
        ref = rec.get("ContactId") or rec.get("WhoId") or rec.get("LeadId")
        if not ref or ref[:3] not in {"003", "00Q"}:
            return
        person = by_contact.get(ref) if ref.startswith("003") else by_lead.get(ref)
        expected = person.id if person is not None else None
        if expected is not None and row.person_id != expected:
            self.add("divergent", f"{where}: person_id {row.person_id}, its person is "
                                  f"row {expected}")

    # duplicates ------------------------------------------------------------------------------

    def duplicates(self) -> None:
        live = [(name, r) for name in ("Lead", "Contact") for r in self.truth[name]
                if not r["IsDeleted"] and not r.get("IsConverted")]
        by_marker = defaultdict(list)
        for name, r in live:
            marker = (r.get("Description") or "")
            if marker.startswith("chaos m"):
                by_marker[marker].append(f"{name} {r['Id']}")
        for marker, recs in sorted(by_marker.items()):
            if len(recs) > 1:
                for extra in recs[1:]:
                    self.add("duplicates", f"Salesforce: {extra} carries marketing row "
                                           f"'{marker}' as {recs[0]} does")
        emails = defaultdict(list)
        for name, r in live:
            if r.get("Email"):
                emails[r["Email"].strip().lower()].append((name, r["Id"]))
        for email, recs in sorted(emails.items()):
            mine = [x for x in recs if x[1] not in self.c.known_ids]
            others = [x for x in recs if x not in mine and x[1] not in self.c.ever_deleted]
            if mine and (others or len(mine) > 1):
                for extra in mine[(0 if others else 1):]:
                    self.add("duplicates", f"Salesforce: the sync created {extra[0]} {extra[1]} "
                                           f"with {email}, which {recs[0][0]} {recs[0][1]} has")
        people = self.rows["person"]
        for col in ("sfdc_lead_id", "sfdc_contact_id"):
            seen = Counter(r._mapping[col] for r in people if r._mapping[col])
            for rid, n in seen.items():
                if n > 1:
                    self.add("duplicates", f"local: {n} person rows hold {rid}")
        by_lead = {r.sfdc_lead_id: r for r in people if r.sfdc_lead_id}
        by_contact = {r.sfdc_contact_id: r for r in people if r.sfdc_contact_id}
        for rec in self.truth["Lead"]:
            if rec.get("IsConverted") and not rec["IsDeleted"]:
                a = by_lead.get(rec["Id"])
                b = by_contact.get(self.survivor(rec.get("ConvertedContactId")))
                if a is not None and b is not None and a.id != b.id:
                    self.add("duplicates", f"local: Lead {rec['Id']} (row {a.id}) and its "
                                           f"contact {rec['ConvertedContactId']} (row {b.id})")
        markers = Counter((r.description or "") for r in people
                          if (r.description or "").startswith("chaos m"))
        for marker, n in sorted(markers.items()):
            if n > 1:
                self.add("duplicates", f"local: {n} person rows carry marketing row '{marker}'")
        members = Counter((r.sfdc_campaign_id[:15], r.person_id)
                          for r in self.rows["campaign_member"]
                          if r.sfdc_campaign_id and r.person_id and not r.sfdc_is_deleted)
        in_sf = Counter()  # Salesforce's own: a lead converted into a contact that was a
        for r in self.truth["CampaignMember"]:  # member already keeps both memberships
            ref = r.get("ContactId") or r.get("LeadId")
            person = (by_contact if ref and ref.startswith("003") else by_lead).get(ref)
            if person is not None:
                in_sf[(r["CampaignId"][:15], person.id)] += 1
        for (camp, person), n in sorted(members.items()):
            if n > max(1, in_sf[(camp, person)]):
                self.add("duplicates", f"local: {n} live members of campaign {camp} for "
                                       f"person {person} (Salesforce has "
                                       f"{in_sf[(camp, person)]})")
        camps = Counter((r.get("Description") or "") for r in self.truth["Campaign"]
                        if not r["IsDeleted"] and (r.get("Description") or "").startswith(
                            "chaos mc"))
        for marker, n in sorted(camps.items()):
            if n > 1:
                self.add("duplicates", f"Salesforce: {n} campaigns carry '{marker}'")
        local_camps = Counter((r.description or "") for r in self.rows["campaign"]
                              if (r.description or "").startswith("chaos mc"))
        for marker, n in sorted(local_camps.items()):
            if n > 1:
                self.add("duplicates", f"local: {n} campaign rows carry '{marker}'")

    # revived deletes -------------------------------------------------------------------------

    def sf_member(self, c: str, h: str):
        camp = self.c.campaign_sfid(c)
        p = self.c.people.get(h)
        if not camp or p is None:
            return None
        ids = {x for x in (p.lead, p.contact) if x}
        for r in self.truth["CampaignMember"]:
            if r["CampaignId"] == camp and ({r.get("LeadId"), r.get("ContactId")} & ids):
                return r
        return None

    def revived(self) -> None:
        for rid in sorted(self.c.sf_deleted):
            rec = self.records.get(rid)
            if rec is not None and not rec[1]["IsDeleted"]:
                self.add("revived", f"{rec[0]} {rid}: deleted in Salesforce, live again")
        people = self.rows["person"]
        for d in self.c.local_deletes:
            if self.changed_since_sync(d):
                continue
            back = [r.id for r in people
                    if {r.sfdc_lead_id, r.sfdc_contact_id} & set(d["ids"])]
            if back:
                self.add("revived", f"person of {', '.join(d['ids'])} deleted locally in round "
                                    f"{d['round']} is back as row {back[0]}: Salesforce did not "
                                    "change it after the sync last read it")
        for (c, h), (seq, action, side, rnd) in sorted(self.c.pair_last.items()):
            if action != "remove" or self.later_touch(("pair", c, h), seq) \
                    or self.later_touch(("person", h), seq):
                continue
            member = self.sf_member(c, h)
            if member is not None:
                self.add("revived", f"membership {member['Id']} (campaign {member['CampaignId']})"
                                    f" removed on the {side} side in round {rnd} is back in "
                                    "Salesforce")
            local = self.c.local_member(c, h)
            if local is not None:
                self.add("revived", f"campaign_member row {local.id} (campaign "
                                    f"{self.c.campaign_sfid(c)}) removed on the {side} side in "
                                    f"round {rnd} is back locally")

    # lost marketing edits --------------------------------------------------------------------

    def conflict_lost(self, e: dict, sobject: str) -> bool:
        """A Salesforce change of the field in the same sync window (since the last cycle that
        completed) where Salesforce's side wins by the policy."""
        last_done = max([r for r, ok in self.c.completed.items() if ok and r < e["round"]],
                        default=-1)
        return any(t.target == e["target"] and t.column in (e["column"], "*")
                   and last_done < t.round <= e["round"] and t.seq < e["seq"]
                   and POLICY.get(t.sobject or sobject) == "salesforce"
                   for t in self.c.touches)

    def lost_edits(self) -> None:
        from include.sfsync.values import same

        last: dict[tuple, dict] = {}
        for e in self.c.mk_edits:
            last[(e["target"], e["column"])] = e
        for (target, column), e in sorted(last.items(), key=lambda kv: kv[1]["seq"]):
            if e["on_deleted"] or self.later_touch(target, e["seq"], column):
                continue
            if target[0] == "person":
                h = target[1]
                p = self.c.people[h]
                if p.gone or any(d["handle"] == h and d["seq"] > e["seq"]
                                 for d in self.c.local_deletes):
                    continue
                if self.c.inserts.get(h, {}).get("how") == "used":
                    continue
                rec_id = p.contact or p.lead
                if rec_id is None:
                    continue  # counted as a lost insert below
                name, rec = self.records.get(rec_id, (None, None))
                if rec is None or rec["IsDeleted"] or rec_id in self.c.ever_deleted:
                    continue
                pair = PERSON_COLUMNS.get(column)
                sf_field = pair[0] if name == "Lead" else pair[1]
                if sf_field is None or self.conflict_lost(e, name):
                    continue
                if not same(e["value"], rec.get(sf_field)):
                    self.add("lost_edits", f"person {h} ({name} {rec_id}) {column} = "
                                           f"{e['value']!r} (round {e['round']}); Salesforce "
                                           f"has {rec.get(sf_field)!r}")
            elif target[0] == "campaign":
                sfid = self.c.campaign_sfid(target[1])
                rec = self.records.get(sfid or "", (None, None))[1]
                if rec is None:
                    self.add("lost_edits", f"campaign {target[1]} (row "
                                           f"{self.c.campaign_row(target[1])}) is not in "
                                           "Salesforce")
                    continue
                if self.conflict_lost(e, "Campaign"):
                    continue
                if not same(e["value"], rec.get("Name")):
                    self.add("lost_edits", f"campaign {target[1]} ({sfid}) name = {e['value']!r}"
                                           f"; Salesforce has {rec.get('Name')!r}")
            else:
                _p, c, h = target
                if self.later_touch(("person", h), e["seq"]) or \
                        self.c.pair_last.get((c, h), (0,))[0] > e["seq"] or \
                        self.conflict_lost(e, "CampaignMember"):
                    continue
                member = self.sf_member(c, h)
                if member is not None and not same(e["value"], member["Status"]):
                    self.add("lost_edits", f"member of {h} in {c} status = {e['value']!r}; "
                                           f"Salesforce has {member['Status']!r}")
        for h, ins in sorted(self.c.inserts.items()):
            p = self.c.people[h]
            if ins["how"] == "used" or p.gone or p.locally_deleted or p.lead or p.contact:
                continue
            if self.c.row_of(h) is not None:
                self.add("lost_edits", f"person {h} inserted in round {ins['round']} "
                                       f"({ins['how']} e-mail) never reached Salesforce")
        for (c, h), (seq, action, side, rnd) in sorted(self.c.pair_last.items()):
            if action != "add" or side != "mk" or self.later_touch(("pair", c, h), seq) \
                    or self.later_touch(("person", h), seq):
                continue
            rec_id = self.c.people[h].contact or self.c.people[h].lead
            if not rec_id or rec_id in self.c.ever_deleted or not self.c.campaign_sfid(c):
                continue
            if self.sf_member(c, h) is None:
                self.add("lost_edits", f"member of {h} in campaign {self.c.campaign_sfid(c)} "
                                       f"inserted in round {rnd} is not in Salesforce")


# --- driving seeds ------------------------------------------------------------------------------

def run_seed(seed: int, backend: str, settings: Settings | None = None) -> SeedResult:
    """One seed on one backend, from a fresh org and database to the five counts."""
    settings = settings or Settings()
    result = SeedResult(seed, backend, args=[
        f"--{name} {getattr(settings, name)}" for name in ("ops", "rounds", "org")
        if getattr(settings, name) != getattr(Settings, name)] + (
        ["--advance"] if settings.advance else []))
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix=f"sfsync-chaos-{seed}-{backend}-"))
    emu = None
    try:
        emu = Emulator(workdir / "org", settings.org, seed, advance=settings.advance)
        config_path = workdir / "sfsync.yaml"
        config_path.write_text("bulk_poll_seconds: 0\n")
        with marketing_database(backend, workdir, settings) as conn, environment({
                "AIRFLOW_CONN_SALESFORCE_DEFAULT": connection_env(emu.info),
                "AIRFLOW_CONN_MARKETING_DB": conn, "SFSYNC_CONFIG": str(config_path),
                "REQUESTS_CA_BUNDLE": emu.info["ca_bundle"],
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                            os.environ.get("PYTHONPATH")]))}):
            chaos = Chaos(seed, backend, settings, emu, workdir, result)
            try:
                state = chaos.initial()
                plan = Planner(seed, state, settings).plan()
                result.plan_digest = plan_digest(plan)
                result.ops_planned = sum(len(r["ops"]) for r in plan)
                chaos.run(plan)
                Checks(chaos).run()
            finally:
                chaos.engine.dispose()
    except Exception as exc:  # noqa: BLE001 - reported with the seed, the run goes on
        import traceback

        result.error = _short(exc)
        if settings.verbose:
            traceback.print_exc()
    finally:
        if emu is not None:
            emu.stop()
        result.seconds = time.perf_counter() - started
        if settings.keep or not result.ok:
            result.notes.append(f"working directory kept: {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    return result


def plan_for(seed: int, settings: Settings | None = None) -> list[dict]:
    """The seed's plan, from its org alone (no sync runs): what ``--plan`` prints."""
    settings = settings or Settings()
    with tempfile.TemporaryDirectory(prefix=f"sfsync-chaos-plan-{seed}-") as tmp:
        emu = Emulator(Path(tmp) / "org", settings.org, seed, advance=settings.advance)
        try:
            state = seed_state(emu.export())
        finally:
            emu.stop()
    state.pop("ids"), state.pop("known")
    return Planner(seed, state, settings).plan()


def summary(results: list[SeedResult]) -> str:
    lines = ["", "chaos convergence summary", "",
             f"  {'backend':<9}{'seeds':>6}{'pass':>6}{'fail':>6}{'ops':>7}{'faults':>8}"
             f"{'calls':>8}{'kills':>7}  " + "  ".join(f"{c.split('_')[0]:>9}" for c in COUNTS)]
    for backend in sorted({r.backend for r in results}):
        rs = [r for r in results if r.backend == backend]
        totals = {c: sum(r.counts[c] for r in rs) for c in COUNTS}
        lines.append(
            f"  {backend:<9}{len(rs):>6}{sum(r.ok for r in rs):>6}"
            f"{sum(not r.ok for r in rs):>6}{sum(r.ops_done for r in rs):>7}"
            f"{sum(r.faults for r in rs):>8}{sum(r.calls for r in rs):>8}"
            f"{sum(r.kills for r in rs):>7}  " + "  ".join(f"{totals[c]:>9}" for c in COUNTS))
    failing = [r for r in results if not r.ok]
    lines.append("")
    if failing:
        lines.append(f"  {len(failing)} failing seed(s):")
        for r in failing:
            bad = ", ".join(f"{k} {v}" for k, v in r.counts.items() if v) or r.error or "kills"
            lines.append(f"    seed {r.seed} {r.backend}: {bad}; replay: "
                         f"{r.replay().split('   (or')[0]}")
    else:
        lines.append("  every seed converged: all five counts zero")
    return "\n".join(lines)


def worker(run_key: str) -> int:
    """One cycle in this process (``--worker``): the harness kills it."""
    _quiet_logging(False)
    from include.sfsync import pipeline
    from include.sfsync.config import load_config

    config = load_config()
    print(WORKER_READY, flush=True)
    os.dup2(2, 1)  # nobody reads our stdout from here on: a full pipe must never block us
    for attempt in range(ATTEMPTS):
        try:
            pipeline.run_cycle(run_key, config=config)
            return 0
        except Exception as exc:  # noqa: BLE001 - a failed try, retried as Airflow would
            print(f"attempt {attempt + 1}: {_short(exc)}", file=sys.stderr, flush=True)
    return 1


def _quiet_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="  %(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for name in ("include", "airflow", "simple_salesforce", "urllib3", "httpx"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.CRITICAL)
    log.setLevel(logging.INFO if verbose else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="how many seeds (default 5)")
    parser.add_argument("--seed-start", type=int, default=1, help="the first seed (default 1)")
    parser.add_argument("--seed", type=int, help="replay this one seed")
    parser.add_argument("--backend", default="both", choices=["both", "sqlite", "postgres"])
    parser.add_argument("--ops", type=int, default=Settings.ops)
    parser.add_argument("--rounds", type=int, default=Settings.rounds)
    parser.add_argument("--org", default=Settings.org,
                        help="emulator org profile[:size] (default standard; never the demo org)")
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--keep", action="store_true", help="keep every working directory")
    parser.add_argument("--advance", action="store_true",
                        help="move the emulator's clock on between cycles (skews it from the "
                             "database's: see Settings.advance)")
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.add_argument("--plan", action="store_true",
                        help="print the seed's plan digest and operations, run nothing")
    parser.add_argument("--worker", metavar="RUN_KEY", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    if args.org.split(":")[0] == "demo" or args.org.isdigit():
        parser.error("--org: the chaos run uses an org we did not design (standard, mature)")
    os.environ.setdefault("AIRFLOW_HOME", str(Path(tempfile.gettempdir()) / "sfsync-chaos-airflow"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    _quiet_logging(args.verbose)
    settings = Settings(ops=args.ops, rounds=args.rounds, org=args.org,
                        postgres_url=args.postgres_url, verbose=args.verbose, keep=args.keep,
                        advance=args.advance)
    seeds = [args.seed] if args.seed is not None else list(
        range(args.seed_start, args.seed_start + args.seeds))
    if args.plan:
        for seed in seeds:
            plan = plan_for(seed, settings)
            print(f"seed {seed}: plan {plan_digest(plan)}, "
                  f"{sum(len(r['ops']) for r in plan)} operations")
            for rnd in plan:
                print(f"  round {rnd['round']} (clock +{rnd['advance']} s, kill {rnd['kill']} "
                      f"at {rnd['kill_at']}):")
                for op in rnd["ops"]:
                    print("    " + json.dumps(op, sort_keys=True))
        return 0
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    print(f"chaos convergence: seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}), backends "
          f"{', '.join(backends)}, {settings.ops} operations in {settings.rounds} rounds per "
          f"seed, org {settings.org}", flush=True)
    results = []
    for backend in backends:
        for seed in seeds:
            result = run_seed(seed, backend, settings)
            results.append(result)
            print(result.report() if not result.ok or args.verbose else result.line(),
                  flush=True)
    print(summary(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

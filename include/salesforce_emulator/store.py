"""The emulated org's state: records (SQLite), clock, settings, sessions, API usage and faults.

Everything that must survive a restart lives in ``<data_dir>/org.db``: the records, the delete
log, the schema (it can drift through the control API), settings, the clock offset, id counters
and API counters. Sessions, query cursors and bulk jobs are ephemeral, as they are for a real org
across a maintenance window.

One lock serialises access: the emulator's job is to be faithful and fast enough, not to model
Salesforce's row locking (``UNABLE_TO_LOCK_ROW`` is injected on demand instead).
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

from . import errors
from .ids import make_id, to18
from .schema import Schema, schema_for
from .storage import create_tables, quote


@dataclass
class Settings:
    """Knobs of the emulated org. All of them can be changed through the control API."""

    org_id: str = to18("00D5e0000000SFE")
    username: str = "sync.user@sfsync-demo.example"
    password: str = "sfsync-demo-pw"
    security_token: str = "DEMOTOKEN0123456789"
    consumer_key: str = "3MVG9sfsyncDemoConsumerKey"
    consumer_secret: str = "sfsync-demo-consumer-secret"
    refresh_token: str = "5Aep861sfsyncDemoRefreshToken"
    # The connected app's certificate (PEM public key) for the JWT bearer flow: when set, an
    # assertion must be signed (RS256) with its private key, as Salesforce checks it.
    jwt_public_key: str = ""
    # Sessions expire after this many seconds without use (wall clock, as Salesforce's
    # "timeout value" does).
    session_seconds: int = 7200
    api_max: int = 100_000  # daily API request allowance
    recycle_bin_days: int = 15  # deleted rows are purged from queryAll after this
    deleted_log_days: int = 30  # the deleted endpoint still knows purged ids this long
    replication_window_days: int = 30  # start of updated/deleted must be within this
    locator_idle_seconds: int = 900  # query locators expire after this idle time
    max_open_locators: int = 10  # per user; opening another evicts the least recently used
    # The updated/deleted endpoints cover changes up to now minus this lag (``[unverified]``).
    latest_date_lag_seconds: int = 0
    # The replication endpoints (updated/deleted) work in whole minutes, as Salesforce's do:
    # start, end and latestDateCovered are cut to this many seconds. A smaller value lets a
    # test run cycles seconds apart without moving the org's clock away from the database's
    # (the chaos run uses 1); 60 is Salesforce.
    replication_granularity_seconds: int = 60
    # Standard duplicate rules: when true, creating a Lead/Contact whose e-mail matches an
    # existing Lead or Contact fails with DUPLICATES_DETECTED (real orgs can be set to block).
    block_duplicates: bool = False
    # Reject getDeleted starts earlier than earliestDateAvailable (docs are ambiguous).
    reject_start_before_earliest: bool = False
    # A sandbox: Organization.IsSandbox is true and logins go through the "test" login domain
    # (``<host>/test``, as test.salesforce.com); a production org refuses that domain.
    sandbox: bool = False


@dataclass
class Fault:
    endpoint: str  # endpoint key (see server.ROUTES) or "*"
    kind: str  # http_500, http_503, slow, slow_answer, session_expiry, request_limit,
    #            unable_to_lock_row, query_timeout, html_page, empty_body, truncated_json
    count: int = 1  # how many times it fires (per request or per record)
    delay_seconds: float = 0.0  # slow: before the call runs; slow_answer: after it ran
    after: int = 0  # let this many matching requests through first
    # Each matching request (or record) draws: the fault fires with this probability, from a
    # random sequence seeded by ``seed`` (the same requests in the same order fire alike).
    probability: float = 1.0
    seed: int | None = None
    # Only calls that create records: POST of sobject.create or composite.sobjects, and
    # upserts (PATCH by external id, single or collection), also as composite sub-requests.
    creates_only: bool = False
    fired: int = 0
    id: str = field(default_factory=lambda: secrets.token_hex(4))


ORG_NAMES = {"demo": "sfsync Demo Org", "standard": "Standard Enterprise Org",
             "mature": "Mature Customised Org"}

FAULT_KINDS = {"http_500", "http_503", "slow", "slow_answer", "session_expiry", "request_limit",
               "unable_to_lock_row", "query_timeout", "html_page", "empty_body", "truncated_json"}


class Org:
    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.db = sqlite3.connect(self.data_dir / "org.db", check_same_thread=False,
                                  isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA cache_size=-200000")
        self.db.execute("CREATE TABLE IF NOT EXISTS _meta (key TEXT PRIMARY KEY, value TEXT)")
        self.db.execute("CREATE TABLE IF NOT EXISTS _deleted_log (sobject TEXT NOT NULL, "
                        "id TEXT NOT NULL, deleted_date TEXT NOT NULL, cascade_root TEXT, "
                        "hard INTEGER NOT NULL DEFAULT 0)")
        self.db.execute("CREATE INDEX IF NOT EXISTS ix_deleted_log ON _deleted_log "
                        "(sobject, deleted_date)")
        self.db.execute("CREATE INDEX IF NOT EXISTS ix_deleted_log_id ON _deleted_log (id)")
        # The org's shape (schema.PROFILES): its objects and fields, chosen when it is seeded.
        self.profile: str = self._meta("profile") or "demo"
        self.schema = schema_for(self.profile)
        if self._meta("schema"):  # keep drift made through the control API; gain new objects
            stored = Schema.from_json(self._meta("schema"))
            self.schema = Schema([stored.objects.get(name, obj)
                                  for name, obj in self.schema.objects.items()]
                                 + [o for n, o in stored.objects.items()
                                    if n not in self.schema.objects])
        create_tables(self.db, self.schema)
        self.settings = Settings(**{k: v for k, v in (self._meta("settings") or {}).items()
                                    if k in {f.name for f in fields(Settings)}})
        clock = self._meta("clock") or {}
        self.clock_offset = float(clock.get("offset", 0.0))
        self.clock_frozen: str | None = clock.get("frozen")
        self.id_counters: dict[str, int] = self._meta("id_counters") or {}
        usage = self._meta("usage") or {}
        self.api_used: int = usage.get("used", 0)
        self.api_day: str = usage.get("day", "")
        self.calls: dict[str, int] = usage.get("calls", {})
        self.sessions: dict[str, dict] = {}
        self.faults: list[Fault] = []
        self.fault_draws: dict[str, random.Random] = {}  # fault id -> its seeded draws
        self.cursors: dict[str, dict] = {}
        self.jobs: dict[str, dict] = {}
        self.instance_url = "https://127.0.0.1"  # set by the server once it knows its port
        self.public_info: dict = {}  # what the startup line announces (set by the server)
        self._last_purge = 0.0
        self._dirty_usage = False
        self._persist_all()
        self.ensure_organization()

    def info(self) -> dict:
        return dict(self.public_info, now=self.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                    org_id=self.settings.org_id)

    # --- metadata -----------------------------------------------------------------------------

    def _meta(self, key: str):
        row = self.db.execute("SELECT value FROM _meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def _put_meta(self, key: str, value) -> None:
        self.db.execute("INSERT INTO _meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO "
                        "UPDATE SET value = excluded.value", (key, json.dumps(value)))

    def _persist_all(self) -> None:
        self._put_meta("schema", self.schema.to_json())
        self._put_meta("settings", asdict(self.settings))
        self.save_clock()
        self._put_meta("id_counters", self.id_counters)
        self.save_usage()

    def save_schema(self) -> None:
        self._put_meta("schema", self.schema.to_json())

    def save_settings(self) -> None:
        self._put_meta("settings", asdict(self.settings))

    def save_clock(self) -> None:
        self._put_meta("clock", {"offset": self.clock_offset, "frozen": self.clock_frozen})

    def save_usage(self) -> None:
        self._put_meta("usage", {"used": self.api_used, "day": self.api_day, "calls": self.calls})

    def save_id_counters(self) -> None:
        self._put_meta("id_counters", self.id_counters)

    # --- transactions -------------------------------------------------------------------------

    @contextlib.contextmanager
    def tx(self):
        """A savepoint: everything inside commits together or not at all (nests)."""
        name = "sp_" + secrets.token_hex(4)
        self.db.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.db.execute(f"ROLLBACK TO {name}")
            self.db.execute(f"RELEASE {name}")
            raise
        self.db.execute(f"RELEASE {name}")

    # --- clock --------------------------------------------------------------------------------

    def now(self) -> datetime:
        if self.clock_frozen:
            return datetime.fromisoformat(self.clock_frozen)
        real = datetime.now(UTC) + timedelta(seconds=self.clock_offset)
        return real.replace(microsecond=0)

    def set_clock(self, *, advance_seconds: float | None = None, to: datetime | None = None,
                  frozen: bool | None = None) -> datetime:
        current = self.now()
        target = to or (current + timedelta(seconds=advance_seconds or 0))
        target = target.astimezone(UTC).replace(microsecond=0)
        if frozen is None:
            frozen = self.clock_frozen is not None
        if frozen:
            self.clock_frozen = target.isoformat()
        else:
            self.clock_frozen = None
            self.clock_offset = (target - datetime.now(UTC)).total_seconds()
        self.save_clock()
        return self.now()

    # --- ids ----------------------------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        n = self.id_counters.get(prefix, 0) + 1
        self.id_counters[prefix] = n
        return make_id(prefix, n)

    def reserve_ids(self, prefix: str, count: int) -> int:
        """Reserve ``count`` consecutive counters; returns the first. For bulk seeding."""
        first = self.id_counters.get(prefix, 0) + 1
        self.id_counters[prefix] = first + count - 1
        return first

    # --- sessions -----------------------------------------------------------------------------

    def issue_session(self, user_id: str) -> str:
        token = (self.settings.org_id[:15] + "!AQ0AQ" + secrets.token_urlsafe(72))[:112]
        self.sessions[token] = {"user_id": user_id, "last_used": time.monotonic()}
        return token

    def check_session(self, token: str | None) -> dict:
        session = self.sessions.get(token or "")
        now = time.monotonic()
        if session is None or now - session["last_used"] > self.settings.session_seconds:
            self.sessions.pop(token or "", None)
            raise errors.invalid_session()
        session["last_used"] = now
        return session

    def expire_sessions(self, token: str | None = None) -> int:
        if token:
            return 1 if self.sessions.pop(token, None) else 0
        n = len(self.sessions)
        self.sessions.clear()
        return n

    def sync_user_id(self) -> str:
        row = self.db.execute('SELECT "Id" FROM "User" WHERE "Username" = ?',
                              (self.settings.username,)).fetchone()
        return row[0] if row else to18("0055e0000000001")

    # --- API usage ----------------------------------------------------------------------------

    def _roll_day(self) -> None:
        day = self.now().date().isoformat()
        if day != self.api_day:
            self.api_day = day
            self.api_used = 0

    def count_call(self, endpoint: str, *, api_calls: int = 1) -> None:
        """Record a call; ``api_calls`` is what it costs against the daily allowance.

        Raises REQUEST_LIMIT_EXCEEDED when the allowance is already spent.
        """
        self._roll_day()
        if api_calls and self.api_used + api_calls > self.settings.api_max:
            self.calls["REQUEST_LIMIT_EXCEEDED"] = self.calls.get("REQUEST_LIMIT_EXCEEDED", 0) + 1
            self._dirty_usage = True
            raise errors.request_limit_exceeded()
        self.calls[endpoint] = self.calls.get(endpoint, 0) + 1
        self.api_used += api_calls
        self._dirty_usage = True

    def flush_usage(self) -> None:
        if self._dirty_usage:
            self.save_usage()
            self._dirty_usage = False

    def limit_info(self) -> str:
        self._roll_day()
        return f"api-usage={self.api_used}/{self.settings.api_max}"

    # --- faults -------------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> Fault:
        if fault.kind not in FAULT_KINDS:
            raise errors.ApiError(400, "INVALID_FAULT", f"unknown fault kind {fault.kind!r}; "
                                  f"expected one of {sorted(FAULT_KINDS)}")
        if isinstance(fault.probability, bool) or not isinstance(fault.probability, int | float) \
                or not 0 < fault.probability <= 1:
            raise errors.ApiError(400, "INVALID_FAULT", "probability must be a number in (0, 1], "
                                  f"not {fault.probability!r}")
        self.faults.append(fault)
        if fault.probability < 1:
            self.fault_draws[fault.id] = random.Random(fault.seed)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()
        self.fault_draws.clear()

    def take_fault(self, endpoint: str, kinds: set[str], *, create: bool = False
                   ) -> Fault | None:
        """The next armed fault of one of ``kinds`` for ``endpoint``, consuming one firing
        (``create``: the request creates records, for faults armed on creates only)."""
        for fault in self.faults:
            if fault.kind in kinds and fault.endpoint in (endpoint, "*") \
                    and (create or not fault.creates_only):
                if fault.after > 0:
                    fault.after -= 1
                    continue
                draws = self.fault_draws.get(fault.id)
                if draws is not None and draws.random() >= fault.probability:
                    continue
                fault.fired += 1
                if fault.fired >= fault.count:
                    self.faults.remove(fault)
                    self.fault_draws.pop(fault.id, None)
                return fault
        return None

    # --- recycle bin --------------------------------------------------------------------------

    def purge_expired(self, *, force: bool = False) -> int:
        """Remove rows that sat in the recycle bin past retention; trim the delete log."""
        if not force and time.monotonic() - self._last_purge < 30:
            return 0
        self._last_purge = time.monotonic()
        now = self.now()
        bin_cutoff = (now - timedelta(days=self.settings.recycle_bin_days)).strftime(
            "%Y-%m-%dT%H:%M:%S")
        log_cutoff = (now - timedelta(days=self.settings.deleted_log_days)).strftime(
            "%Y-%m-%dT%H:%M:%S")
        purged = 0
        with self.tx():
            for obj in self.schema.objects.values():
                cur = self.db.execute(
                    f'DELETE FROM {quote(obj.name)} WHERE "IsDeleted" = 1 AND "Id" IN '
                    f'(SELECT id FROM _deleted_log WHERE sobject = ? AND deleted_date < ?)',
                    (obj.name, bin_cutoff))
                purged += cur.rowcount
            self.db.execute("DELETE FROM _deleted_log WHERE deleted_date < ?", (log_cutoff,))
        return purged

    @property
    def name(self) -> str:
        return ORG_NAMES.get(self.profile, ORG_NAMES["demo"])

    def ensure_organization(self) -> None:
        """The org's one Organization row (its Id is the org id the sync locks on)."""
        stamp = self.now().strftime("%Y-%m-%dT%H:%M:%S")
        user = to18("0055e0000000001")
        self.db.execute(
            'INSERT INTO "Organization" ("Id", "Name", "OrganizationType", "IsSandbox", '
            '"InstanceName", "DefaultLocaleSidKey", "TimeZoneSidKey", "CreatedDate", '
            '"LastModifiedDate", "SystemModstamp", "CreatedById", "LastModifiedById") '
            "VALUES (?, ?, 'Enterprise Edition', ?, 'EMU1', 'en_US', "
            "'America/Los_Angeles', ?, ?, ?, ?, ?) ON CONFLICT (\"Id\") DO UPDATE SET "
            '"Name" = excluded."Name", "IsSandbox" = excluded."IsSandbox"',
            (self.settings.org_id, self.name,
             int(self.settings.sandbox), stamp, stamp, stamp, user, user))

    def use_profile(self, profile: str) -> None:
        """Give the org another shape (dropping every record and schema drift) when ``profile``
        differs from the current one; settings and the clock stay."""
        if profile == self.profile:
            return
        schema = schema_for(profile)
        with self.tx():
            for obj in self.schema.objects.values():
                self.db.execute(f"DROP TABLE IF EXISTS {quote(obj.name)}")
            self.schema, self.profile = schema, profile
            create_tables(self.db, schema)
            self._put_meta("profile", profile)
            self.save_schema()

    def reset(self) -> None:
        """Drop every record and the delete log; keep settings, schema and the clock."""
        with self.tx():
            for obj in self.schema.objects.values():
                self.db.execute(f"DELETE FROM {quote(obj.name)}")
            self.db.execute("DELETE FROM _deleted_log")
        self.id_counters = {}
        self.save_id_counters()
        self.ensure_organization()
        self.cursors.clear()
        self.jobs.clear()

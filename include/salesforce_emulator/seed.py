"""Org data: seeding a realistic org and simulating sales activity afterwards.

``seed_org(org, "demo" | "empty" | N)`` fills an empty org. Rows are generated column by column
in Python and bulk-inserted with ``executemany`` in one transaction (secondary indexes are built
after the load), so a million records take well under a minute. Every field Salesforce derives
(``Name``, ``Account_Rating__c``, opportunity stage fields, task/event/campaign-member fields,
``IsArchived``) is computed inline with the same rules as ``records._derive``; a few records are
then converted / deleted through the ``records`` write path so the recycle bin and delete log
are real.

``simulate_activity(org, creates=..., updates=..., ...)`` plays sales activity through the
faithful write path (``records.create/update/delete/undelete/merge/convert_lead``), so
``SystemModstamp``, cascades and the delete log behave exactly as for any other write.

Realism the sync depends on: ``CreatedDate`` spread over the past three years, ``CreatedDate <=
LastModifiedDate <= SystemModstamp``, whole seconds; about 20% of the rows come from mass-import
or mass-update batches sharing one ``SystemModstamp`` (thousands of ties per second value at
scale); ids increase with ``CreatedDate``; ~2% ``Do_Not_Sync_Marketing__c``; ~5% of the leads
converted; ~3% of the people share a normalised e-mail address (some differ only in case).
Everything is deterministic for a given ``rng_seed`` and org clock.
"""

from __future__ import annotations

import random
import unicodedata
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from itertools import islice, repeat

from . import records
from .errors import ApiError
from .ids import POD, checksum, make_id
from .schema import (
    INDUSTRIES,
    INTERESTS,
    LEAD_SOURCES,
    OPPORTUNITY_STAGES,
    PROFILES,
    TASK_STATUSES,
    US_STATES,
    schema_for,
)
from .storage import quote
from .store import Org

DAY = 86400
YEAR = 365 * DAY
IMPORT_SHARE = 0.12  # rows created by a mass import: CreatedDate = LastModifiedDate = SystemModstamp
RECALC_SHARE = 0.08  # rows touched by a mass update/recalculation sharing one SystemModstamp

# Record counts of the "demo" org (the sync user included in the users).
DEMO_COUNTS = {
    "User": 6, "Account": 40, "Contact": 120, "Lead": 150, "Opportunity": 30,
    "OpportunityContactRole": 45, "Campaign": 6, "CampaignMember": 90, "Task": 150, "Event": 40,
    "Webinar_Attendance__c": 60, "Subscription__c": 30,
}
# Objects of other org profiles (schema.PROFILES), at the demo org's size.
OTHER_PROFILE_COUNTS = {"Trial_Request__c": 40, "Commission__c": 12}
# Share of N per object for a numeric seed (users and campaigns have minimums).
SCALE_SHARES = {
    "User": 0.0005, "Account": 0.10, "Contact": 0.25, "Lead": 0.30, "Opportunity": 0.06,
    "OpportunityContactRole": 0.06, "Campaign": 0.0005, "CampaignMember": 0.10, "Task": 0.08,
    "Event": 0.02, "Webinar_Attendance__c": 0.02, "Subscription__c": 0.01,
    "Trial_Request__c": 0.01, "Commission__c": 0.003,
}
PERSON_ACCOUNT_SHARE = 0.05  # of the accounts, in orgs with person accounts (extra rows)
RECORD_TYPES = {"Account": ("Customer", "Partner"), "Contact": ("Customer Contact",),
                "Lead": ("Inbound", "Outbound"), "Opportunity": ("New Business", "Renewal")}
MINIMUMS = {"User": 5, "Campaign": 3}

# --- vocabulary -------------------------------------------------------------------------------

FIRST_NAMES = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William",
    "Elizabeth", "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
    "Charles", "Karen", "Christopher", "Nancy", "Daniel", "Lisa", "Matthew", "Betty", "Anthony",
    "Margaret", "Mark", "Sandra", "Donald", "Ashley", "Steven", "Kimberly", "Paul", "Emily",
    "Andrew", "Donna", "Joshua", "Michelle", "Kenneth", "Carol", "Kevin", "Amanda", "Brian",
    "Melissa", "George", "Deborah", "Timothy", "Stephanie", "Ronald", "Rebecca", "Jason", "Laura",
    "Edward", "Sharon", "Jeffrey", "Cynthia", "Ryan", "Kathleen", "Jacob", "Amy", "Gary",
    "Angela", "Nicholas", "Shirley", "Eric", "Anna", "Jonathan", "Brenda", "Stephen", "Pamela",
    "Larry", "Emma", "Justin", "Nicole", "Scott", "Helen", "Brandon", "Samantha", "Benjamin",
    "Katherine", "Samuel", "Christine", "Gregory", "Rachel", "Patrick", "Carolyn", "Frank",
    "Janet", "Raymond", "Maria", "Aisha", "Hiroshi", "Priya", "Wei", "Lars", "Sofia", "Mateo",
    "Ingrid", "Noah", "Chloé", "José", "Zoë", "Björn", "François", "Siobhán", "Ana-María",
)
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall",
    "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Gomez", "Phillips", "Evans",
    "Turner", "Diaz", "Parker", "Cruz", "Edwards", "Collins", "Reyes", "Stewart", "Morris",
    "Morales", "Murphy", "Cook", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper", "Peterson",
    "Bailey", "Reed", "Kelly", "Howard", "Kim", "Cox", "Ward", "Richardson", "Watson", "Brooks",
    "Chavez", "Wood", "James", "Bennett", "Gray", "Mendoza", "Ruiz", "Hughes", "Price", "Patel",
    "Tanaka", "Schmidt", "Müller", "O'Brien", "Dubois", "Rossi", "Johansson", "Kowalski",
    "García-López", "Østergaard", "Van der Berg", "Nakamura", "Singh", "Chen", "Wang",
)
COMPANY_WORDS = (
    "Acme", "Global", "Blue", "Summit", "Pioneer", "Northwind", "Vertex", "Apex", "Bright",
    "Silver", "Quantum", "Cedar", "Harbor", "Evergreen", "Redwood", "Atlas", "Nova", "Crescent",
    "Falcon", "Granite", "Horizon", "Ironclad", "Juniper", "Keystone", "Lakeside", "Meridian",
    "Nimbus", "Orion", "Pinnacle", "Riverbend", "Sterling", "Titan", "Union", "Vantage",
    "Westfield", "Zenith", "Alpine", "Beacon", "Cobalt", "Delta", "Emerald", "Frontier",
)
COMPANY_NOUNS = (
    "Dynamics", "Systems", "Labs", "Holdings", "Industries", "Solutions", "Networks", "Partners",
    "Logistics", "Analytics", "Foods", "Energy", "Health", "Media", "Capital", "Robotics",
    "Software", "Materials", "Pharma", "Retail", "Motors", "Consulting", "Telecom", "Outfitters",
)
COMPANY_SUFFIXES = ("Inc.", "LLC", "Ltd", "Corp.", "Group", "Co.", "", "", "")
FREE_MAIL = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "proton.me")
TITLES = (
    "CEO", "CTO", "CFO", "COO", "VP Marketing", "VP Sales", "Director of IT", "Marketing Manager",
    "Sales Manager", "Software Engineer", "Product Manager", "Account Executive",
    "Operations Manager", "Procurement Specialist", "HR Director", "Data Analyst",
    "Office Manager", "Head of Growth", "Chief Data Officer", "Marketing Coordinator",
)
DEPARTMENTS = ("Sales", "Marketing", "Finance", "IT", "Operations", "Engineering", "HR",
               "Procurement", "Executive")
STREET_NAMES = ("Main", "Oak", "Pine", "Maple", "Cedar", "Elm", "Washington", "Lake", "Hill",
                "Park", "Market", "Mission", "Church", "High", "King", "Queen", "Station")
STREET_KINDS = ("St", "Ave", "Rd", "Blvd", "Way", "Lane")
CITIES = {
    "United States": ("New York", "San Francisco", "Chicago", "Austin", "Seattle", "Boston",
                      "Denver", "Atlanta", "Miami", "Portland"),
    "Canada": ("Toronto", "Montreal", "Vancouver", "Calgary", "Ottawa"),
    "United Kingdom": ("London", "Manchester", "Edinburgh", "Bristol"),
    "Germany": ("Berlin", "München", "Hamburg", "Köln"),
    "France": ("Paris", "Lyon", "Marseille"), "Netherlands": ("Amsterdam", "Rotterdam"),
    "Spain": ("Madrid", "Barcelona"), "Italy": ("Milano", "Roma"), "Ireland": ("Dublin", "Cork"),
    "Sweden": ("Stockholm", "Göteborg"), "Australia": ("Sydney", "Melbourne"),
    "Japan": ("Tokyo", "Osaka"), "India": ("Bengaluru", "Mumbai"), "Brazil": ("São Paulo",),
    "Mexico": ("Ciudad de México", "Monterrey"), "Singapore": ("Singapore",),
}
COUNTRY_WEIGHTS = {"United States": 60, "Canada": 6, "United Kingdom": 8, "Germany": 5,
                   "France": 4, "Netherlands": 2, "Spain": 2, "Italy": 2, "Ireland": 1,
                   "Sweden": 1, "Australia": 3, "Japan": 2, "India": 2, "Brazil": 1, "Mexico": 1,
                   "Singapore": 1}
TLDS = {"United Kingdom": "co.uk", "Germany": "de", "France": "fr", "Netherlands": "nl",
        "Spain": "es", "Italy": "it", "Ireland": "ie", "Sweden": "se", "Australia": "com.au",
        "Japan": "jp", "India": "in", "Brazil": "com.br", "Mexico": "mx", "Singapore": "sg",
        "Canada": "ca"}
REGIONS = {"United States": "AMER", "Canada": "AMER", "Brazil": "AMER", "Mexico": "AMER",
           "Australia": "APAC", "Japan": "APAC", "India": "APAC", "Singapore": "APAC"}
US_ONLY_STATES = US_STATES[:51]
CA_PROVINCES = US_STATES[51:]
PRODUCTS = ("Platform License", "Analytics Add-on", "Support Renewal", "Expansion",
            "Onboarding Services", "Enterprise Upgrade", "Pilot", "Data Integration")
CAMPAIGN_THEMES = ("Spring Launch", "Summer Webinar Series", "Q4 Pipeline Push", "Customer Summit",
                   "Partner Roadshow", "Product Update", "Holiday Promo", "Trade Show Follow-up",
                   "Nurture Track", "Re-engagement")
WEBINARS = ("Intro to Data Sync", "Scaling Marketing Ops", "Customer Success Stories",
            "Pipeline Analytics 101", "Security Deep Dive", "Roadmap Preview",
            "Automation Best Practices", "Year in Review")
TASK_SUBJECTS = {"Call": ("Call", "Follow-up call", "Discovery call", "Check-in call"),
                 "Email": ("Email", "Send proposal", "Send pricing", "Intro email"),
                 "Meeting": ("Meeting prep", "Demo", "Quarterly review"),
                 "Other": ("Update CRM", "Research account", "Prepare contract")}
EVENT_SUBJECTS = ("Demo", "Discovery meeting", "Quarterly business review", "Lunch",
                  "Onsite workshop", "Contract negotiation", "Kick-off")
LOCATIONS = ("Zoom", "Google Meet", "Microsoft Teams", "Customer office", "HQ - Room 4",
             "Phone")
TIME_ZONES = ("America/Los_Angeles", "America/New_York", "Europe/London", "Europe/Berlin",
              "Asia/Tokyo")
SALUTATIONS = ("Mr.", "Ms.", "Mrs.", "Dr.", "Prof.")
STAGES = tuple(OPPORTUNITY_STAGES)
OPEN_STAGES = tuple(s for s, v in OPPORTUNITY_STAGES.items() if not v[1])
OPEN_LEAD_STATUSES = ("Open - Not Contacted", "Working - Contacted", "Closed - Not Converted")
CM_STATUSES = (("Sent", True, False), ("Responded", False, True))  # label, default, responded
ROLES = ("Business User", "Decision Maker", "Economic Buyer", "Economic Decision Maker",
         "Evaluator", "Executive Sponsor", "Influencer", "Technical Buyer", "Other")
PLANS = (("Free", 0.0), ("Starter", 25.0), ("Pro", 60.0), ("Enterprise", 120.0))


def _slug(text: str) -> str:
    text = text.replace("ø", "o").replace("Ø", "O").replace("ł", "l").replace("ß", "ss")
    ascii_ = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_.lower() if ch.isalnum())


FIRST_SLUGS = {n: _slug(n) for n in FIRST_NAMES}
LAST_SLUGS = {n: _slug(n) for n in LAST_NAMES}


# --- fast ids ---------------------------------------------------------------------------------

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CHECK = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_LO = [(_B62[a] + _B62[b], (a >= 10 and a < 36) | ((b >= 10 and b < 36) << 1))
       for a in range(62) for b in range(62)]


def fast_ids(prefix: str, first: int, count: int) -> list[str]:
    """``[make_id(prefix, n) for n in range(first, first + count)]``, about ten times faster."""
    head = prefix + POD
    fixed = checksum(head + "0" * 10)[:2]  # chars 0-4 and 5-9 (zeros while n < 62**5)
    out: list[str] = []
    hi_cache: dict[int, tuple[str, int]] = {}
    lo = _LO
    for n in range(first, first + count):
        if n >= 62 ** 5:
            out.append(make_id(prefix, n))
            continue
        hi, rest = divmod(n, 3844)
        h = hi_cache.get(hi)
        if h is None:
            a, b, c = hi // 3844, (hi // 62) % 62, hi % 62
            bits = sum(1 << i for i, d in enumerate((a, b, c)) if 10 <= d < 36)
            h = hi_cache[hi] = (_B62[a] + _B62[b] + _B62[c], bits)
        ls, lbits = lo[rest]
        out.append(head + "00000" + h[0] + ls + fixed + _CHECK[h[1] | (lbits << 3)])
    return out


# --- public API -------------------------------------------------------------------------------

def parse_spec(spec) -> tuple[str, str | int]:
    """``"demo"``, ``"empty"``, a record count, ``"<profile>"`` or ``"<profile>:<size>"`` (size:
    ``demo``-sized, ``empty`` or a record count) -> (profile, size). A bare size is the demo org.
    """
    text = str(spec).strip()
    profile, _, size = text.rpartition(":") if ":" in text else ("", "", text)
    if not profile and size in PROFILES:
        profile, size = size, "demo"
    profile = profile or "demo"
    size = size.replace("_", "")
    if profile not in PROFILES or not (size in {"demo", "empty"} or size.isdigit()):
        raise ValueError(f"seed must be demo, empty, a record count, or a profile ("
                         f"{', '.join(PROFILES)}) with an optional ':size', not {spec!r}")
    return profile, size if size in {"demo", "empty"} else int(size)


def seed_counts(spec, objects=None) -> dict[str, int]:
    """Planned record counts per object for a seed size (before derived/records-path rows),
    limited to ``objects`` (the org's objects; default: the demo org's)."""
    objects = set(objects if objects is not None else schema_for("demo").objects)
    return {name: n for name, n in _counts(spec).items() if name in objects}


def _counts(spec) -> dict[str, int]:
    if spec == "empty":
        return {"User": 1}
    if spec == "demo":
        return {**DEMO_COUNTS, **OTHER_PROFILE_COUNTS}
    n = int(spec)
    if n <= 1:
        return {"User": 1}
    counts = {}
    for name, share in SCALE_SHARES.items():
        counts[name] = max(MINIMUMS.get(name, 0), round(n * share))
    if counts["Contact"] and not counts["Account"]:
        counts["Account"] = 1
    return counts


def seed_org(org: Org, spec, *, rng_seed: int = 42,
             progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Reset ``org`` and fill it (see :func:`parse_spec`): e.g. ``"demo"``, ``"empty"``,
    ``50000`` (the demo org's shape), ``"standard"`` or ``"standard:50000"``.

    Returns the number of rows per object (recycle-bin rows included).
    """
    profile, spec = parse_spec(spec)
    with org.lock:
        org.use_profile(profile)
        org.reset()
        rng = random.Random(rng_seed)
        counts = seed_counts(spec, org.schema.objects)
        gen = _Bulk(org, rng, progress, sum(counts.values()) + 2 * counts.get("Campaign", 0))
        gen.sync_user()
        if len(counts) > 1:
            gen.run(counts)
            with org.tx():
                if spec == "demo":
                    gen.convert_some(3)
                gen.recycle(max(8, int(spec) // 5000) if spec != "demo" else 8)
        org.save_id_counters()
        if len(counts) > 1:  # the bulk load left a WAL as large as the data: give it back
            org.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return {name: org.db.execute(f"SELECT count(*) FROM {quote(name)}").fetchone()[0]
                for name in org.schema.objects if name not in {"Organization", "RecordType"}}


# --- bulk generator ---------------------------------------------------------------------------

def _pick1(rnd, seq):
    return seq[int(rnd() * len(seq))]


class _Bulk:
    def __init__(self, org: Org, rng: random.Random, progress, total: int):
        self.org = org
        self.db = org.db
        self.rng = rng
        self.progress = progress
        self.total = max(total, 1)
        self.done = 0
        now = org.now()
        self.now = int(now.timestamp())
        self.start = self.now - 3 * YEAR
        self.today = now.date()
        self.d0 = (self.start - 3 * YEAR) // DAY
        epoch = date(1970, 1, 1)
        self.days = [(epoch + timedelta(days=d)).isoformat()
                     for d in range(self.d0, self.now // DAY + 800)]
        self.times = [f"T{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60)
                      for s in range(60)]
        self.archive_before = (self.today - timedelta(days=365)).isoformat()
        self.sync_id = ""
        self.admin_id = ""
        self.owners: list[str] = []
        self.user_ids: list[str] = []

    # --- formatting helpers

    def ts(self, values: list[int]) -> list[str]:
        days, times, d0 = self.days, self.times, self.d0
        return [days[t // DAY - d0] + times[t % DAY] for t in values]

    def ts1(self, t: int) -> str:
        return self.days[t // DAY - self.d0] + self.times[t % DAY]

    def dates(self, values: list[int]) -> list[str]:
        days, d0 = self.days, self.d0
        return [days[t // DAY - d0] for t in values]

    def date1(self, t: int) -> str:
        return self.days[t // DAY - self.d0]

    # --- timestamps

    def plan(self, n: int, floors: list[int] | None = None, aux: tuple = ()):
        """CreatedDate/LastModifiedDate/SystemModstamp (epoch seconds) for ``n`` rows.

        ``floors`` are the earliest CreatedDate per row (the parents' CreatedDate). Returns the
        lists sorted by CreatedDate (ids are allocated in that order) with ``kind`` (0 normal,
        1 mass import, 2 mass update) and the ``aux`` lists permuted the same way.
        """
        rng, rnd = self.rng, self.rng.random
        now, start = self.now, self.start
        created, lm, sm = [0] * n, [0] * n, [0] * n
        kind = bytearray(n)
        if n == 0:
            return [], [], [], kind, [[] for _ in aux]
        size = max(3, min(5000, n // 40))
        used: set[int] = set()
        if floors is None:
            byfloor, sorted_f = None, None
        else:
            byfloor = sorted(range(n), key=floors.__getitem__)
            sorted_f = [floors[i] for i in byfloor]

        def batches(share, lo_t, prefix_len, index_of, apply):
            target = int(n * share)
            assigned = attempts = 0
            while assigned < target and attempts < 400:
                attempts += 1
                t = rng.randint(lo_t, now - 60)
                if t in used:
                    continue
                k = prefix_len(t)
                if k < 2:
                    continue
                want = min(rng.randint(max(2, size // 2), size), max(2, target - assigned))
                got = 0
                for _ in range(want * 2):
                    j = index_of(int(rnd() * k))
                    if kind[j]:
                        continue
                    apply(j, t)
                    got += 1
                    if got >= want:
                        break
                if got:
                    used.add(t)
                assigned += got

        def apply_import(j, t):
            kind[j] = 1
            created[j] = lm[j] = sm[j] = t

        if byfloor is None:
            batches(IMPORT_SHARE, start + DAY, lambda t: n, lambda j: j, apply_import)
        else:
            batches(IMPORT_SHARE, start + DAY, lambda t: bisect_right(sorted_f, t),
                    byfloor.__getitem__, apply_import)
        for j in range(n):
            if kind[j]:
                continue
            f = start if floors is None else floors[j]
            c = f + int(rnd() * (now - f))
            m = c if rnd() < 0.45 else c + int(rnd() * rnd() * (now - c))
            # (spread up to now, not capped at it: no cluster of rows stamped at seeding time)
            s = m if rnd() < 0.8 else m + int(rnd() * min(20 * DAY, now - m))
            created[j], lm[j], sm[j] = c, m, s
        order = sorted(range(n), key=created.__getitem__)
        sorted_c = [created[i] for i in order]

        def apply_recalc(j, t):
            kind[j] = 2
            if lm[j] > t:
                lm[j] = t
            sm[j] = t

        batches(RECALC_SHARE, start + 30 * DAY, lambda t: bisect_right(sorted_c, t),
                order.__getitem__, apply_recalc)
        perm = [[a[i] for i in order] for a in aux]
        return (sorted_c, [lm[i] for i in order], [sm[i] for i in order],
                bytearray(kind[i] for i in order), perm)

    def audit(self, kind: bytearray, owners: list[str] | None) -> tuple[list[str], list[str]]:
        """CreatedById / LastModifiedById: mass imports by the admin, the rest by sales reps."""
        rnd, reps, admin = self.rng.random, self.owners, self.admin_id
        nr = len(reps)
        created_by, modified_by = [], []
        for i, k in enumerate(kind):
            if k == 1:
                created_by.append(admin)
                modified_by.append(admin)
                continue
            c = owners[i] if owners is not None and rnd() < 0.7 else reps[int(rnd() * nr)]
            created_by.append(c)
            modified_by.append(c if rnd() < 0.6 else admin if k == 2 else reps[int(rnd() * nr)])
        return created_by, modified_by

    # --- inserting

    def alloc(self, prefix: str, n: int) -> tuple[int, list[str]]:
        if n == 0:
            return 1, []
        first = self.org.reserve_ids(prefix, n)
        return first, fast_ids(prefix, first, n)

    def insert(self, table: str, n: int, cols: dict) -> None:
        obj = self.org.schema.objects[table]
        # custom fields of the demo org that this org's profile does not have
        cols = {c: v for c, v in cols.items() if c in obj.fields or not c.endswith("__c")}
        for c, v in cols.items():
            if c not in obj.fields and c != "IsDeleted":
                raise KeyError(f"{table}.{c}")
            if isinstance(v, list) and len(v) != n:
                raise ValueError(f"{table}.{c}: {len(v)} values for {n} rows")
        names = list(cols)
        iters = [v if isinstance(v, list) else repeat(v, n) for v in cols.values()]
        sql = (f"INSERT INTO {quote(table)} ({', '.join(map(quote, names))}) "
               f"VALUES ({', '.join('?' * len(names))})")
        rows = zip(*iters, strict=False)
        while True:
            chunk = list(islice(rows, 50_000))
            if not chunk:
                break
            self.db.executemany(sql, chunk)
            self.done += len(chunk)
            if self.progress:
                self.progress(min(self.done, self.total), self.total)

    # --- random helpers

    def pick(self, pool, n: int, weights=None) -> list:
        if not pool:
            return [None] * n
        return self.rng.choices(pool, weights=weights, k=n)

    def flags(self, n: int, p: float) -> list[int]:
        rnd = self.rng.random
        rnd = self.rng.random
        return [1 if rnd() < p else 0 for _ in range(n)]

    def phones(self, n: int) -> list[str]:
        rnd = self.rng.random
        return [f"+1 ({200 + int(rnd() * 800)}) 555-{int(rnd() * 10000):04d}" for _ in range(n)]

    def addresses(self, n: int):
        rnd = self.rng.random
        countries = self.rng.choices(list(COUNTRY_WEIGHTS), weights=list(COUNTRY_WEIGHTS.values()),
                                     k=n)
        names, kinds = self.pick(STREET_NAMES, n), self.pick(STREET_KINDS, n)
        streets = [f"{1 + int(rnd() * 9998)} {a} {b}" for a, b in zip(names, kinds, strict=True)]
        cities, states, postals = [], [], []
        us, ca = US_ONLY_STATES, CA_PROVINCES
        for c in countries:
            pool = CITIES[c]
            cities.append(pool[int(rnd() * len(pool))])
            if c == "United States":
                states.append(us[int(rnd() * len(us))])
                postals.append(f"{1000 + int(rnd() * 98999):05d}")
            elif c == "Canada":
                states.append(ca[int(rnd() * len(ca))])
                postals.append(f"M{int(rnd() * 10)}A {int(rnd() * 10)}B{int(rnd() * 10)}")
            else:
                states.append(None)
                postals.append(str(10000 + int(rnd() * 89999)))
        return streets, cities, states, postals, countries

    def companies(self, n: int) -> tuple[list[str], list[str]]:
        words, nouns = self.pick(COMPANY_WORDS, n), self.pick(COMPANY_NOUNS, n)
        suffixes = self.pick(COMPANY_SUFFIXES, n)
        names = [f"{w} {no} {suf}".strip() for w, no, suf in zip(words, nouns, suffixes, strict=True)]
        slugs = [w.lower() + no.lower() for w, no in zip(words, nouns, strict=True)]
        return names, slugs

    def people(self, n: int):
        first = self.pick(FIRST_NAMES, n)
        last = self.pick(LAST_NAMES, n)
        full = [f"{a} {b}" for a, b in zip(first, last, strict=True)]
        return first, last, full

    def emails(self, first, last, domains, base: int) -> list[str | None]:
        rnd = self.rng.random
        rnd = self.rng.random
        fs, ls = FIRST_SLUGS, LAST_SLUGS
        return [None if rnd() < 0.02 else f"{fs[a]}.{ls[b]}{base + i}@{d}"
                for i, (a, b, d) in enumerate(zip(first, last, domains, strict=True))]

    def case_variant(self, email: str) -> str:
        local, _, domain = email.partition("@")
        r = self.rng.random()
        if r < 0.4:
            return email.upper()
        if r < 0.8:
            return local[:1].upper() + local[1:] + "@" + domain
        return local + "@" + domain.upper()

    # --- objects

    def sync_user(self) -> None:
        org = self.org
        stamp = datetime.fromtimestamp(self.start - 120 * DAY, UTC)
        self.sync_id = records.create(org, "User", {
            "Username": org.settings.username, "LastName": "Sync User", "FirstName": "Marketing",
            "Alias": "sync", "Email": org.settings.username if "@" in org.settings.username
            else "sync.user@sfsync-demo.example", "IsActive": True,
            "TimeZoneSidKey": "America/Los_Angeles", "Title": "Integration User",
            "Department": "IT", "CompanyName": "sfsync demo"}, system=True, stamp=stamp)
        self.user_ids = [self.sync_id]
        self.done += 1

    def run(self, counts: dict[str, int]) -> None:
        db = self.db
        tables = [n for n in self.org.schema.objects]
        marks = ",".join("?" * len(tables))
        indexes = db.execute(f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql "
                             f"IS NOT NULL AND tbl_name IN ({marks})", tables).fetchall()
        db.execute("PRAGMA synchronous=OFF")
        db.execute("BEGIN")
        try:
            for name, _ in indexes:
                db.execute(f"DROP INDEX IF EXISTS {quote(name)}")
            self.users(counts["User"] - 1)
            self.campaigns(counts["Campaign"])
            self.accounts(counts["Account"])
            self.contacts(counts["Contact"])
            self.opportunities(counts["Opportunity"])
            self.contact_roles(counts["OpportunityContactRole"])
            self.leads(counts["Lead"])
            self.campaign_members(counts["CampaignMember"])
            self.activities("Task", counts["Task"])
            self.activities("Event", counts["Event"])
            if "Webinar_Attendance__c" in counts:
                self.webinars(counts["Webinar_Attendance__c"])
            if "Subscription__c" in counts:
                self.subscriptions(counts["Subscription__c"])
            self.customisations(counts)
            for _, sql in indexes:
                db.execute(sql.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1)
                           if "IF NOT EXISTS" not in sql else sql)
            # Statistics, or SQLite picks ix_<table>_IsDeleted for "Fk = ? AND IsDeleted = 0"
            # and scans the table (cascades, SOQL with IsDeleted filters).
            db.execute("PRAGMA analysis_limit=1000")
            db.execute("ANALYZE")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.execute("PRAGMA synchronous=NORMAL")
        self.org.save_id_counters()

    def users(self, n: int) -> None:
        rng, rnd = self.rng, self.rng.random
        n = max(n, 1)
        first_c, ids = self.alloc("005", n)
        first, last, _ = self.people(n)
        first[0], last[0] = "Data", "Admin"
        if n > 1:
            first[1], last[1] = "Dana", "Whitfield"
        created = [self.start - 90 * DAY + i * 3 * 3600 + int(rnd() * 3600) for i in range(n)]
        lm = [c + int(rnd() * (60 * DAY)) for c in created]
        active, title, manager = [], [], []
        for i in range(n):
            active.append(0 if i >= 4 and rng.random() < 0.1 else 1)
            title.append("Salesforce Administrator" if i == 0 else
                         "VP Sales" if i == 1 else _pick1(rnd, ("Account Executive",
                                                                "Sales Development Rep",
                                                                "Account Manager")))
            manager.append(None if i < 2 else ids[1])
        if n >= 5:
            active[n - 1] = 0  # one deactivated rep: owners must never be inactive
        slugs = [f"{FIRST_SLUGS.get(a, _slug(a))}.{LAST_SLUGS.get(b, _slug(b))}{i + 2}"
                 for i, (a, b) in enumerate(zip(first, last, strict=True))]
        self.admin_id = ids[0]
        self.user_ids += ids
        self.owners = [ids[i] for i in range(1, n) if active[i]] or [ids[0]]
        self.insert("User", n, {
            "Id": ids, "CreatedDate": self.ts(created), "LastModifiedDate": self.ts(lm),
            "SystemModstamp": self.ts(lm), "CreatedById": self.sync_id,
            "LastModifiedById": self.sync_id,
            "Username": [s + "@sfsync-demo.example" for s in slugs],
            "FirstName": first, "LastName": last,
            "Name": [f"{a} {b}" for a, b in zip(first, last, strict=True)],
            "Alias": [(s[0] + s.split(".")[1])[:8] for s in slugs],
            "Email": [s + "@sfsync-demo.example" for s in slugs], "IsActive": active,
            "Title": title, "Phone": self.phones(n),
            "Department": ["IT" if i == 0 else "Sales" for i in range(n)],
            "CompanyName": "sfsync demo", "ManagerId": manager, "UserType": "Standard",
            "TimeZoneSidKey": self.pick(TIME_ZONES, n),
        })

    def campaigns(self, n: int) -> None:
        rng, rnd = self.rng, self.rng.random
        created, lm, sm, kind, _ = self.plan(n)
        first_c, ids = self.alloc("701", n)
        owners = self.pick(self.owners, n)
        cby, mby = self.audit(kind, owners)
        types = self.pick(("Email", "Webinar", "Conference", "Direct Mail", "Advertisement",
                           "Partners", "Other"), n)
        starts, ends, status, active, names = [], [], [], [], []
        today = self.today.isoformat()
        for i in range(n):
            s = created[i] + int(rnd() * (30 * DAY))
            e = s + (14 + int(rnd() * 76)) * DAY
            starts.append(self.date1(s))
            ends.append(self.date1(e))
            st = ("Aborted" if rng.random() < 0.03 else "Completed" if ends[i] < today
                  else "In Progress" if starts[i] <= today else "Planned")
            status.append(st)
            active.append(int(st in {"Planned", "In Progress"}))
            theme = CAMPAIGN_THEMES[int(rnd() * len(CAMPAIGN_THEMES))]
            names.append(f"{self.date1(s)[:4]} {theme} - {types[i]}")
        budget = [float((1 + int(rnd() * 99)) * 500) for _ in range(n)]
        self.camp = {"ids": ids, "created": created}
        self.insert("Campaign", n, {
            "Id": ids, "OwnerId": owners, "CreatedDate": self.ts(created),
            "LastModifiedDate": self.ts(lm), "SystemModstamp": self.ts(sm), "CreatedById": cby,
            "LastModifiedById": mby, "Name": names, "Type": types, "Status": status,
            "IsActive": active, "StartDate": starts, "EndDate": ends,
            "BudgetedCost": budget,
            "ActualCost": [round(b * rng.uniform(0.5, 1.1), 2) if s == "Completed" else None
                           for b, s in zip(budget, status, strict=True)],
            "ExpectedRevenue": [b * (2 + int(rnd() * 8)) for b in budget],
            "Description": [None if rng.random() < 0.7 else "Campaign brief on the shared drive"
                            for _ in range(n)],
        })
        # every campaign has the statuses "Sent" (default) and "Responded" (responded)
        first_s, sids = self.alloc("01Y", 2 * n)
        cstamp = [c for c in self.ts(created) for _ in range(2)]
        self.insert("CampaignMemberStatus", 2 * n, {
            "Id": sids, "CreatedDate": cstamp, "LastModifiedDate": cstamp,
            "SystemModstamp": cstamp, "CreatedById": [c for c in cby for _ in range(2)],
            "LastModifiedById": [c for c in cby for _ in range(2)],
            "CampaignId": [c for c in ids for _ in range(2)],
            "Label": [s[0] for _ in range(n) for s in CM_STATUSES],
            "IsDefault": [int(s[1]) for _ in range(n) for s in CM_STATUSES],
            "HasResponded": [int(s[2]) for _ in range(n) for s in CM_STATUSES],
            "SortOrder": [i for _ in range(n) for i in (1, 2)],
        })

    def accounts(self, n: int) -> None:
        rng, rnd = self.rng, self.rng.random
        created, lm, sm, kind, _ = self.plan(n)
        _, ids = self.alloc("001", n)
        owners = self.pick(self.owners, n)
        cby, mby = self.audit(kind, owners)
        names, slugs = self.companies(n)
        street, city, state, postal, country = self.addresses(n)
        domains = [f"{s}.{TLDS.get(c, 'com')}" for s, c in zip(slugs, country, strict=True)]
        rating = [None if x < 0.25 else ("Hot", "Warm", "Cold")[int(x * 12) % 3]
                  for x in (rnd() for _ in range(n))]
        parent = [ids[int(rnd() * i)] if i and rnd() < 0.04 else None for i in range(n)]
        self.acct = {"ids": ids, "created": created, "owner": owners, "name": names,
                     "rating": rating, "domain": domains, "street": street, "city": city,
                     "state": state, "postal": postal, "country": country}
        self.insert("Account", n, {
            "Id": ids, "OwnerId": owners, "CreatedDate": self.ts(created),
            "LastModifiedDate": self.ts(lm), "SystemModstamp": self.ts(sm), "CreatedById": cby,
            "LastModifiedById": mby, "Name": names,
            "Type": self.pick(("Prospect", "Customer - Direct", "Customer - Channel", "Partner",
                               "Other", None), n, (30, 35, 10, 8, 5, 12)),
            "ParentId": parent, "BillingStreet": street, "BillingCity": city,
            "BillingState": state, "BillingPostalCode": postal, "BillingCountry": country,
            "Phone": self.phones(n), "Website": ["https://www." + d for d in domains],
            "Industry": self.pick(INDUSTRIES + (None,), n),
            "AnnualRevenue": [float((1 + int(rnd() * 4999)) * 100_000) if rnd() < 0.8 else None
                              for _ in range(n)],
            "NumberOfEmployees": [int(10 ** rng.uniform(0.7, 5)) if rnd() < 0.85 else None
                                  for _ in range(n)],
            "Rating": rating, "AccountSource": self.pick(LEAD_SOURCES + (None,), n),
            "Description": [None if rnd() < 0.85 else "Key account; see account plan."
                            for _ in range(n)],
            "Customer_Tier__c": self.pick(("Gold", "Silver", "Bronze", None), n, (1, 2, 3, 6)),
            "Credit_Limit__c": [float((1 + int(rnd() * 99)) * 1000) if rnd() < 0.3 else None
                                for _ in range(n)],
        })

    def person_common(self, n: int) -> dict:
        rnd = self.rng.random
        rnd = self.rng.random
        return {
            "Phone": [p if rnd() < 0.8 else None for p in self.phones(n)],
            "MobilePhone": [p if rnd() < 0.35 else None for p in self.phones(n)],
            "Title": self.pick(TITLES + (None,), n),
            "LeadSource": self.pick(LEAD_SOURCES + (None,), n),
            "HasOptedOutOfEmail": self.flags(n, 0.05), "DoNotCall": self.flags(n, 0.03),
            "Do_Not_Sync_Marketing__c": self.flags(n, 0.02),
            "Lead_Score__c": [float(int(rnd() * 101)) if rnd() < 0.6 else None for _ in range(n)],
            "Description": [None if rnd() < 0.9 else "Met at a conference; interested in a demo."
                            for _ in range(n)],
            "Internal_Notes__c": [None if rnd() < 0.95 else "Internal: credit check pending"
                                  for _ in range(n)],
            "Salutation": self.pick(SALUTATIONS + (None, None, None), n),
        }

    def contacts(self, n: int) -> None:
        rnd = self.rng.random
        a = self.acct
        na = len(a["ids"])
        acct_idx = [int(rnd() * na) if na and rnd() < 0.97 else -1 for _ in range(n)]
        floors = [a["created"][i] if i >= 0 else self.start for i in acct_idx]
        created, lm, sm, kind, (acct_idx,) = self.plan(n, floors, (acct_idx,))
        _, ids = self.alloc("003", n)
        owners = [a["owner"][i] if i >= 0 and rnd() < 0.8 else _pick1(rnd, self.owners)
                  for i in acct_idx]
        cby, mby = self.audit(kind, owners)
        first, last, full = self.people(n)
        domains = [a["domain"][i] if i >= 0 else _pick1(rnd, FREE_MAIL) for i in acct_idx]
        email = self.emails(first, last, domains, 1)
        for i in range(n):  # ~1% duplicate another contact's address (some in another case)
            if i and rnd() < 0.01 and email[i]:
                other = email[int(rnd() * i)]
                if other:
                    email[i] = self.case_variant(other) if rnd() < 0.4 else other
        street, city, state, postal, country = self.addresses(n)
        for i, ai in enumerate(acct_idx):
            if ai >= 0 and rnd() < 0.85:
                street[i], city[i], state[i], postal[i], country[i] = (
                    a["street"][ai], a["city"][ai], a["state"][ai], a["postal"][ai],
                    a["country"][ai])
        common = self.person_common(n)
        by_acct: dict[int, list[int]] = defaultdict(list)
        for i, ai in enumerate(acct_idx):
            if ai >= 0:
                by_acct[ai].append(i)
        self.cont = {"ids": ids, "created": created, "acct": acct_idx, "owner": owners,
                     "first": first, "last": last, "email": email, "title": common["Title"],
                     "by_acct": by_acct, "street": street, "city": city, "state": state,
                     "postal": postal, "country": country, "phone": common["Phone"],
                     "source": common["LeadSource"], "dns": common["Do_Not_Sync_Marketing__c"],
                     "salutation": common["Salutation"]}
        self.insert("Contact", n, {
            "Id": ids, "OwnerId": owners, "CreatedDate": self.ts(created),
            "LastModifiedDate": self.ts(lm), "SystemModstamp": self.ts(sm), "CreatedById": cby,
            "LastModifiedById": mby, "FirstName": first, "LastName": last, "Name": full,
            "AccountId": [a["ids"][i] if i >= 0 else None for i in acct_idx],
            "Department": self.pick(DEPARTMENTS + (None,), n),
            "Birthdate": [(self.today - timedelta(days=22 * 365 + int(rnd() * 43 * 365)))
                          .isoformat() if rnd() < 0.15 else None for _ in range(n)],
            "MailingStreet": street, "MailingCity": city, "MailingState": state,
            "MailingPostalCode": postal, "MailingCountry": country, "Email": email,
            "Sales_Region__c": [REGIONS.get(c, "EMEA") for c in country],
            "Account_Rating__c": [a["rating"][i] if i >= 0 else None for i in acct_idx],
            **common,
        })

    def opportunities(self, n: int) -> None:
        rnd = self.rng.random
        a = self.acct
        na = len(a["ids"])
        acct_idx = [int(rnd() * na) for _ in range(n)] if na else [-1] * n
        floors = [a["created"][i] if i >= 0 else self.start for i in acct_idx]
        created, lm, sm, kind, (acct_idx,) = self.plan(n, floors, (acct_idx,))
        _, ids = self.alloc("006", n)
        owners = [a["owner"][i] if i >= 0 and rnd() < 0.8 else _pick1(rnd, self.owners)
                  for i in acct_idx]
        cby, mby = self.audit(kind, owners)
        camp = self.camp
        stage, prob, closed, won, fc, amount, exp, close, campaign, names = ([] for _ in range(10))
        for i in range(n):
            old = self.now - created[i] > 180 * DAY
            if rnd() < (0.75 if old else 0.25):
                st = "Closed Won" if rnd() < 0.45 else "Closed Lost"
            else:
                st = OPEN_STAGES[int(rnd() * len(OPEN_STAGES))]
            p, c, w, f = OPPORTUNITY_STAGES[st]
            amt = float((5 + int(rnd() * 1995)) * 250) if rnd() < 0.97 else None
            stage.append(st)
            prob.append(float(p))
            closed.append(int(c))
            won.append(int(w))
            fc.append(f)
            amount.append(amt)
            exp.append(None if amt is None else amt * float(p) / 100)
            if c:
                close.append(self.date1(lm[i]))
            else:
                close.append(self.date1(max(created[i] + (14 + int(rnd() * 136)) * DAY,
                                            self.now - int(rnd() * 20) * DAY)))
            k = bisect_right(camp["created"], created[i])
            campaign.append(camp["ids"][int(rnd() * k)] if k and rnd() < 0.15 else None)
            acct_name = a["name"][acct_idx[i]] if acct_idx[i] >= 0 else "Unassigned"
            names.append(f"{acct_name} - {PRODUCTS[int(rnd() * len(PRODUCTS))]}"[:120])
        by_acct: dict[int, list[int]] = defaultdict(list)
        for i, ai in enumerate(acct_idx):
            by_acct[ai].append(i)
        self.opp = {"ids": ids, "created": created, "acct": acct_idx, "by_acct": by_acct}
        self.insert("Opportunity", n, {
            "Id": ids, "OwnerId": owners, "CreatedDate": self.ts(created),
            "LastModifiedDate": self.ts(lm), "SystemModstamp": self.ts(sm), "CreatedById": cby,
            "LastModifiedById": mby, "Name": names,
            "AccountId": [a["ids"][i] if i >= 0 else None for i in acct_idx],
            "StageName": stage, "Amount": amount, "Probability": prob, "ExpectedRevenue": exp,
            "CloseDate": close, "Type": self.pick(("New Business", "Existing Business", None), n,
                                                  (6, 3, 1)),
            "LeadSource": self.pick(LEAD_SOURCES + (None,), n),
            "NextStep": [None if rnd() < 0.6 else _pick1(rnd, ("Send proposal", "Schedule demo",
                                                              "Legal review", "Follow up"))
                         for _ in range(n)],
            "CampaignId": campaign, "IsPrivate": 0, "IsClosed": closed, "IsWon": won,
            "ForecastCategory": fc,
        })

    def contact_roles(self, n: int) -> None:
        rnd = self.rng.random
        o, c = self.opp, self.cont
        no, nc = len(o["ids"]), len(c["ids"])
        if not no or not nc:
            return
        pairs: set[int] = set()
        opp_i, con_i, primary = [], [], []

        def contact_for(oi):
            group = c["by_acct"].get(o["acct"][oi])
            return group[int(rnd() * len(group))] if group else int(rnd() * nc)

        for oi in range(no):  # one primary role per opportunity first
            if len(opp_i) >= n:
                break
            ci = contact_for(oi)
            pairs.add(oi * nc + ci)
            opp_i.append(oi)
            con_i.append(ci)
            primary.append(1)
        attempts = 0
        while len(opp_i) < n and attempts < 4 * n:
            attempts += 1
            oi = int(rnd() * no)
            ci = contact_for(oi)
            if oi * nc + ci in pairs:
                continue
            pairs.add(oi * nc + ci)
            opp_i.append(oi)
            con_i.append(ci)
            primary.append(0)
        m = len(opp_i)
        floors = [max(o["created"][x], c["created"][y]) for x, y in zip(opp_i, con_i, strict=True)]
        created, lm, sm, kind, (opp_i, con_i, primary) = self.plan(m, floors,
                                                                    (opp_i, con_i, primary))
        _, ids = self.alloc("00K", m)
        cby, mby = self.audit(kind, None)
        self.insert("OpportunityContactRole", m, {
            "Id": ids, "CreatedDate": self.ts(created), "LastModifiedDate": self.ts(lm),
            "SystemModstamp": self.ts(sm), "CreatedById": cby, "LastModifiedById": mby,
            "OpportunityId": [o["ids"][x] for x in opp_i],
            "ContactId": [c["ids"][y] for y in con_i],
            "Role": [None if p and rnd() < 0.2 else _pick1(rnd, ROLES) for p in primary],
            "IsPrimary": primary,
        })

    def leads(self, n: int) -> None:
        rng, rnd = self.rng, self.rng.random
        c, a, o = self.cont, self.acct, self.opp
        nc = len(c["ids"])
        created, lm, sm, kind, _ = self.plan(n)
        _, ids = self.alloc("00Q", n)
        owners = self.pick(self.owners, n)
        first, last, full = self.people(n)
        companies, slugs = self.companies(n)
        street, city, state, postal, country = self.addresses(n)
        domains = [f"{s}.{TLDS.get(k, 'com')}" if rnd() < 0.85 else _pick1(rnd, FREE_MAIL)
                   for s, k in zip(slugs, country, strict=True)]
        email = self.emails(first, last, domains, nc + 1)
        website = [None if d in FREE_MAIL or rnd() < 0.4 else "https://www." + d for d in domains]
        common = self.person_common(n)
        status = self.pick(OPEN_LEAD_STATUSES, n, (45, 35, 20))
        converted = [0] * n
        conv_date, conv_acct, conv_cont, conv_opp = [None] * n, [None] * n, [None] * n, [None] * n
        used: set[int] = set()
        for i in range(n):
            if kind[i] == 1 or rnd() >= 0.05 or not nc:
                continue
            k = bisect_left(c["created"], created[i])
            for _ in range(5):  # the contact this lead became (created when it was converted)
                if k >= nc:
                    break
                ci = k + int(rnd() * (nc - k))
                if ci in used or c["acct"][ci] < 0:
                    continue
                used.add(ci)
                tc = c["created"][ci]
                ai = c["acct"][ci]
                converted[i] = 1
                lm[i] = max(lm[i], tc)
                sm[i] = max(sm[i], lm[i])
                conv_date[i] = self.date1(tc)
                conv_acct[i] = a["ids"][ai]
                conv_cont[i] = c["ids"][ci]
                later = [x for x in o["by_acct"].get(ai, ()) if o["created"][x] >= tc]
                conv_opp[i] = o["ids"][later[0]] if later and rnd() < 0.6 else None
                status[i] = "Closed - Converted"
                first[i], last[i] = c["first"][ci], c["last"][ci]
                full[i] = f"{first[i]} {last[i]}"
                email[i] = c["email"][ci]
                companies[i] = a["name"][ai]
                website[i] = "https://www." + a["domain"][ai]
                street[i], city[i], state[i], postal[i], country[i] = (
                    c["street"][ci], c["city"][ci], c["state"][ci], c["postal"][ci],
                    c["country"][ci])
                common["Title"][i] = c["title"][ci]
                common["Phone"][i] = c["phone"][ci]
                common["LeadSource"][i] = c["source"][ci]
                common["Do_Not_Sync_Marketing__c"][i] = c["dns"][ci]
                common["Salutation"][i] = c["salutation"][ci]
                break
        for i in range(n):  # ~3% share an address with a contact or another lead
            if converted[i] or rnd() >= 0.03:
                continue
            other = (c["email"][int(rnd() * nc)] if nc and rnd() < 0.6
                     else email[int(rnd() * n)])
            if other:
                email[i] = self.case_variant(other) if rnd() < 0.4 else other
        cby, mby = self.audit(kind, owners)
        self.lead = {"ids": ids, "created": created, "owner": owners, "first": first,
                     "last": last, "email": email, "title": common["Title"],
                     "company": companies,
                     "open": [i for i in range(n) if not converted[i]]}
        self.insert("Lead", n, {
            "Id": ids, "OwnerId": owners, "CreatedDate": self.ts(created),
            "LastModifiedDate": self.ts(lm), "SystemModstamp": self.ts(sm), "CreatedById": cby,
            "LastModifiedById": mby, "FirstName": first, "LastName": last, "Name": full,
            "Company": companies, "Street": street, "City": city, "State": state,
            "PostalCode": postal, "Country": country,
            "Website": website,
            "Industry": self.pick(INDUSTRIES + (None,), n), "Status": status,
            "Rating": self.pick(("Hot", "Warm", "Cold", None), n, (1, 2, 2, 5)),
            "AnnualRevenue": [float((1 + int(rnd() * 1999)) * 50_000) if rnd() < 0.4 else None
                              for _ in range(n)],
            "NumberOfEmployees": [int(10 ** rng.uniform(0.5, 4.5)) if rnd() < 0.5 else None
                                  for _ in range(n)],
            "IsUnreadByOwner": [0 if conv else int(rnd() < 0.1) for conv in converted],
            "Email": email, "Sales_Region__c": [REGIONS.get(k, "EMEA") for k in country],
            "IsConverted": converted, "ConvertedDate": conv_date,
            "ConvertedAccountId": conv_acct, "ConvertedContactId": conv_cont,
            "ConvertedOpportunityId": conv_opp, **common,
        })

    def person(self, kind_: int, idx: int) -> tuple:
        """(id, created, owner, first, last, email, title, company) of a contact (0) / lead (1)."""
        if kind_ == 0:
            c = self.cont
            ai = c["acct"][idx]
            return (c["ids"][idx], c["created"][idx], c["owner"][idx], c["first"][idx],
                    c["last"][idx], c["email"][idx], c["title"][idx],
                    self.acct["name"][ai] if ai >= 0 else None)
        ld = self.lead
        return (ld["ids"][idx], ld["created"][idx], ld["owner"][idx], ld["first"][idx],
                ld["last"][idx], ld["email"][idx], ld["title"][idx], ld["company"][idx])

    def random_person(self, p_contact: float) -> tuple[int, int]:
        nc, open_leads = len(self.cont["ids"]), self.lead["open"]
        rnd = self.rng.random
        if nc and (not open_leads or rnd() < p_contact):
            return 0, int(rnd() * nc)
        if open_leads:
            return 1, open_leads[int(rnd() * len(open_leads))]
        return -1, -1

    def campaign_members(self, n: int) -> None:
        rnd = self.rng.random
        camp = self.camp
        ncamp = len(camp["ids"])
        if not ncamp:
            return
        seen: set[tuple[int, int, int]] = set()
        cam_i, pk, pi = [], [], []
        attempts = 0
        while len(cam_i) < n and attempts < 4 * n:
            attempts += 1
            k, idx = self.random_person(0.5)
            if k < 0:
                break
            ci = int(rnd() * ncamp)
            key = (ci, k, idx)
            if key in seen:
                continue
            seen.add(key)
            cam_i.append(ci)
            pk.append(k)
            pi.append(idx)
        m = len(cam_i)
        floors = [max(camp["created"][ci], self.person(k, idx)[1])
                  for ci, k, idx in zip(cam_i, pk, pi, strict=True)]
        created, lm, sm, kind, (cam_i, pk, pi) = self.plan(m, floors, (cam_i, pk, pi))
        _, ids = self.alloc("00v", m)
        cby, mby = self.audit(kind, None)
        people = [self.person(k, idx) for k, idx in zip(pk, pi, strict=True)]
        responded = self.flags(m, 0.3)
        self.insert("CampaignMember", m, {
            "Id": ids, "CreatedDate": self.ts(created), "LastModifiedDate": self.ts(lm),
            "SystemModstamp": self.ts(sm), "CreatedById": cby, "LastModifiedById": mby,
            "CampaignId": [camp["ids"][ci] for ci in cam_i],
            "LeadId": [p[0] if k == 1 else None for p, k in zip(people, pk, strict=True)],
            "ContactId": [p[0] if k == 0 else None for p, k in zip(people, pk, strict=True)],
            "Status": [CM_STATUSES[r][0] for r in responded], "HasResponded": responded,
            "FirstRespondedDate": [self.date1(t) if r else None
                                   for t, r in zip(lm, responded, strict=True)],
            "Type": ["Contact" if k == 0 else "Lead" for k in pk],
            "LeadOrContactId": [p[0] for p in people],
            "LeadOrContactOwnerId": [p[2] for p in people],
            "FirstName": [p[3] for p in people], "LastName": [p[4] for p in people],
            "Email": [p[5] for p in people], "Title": [p[6] for p in people],
            "CompanyOrAccount": [p[7] for p in people],
        })

    def activities(self, table: str, n: int) -> None:
        rnd = self.rng.random
        c, a, o = self.cont, self.acct, self.opp
        who_k, who_i, what_k, what_i = [], [], [], []  # what kind: 0 account, 1 opportunity
        for _ in range(n):
            x = rnd()
            k, idx = self.random_person(0.67) if x < 0.9 else (-1, -1)
            wk, wi = -1, -1
            if k == 0:
                ai = c["acct"][idx]
                opps = o["by_acct"].get(ai) if ai >= 0 else None
                y = rnd()
                if opps and y < 0.4:
                    wk, wi = 1, opps[int(rnd() * len(opps))]
                elif ai >= 0 and y < 0.7:
                    wk, wi = 0, ai
            elif k < 0:
                if o["ids"] and rnd() < 0.5:
                    wk, wi = 1, int(rnd() * (len(o["ids"])))
                elif a["ids"]:
                    wk, wi = 0, int(rnd() * (len(a["ids"])))
            who_k.append(k)
            who_i.append(idx)
            what_k.append(wk)
            what_i.append(wi)
        floors = []
        for k, idx, wk, wi in zip(who_k, who_i, what_k, what_i, strict=True):
            f = self.start
            if k >= 0:
                f = max(f, self.person(k, idx)[1])
            if wk == 0:
                f = max(f, a["created"][wi])
            elif wk == 1:
                f = max(f, o["created"][wi])
            floors.append(f)
        created, lm, sm, kind, (who_k, who_i, what_k, what_i) = self.plan(
            n, floors, (who_k, who_i, what_k, what_i))
        prefix = "00T" if table == "Task" else "00U"
        _, ids = self.alloc(prefix, n)
        who, what, acct, owners = [], [], [], []
        for k, idx, wk, wi in zip(who_k, who_i, what_k, what_i, strict=True):
            p = self.person(k, idx) if k >= 0 else None
            who.append(p[0] if p else None)
            what.append(a["ids"][wi] if wk == 0 else o["ids"][wi] if wk == 1 else None)
            account = None  # records._activity_account
            if k == 0 and c["acct"][idx] >= 0:
                account = a["ids"][c["acct"][idx]]
            elif wk == 0:
                account = a["ids"][wi]
            elif wk == 1 and o["acct"][wi] >= 0:
                account = a["ids"][o["acct"][wi]]
            acct.append(account)
            owners.append(p[2] if p and rnd() < 0.7 else _pick1(rnd, self.owners))
        cby, mby = self.audit(kind, owners)
        cols = {"Id": ids, "OwnerId": owners, "CreatedDate": self.ts(created),
                "LastModifiedDate": self.ts(lm), "SystemModstamp": self.ts(sm),
                "CreatedById": cby, "LastModifiedById": mby, "WhoId": who, "WhatId": what,
                "AccountId": acct,
                "Description": [None if rnd() < 0.7 else "Notes from the conversation."
                                for _ in range(n)]}
        archived = []
        if table == "Task":
            types = self.pick(("Call", "Email", "Meeting", "Other"), n, (4, 4, 1, 1))
            status = self.pick(tuple(TASK_STATUSES), n, (20, 12, 55, 5, 8))
            closed = [int(TASK_STATUSES[s]) for s in status]
            adate = []
            for i in range(n):
                t = created[i] - 3 * DAY + int(rnd() * 24 * DAY)
                if closed[i]:
                    t = min(t, lm[i])
                adate.append(self.date1(max(t, created[i] - 3 * DAY)))
                archived.append(int(closed[i] and adate[i] < self.archive_before))
            cols.update({
                "Subject": [_pick1(rnd, TASK_SUBJECTS[t]) for t in types], "Type": types,
                "ActivityDate": adate, "Status": status,
                "Priority": self.pick(("High", "Normal", "Low"), n, (2, 6, 2)),
                "TaskSubtype": ["Call" if t == "Call" else "Email" if t == "Email" else "Task"
                                for t in types],
                "IsClosed": closed,
                "CompletedDateTime": [self.ts1(m) if cl else None
                                      for m, cl in zip(lm, closed, strict=True)],
                "CallDurationInSeconds": [30 + int(rnd() * 3570) if t == "Call" and cl else None
                                          for t, cl in zip(types, closed, strict=True)],
            })
        else:
            starts, ends, durations, adate = [], [], [], []
            for i in range(n):
                s = created[i] + int(rnd() * 21) * DAY
                s = s - s % DAY + (28 + int(rnd() * 16)) * 1800  # 14:00-21:30 UTC
                if s < created[i]:
                    s += DAY
                d = _pick1(rnd, (30, 30, 45, 60, 60, 90, 120))
                starts.append(self.ts1(s))
                ends.append(self.ts1(s + d * 60))
                durations.append(d)
                adate.append(self.date1(s))
                archived.append(int(adate[i] < self.archive_before and s + d * 60 <= self.now))
            cols.update({
                "Subject": self.pick(EVENT_SUBJECTS, n),
                "Type": self.pick(("Meeting", "Call", "Other"), n, (7, 2, 1)),
                "Location": self.pick(LOCATIONS, n), "ActivityDateTime": starts,
                "ActivityDate": adate, "StartDateTime": starts, "EndDateTime": ends,
                "DurationInMinutes": durations, "IsAllDayEvent": 0,
            })
        cols["IsArchived"] = archived
        self.insert(table, n, cols)

    def webinars(self, n: int) -> None:
        rnd = self.rng.random
        c = self.cont
        nc = len(c["ids"])
        if not nc:
            return
        con_i = [int(rnd() * nc) for _ in range(n)]
        created, lm, sm, kind, (con_i,) = self.plan(n, [c["created"][i] for i in con_i],
                                                    (con_i,))
        first, ids = self.alloc("a01", n)
        owners = [c["owner"][i] if rnd() < 0.8 else _pick1(rnd, self.owners) for i in con_i]
        cby, mby = self.audit(kind, owners)
        attended = self.flags(n, 0.7)
        self.insert("Webinar_Attendance__c", n, {
            "Id": ids, "OwnerId": owners, "CreatedDate": self.ts(created),
            "LastModifiedDate": self.ts(lm), "SystemModstamp": self.ts(sm), "CreatedById": cby,
            "LastModifiedById": mby, "Name": [f"WA-{first + i:06d}" for i in range(n)],
            "Contact__c": [c["ids"][i] for i in con_i],
            "Webinar_Name__c": self.pick(WEBINARS, n), "Attended__c": attended,
            "Attended_Date__c": [self.date1(min(t + int(rnd() * 14) * DAY, self.now))
                                 if at else None for t, at in zip(created, attended, strict=True)],
            "Duration_Minutes__c": [float(5 + int(rnd() * 86)) if at else None
                                    for at in attended],
            "Registration_Source__c": self.pick(("Email", "Website", "Partner", "Social"), n),
        })

    def subscriptions(self, n: int) -> None:
        rnd = self.rng.random
        a = self.acct
        na = len(a["ids"])
        if not na:
            return
        acct_i = [int(rnd() * na) for _ in range(n)]
        created, lm, sm, kind, (acct_i,) = self.plan(n, [a["created"][i] for i in acct_i],
                                                     (acct_i,))
        _, ids = self.alloc("a02", n)
        cby, mby = self.audit(kind, None)
        plans = self.pick(PLANS, n, (2, 4, 3, 1))
        seats = [float(1 + int(rnd() * 499)) for _ in range(n)]
        self.insert("Subscription__c", n, {
            "Id": ids, "CreatedDate": self.ts(created), "LastModifiedDate": self.ts(lm),
            "SystemModstamp": self.ts(sm), "CreatedById": cby, "LastModifiedById": mby,
            "Name": [f"{a['name'][i]} - {p[0]}"[:80] for i, p in zip(acct_i, plans, strict=True)],
            "Account__c": [a["ids"][i] for i in acct_i], "Plan__c": [p[0] for p in plans],
            "Seats__c": seats,
            "Monthly_Value__c": [p[1] * s for p, s in zip(plans, seats, strict=True)],
            "Renewal_Date__c": [self.date1(t + YEAR) for t in created],
            "Active__c": self.flags(n, 0.85),
        })

    # --- what other org profiles have (schema.standard_schema / mature_schema)

    def has(self, table: str, column: str) -> bool:
        obj = self.org.schema.objects.get(table)
        return obj is not None and column in obj.fields

    def fill(self, table: str, values: dict[str, Callable[[], object]], share: float) -> None:
        """Set ``values`` (column -> generator) on about ``share`` of the rows of ``table``."""
        rnd = self.rng.random
        cols = [c for c in values if self.has(table, c)]
        if not cols:
            return
        rowids = [r[0] for r in self.db.execute(f"SELECT rowid FROM {quote(table)} ORDER BY "
                                                "rowid")]
        chosen = [r for r in rowids if rnd() < share]
        self.db.executemany(
            f"UPDATE {quote(table)} SET {', '.join(quote(c) + ' = ?' for c in cols)} "
            "WHERE rowid = ?", [[values[c]() for c in cols] + [r] for r in chosen])

    def customisations(self, counts: dict[str, int]) -> None:
        rng, rnd = self.rng, self.rng.random
        for table, prefix in (("Account", "Billing"), ("Contact", "Mailing"), ("Lead", "")):
            self.fill(table, {prefix + "Latitude": lambda: round(rng.uniform(-60, 70), 6),
                              prefix + "Longitude": lambda: round(rng.uniform(-170, 170), 6),
                              prefix + "GeocodeAccuracy": lambda: rng.choice(("Address", "Zip"))},
                      0.6)
        if "RecordType" in self.org.schema.objects:
            self.record_types()
        self.fill("Account", {"Contract_Value__c": lambda: float(int(rnd() * 500) * 1000),
                              "Headquarters__Latitude__s": lambda: round(rng.uniform(-60, 70), 6),
                              "Headquarters__Longitude__s":
                                  lambda: round(rng.uniform(-170, 170), 6)}, 0.3)
        notes = ("Call notes: " + "asked about pricing tiers and the rollout plan. " * 800)
        for table in ("Lead", "Contact"):
            self.fill(table, {"Product_Interest__c": lambda: ";".join(sorted(
                rng.sample(INTERESTS, rng.randint(1, 3))))}, 0.4)
            self.fill(table, {"Conversation_Notes__c": lambda: notes[:rng.choice(
                (200, 2_000, 40_000))]}, 0.05)  # some longer than 32 KB: a long text area
        if self.has("Account", "IsPersonAccount"):
            self.person_accounts(max(1, int(len(self.acct["ids"]) * PERSON_ACCOUNT_SHARE)))
        if "Trial_Request__c" in counts:
            self.trial_requests(counts["Trial_Request__c"])
        if "Commission__c" in counts:
            self.commissions(counts["Commission__c"])

    def record_types(self) -> None:
        stamp = self.ts1(self.start - 100 * DAY)
        for sobject, names in RECORD_TYPES.items():
            _, ids = self.alloc("012", len(names))
            self.insert("RecordType", len(names), {
                "Id": ids, "Name": list(names), "SobjectType": sobject, "IsActive": 1,
                "DeveloperName": [n.replace(" ", "_") for n in names],
                "CreatedDate": stamp, "LastModifiedDate": stamp, "SystemModstamp": stamp,
                "CreatedById": self.admin_id, "LastModifiedById": self.admin_id})
            self.fill(sobject, {"RecordTypeId": lambda ids=ids: self.rng.choice(ids)}, 0.9)

    def person_accounts(self, n: int) -> None:
        """``n`` person accounts: an Account and its Contact, both ``IsPersonAccount``."""
        created, lm, sm, kind, _ = self.plan(n)
        _, acct_ids = self.alloc("001", n)
        _, cont_ids = self.alloc("003", n)
        owners = self.pick(self.owners, n)
        cby, mby = self.audit(kind, owners)
        first, last, full = self.people(n)
        email = self.emails(first, last, self.pick(FREE_MAIL, n), 900_000)
        street, city, state, postal, country = self.addresses(n)
        stamps = {"OwnerId": owners, "CreatedDate": self.ts(created),
                  "LastModifiedDate": self.ts(lm), "SystemModstamp": self.ts(sm),
                  "CreatedById": cby, "LastModifiedById": mby}
        self.insert("Account", n, {
            "Id": acct_ids, **stamps, "Name": full, "IsPersonAccount": 1,
            "PersonContactId": cont_ids, "PersonEmail": email, "BillingStreet": street,
            "BillingCity": city, "BillingState": state, "BillingPostalCode": postal,
            "BillingCountry": country, "Type": "Customer - Direct"})
        self.insert("Contact", n, {
            "Id": cont_ids, **stamps, "FirstName": first, "LastName": last, "Name": full,
            "AccountId": acct_ids, "IsPersonAccount": 1, "Email": email,
            "MailingStreet": street, "MailingCity": city, "MailingState": state,
            "MailingPostalCode": postal, "MailingCountry": country})

    def trial_requests(self, n: int) -> None:
        leads = [r[0] for r in self.db.execute('SELECT "Id" FROM "Lead" ORDER BY rowid')]
        if not leads or not n:
            return
        created, lm, sm, kind, _ = self.plan(n)
        first, ids = self.alloc("a03", n)
        owners = self.pick(self.owners, n)
        cby, mby = self.audit(kind, owners)
        self.insert("Trial_Request__c", n, {
            "Id": ids, "OwnerId": owners, "CreatedDate": self.ts(created),
            "LastModifiedDate": self.ts(lm), "SystemModstamp": self.ts(sm), "CreatedById": cby,
            "LastModifiedById": mby, "Name": [f"TR-{first + i:06d}" for i in range(n)],
            "Lead__c": self.pick(leads, n), "Product__c": self.pick(INTERESTS, n),
            "Seats__c": [float(1 + int(self.rng.random() * 200)) for _ in range(n)],
            "Requested_On__c": self.dates(created)})

    def commissions(self, n: int) -> None:
        created, lm, sm, kind, _ = self.plan(n)
        _, ids = self.alloc("a04", n)
        owners = self.pick(self.owners, n)
        cby, mby = self.audit(kind, owners)
        opps = [r[0] for r in self.db.execute('SELECT "Id" FROM "Opportunity" ORDER BY rowid')]
        self.insert("Commission__c", n, {
            "Id": ids, "OwnerId": owners, "CreatedDate": self.ts(created),
            "LastModifiedDate": self.ts(lm), "SystemModstamp": self.ts(sm), "CreatedById": cby,
            "LastModifiedById": mby, "Name": [f"Commission {i + 1}" for i in range(n)],
            "Opportunity__c": self.pick(opps, n),
            "Amount__c": [float(int(self.rng.random() * 90) * 100) for _ in range(n)]})

    # --- through the records write path

    def convert_some(self, k: int) -> None:
        """Convert ``k`` open leads with records.convert_lead, a few days ago."""
        rows = self.db.execute('SELECT "Id" FROM "Lead" WHERE "IsConverted" = 0 AND '
                               '"IsDeleted" = 0 AND "Status" != ? ORDER BY "Id"',
                               ("Closed - Not Converted",)).fetchall()
        lead_obj = self.org.schema.objects["Lead"]
        for (lead_id,) in self.rng.sample(rows, min(k, len(rows))):
            # after every write to the lead and the members/activities it moves to the contact
            latest = _tree_latest(self.org, lead_obj, lead_id)
            when = max(latest + 3600, self.now - self.rng.randrange(2, 20) * DAY)
            result = records.convert_lead(
                self.org, lead_id, create_opportunity=self.rng.random() < 0.5,
                stamp=datetime.fromtimestamp(min(when, self.now), UTC))
            owner = self.db.execute('SELECT "OwnerId" FROM "Lead" WHERE "Id" = ?',
                                    (lead_id,)).fetchone()[0]
            _attribute_conversion(self.org, result, owner, True)

    @staticmethod
    def ts_of(text: str) -> int:
        return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())

    def recycle(self, k: int) -> None:
        """Soft-delete ``k`` records (recently, inside the recycle-bin retention)."""
        weights = {name: w for name, w in (
            ("Lead", 30), ("Contact", 15), ("Task", 25), ("Opportunity", 10), ("Event", 5),
            ("Account", 3), ("Webinar_Attendance__c", 5), ("CampaignMember", 7))
            if name in self.org.schema.objects}
        picker = _Picker(self.org, self.rng)
        for _ in range(k):
            name = self.rng.choices(list(weights), weights=list(weights.values()))[0]
            record_id = picker.pick(name)
            if record_id is None:
                continue
            obj = self.org.schema.objects[name]
            latest = _tree_latest(self.org, obj, record_id)
            if latest > self.now - 3600:  # touched in the last hour: deleted "now" otherwise
                continue
            when = max(latest, self.now - self.rng.randrange(3600, 10 * DAY))
            records.delete(self.org, record_id, stamp=datetime.fromtimestamp(min(when, self.now),
                                                                              UTC))


def _attribute(org: Org, record_id: str, user_id: str, *, created: bool = False) -> None:
    """Credit a system write to a sales rep: records.* credits the sync user, which a sync's
    echo suppression would skip. The stamps stay as the write path set them."""
    obj = org.schema.object_for_id(record_id)
    sets = '"LastModifiedById" = ?' + (', "CreatedById" = ?' if created else "")
    org.db.execute(f'UPDATE {quote(obj.name)} SET {sets} WHERE "Id" = ?',
                   (user_id, user_id, record_id) if created else (user_id, record_id))


def _attribute_conversion(org: Org, result: dict, user_id: str, new_account: bool) -> None:
    if not user_id or not user_id.startswith("005"):
        return
    _attribute(org, result["leadId"], user_id)
    if new_account:
        _attribute(org, result["accountId"], user_id, created=True)
    contact_new = org.db.execute('SELECT "CreatedDate" = "SystemModstamp" FROM "Contact" WHERE '
                                 '"Id" = ?', (result["contactId"],)).fetchone()
    _attribute(org, result["contactId"], user_id, created=bool(contact_new and contact_new[0]))
    if result.get("opportunityId"):
        _attribute(org, result["opportunityId"], user_id, created=True)


def _reps(org: Org) -> list[str]:
    sync = org.sync_user_id()
    return [r[0] for r in org.db.execute('SELECT "Id" FROM "User" WHERE "IsActive" = 1 AND '
                                         '"Id" != ? ORDER BY "Id"', (sync,))] or [sync]


def _tree_latest(org: Org, obj, record_id: str) -> int:
    """The latest CreatedDate/SystemModstamp (epoch) in the delete cascade of a record."""
    row = org.db.execute(f'SELECT max("SystemModstamp", "CreatedDate") FROM {quote(obj.name)} '
                         f'WHERE "Id" = ?', (record_id,)).fetchone()
    latest = _Bulk.ts_of(row[0]) if row and row[0] else 0
    for child_name, fk in records.related(org, records.CASCADES, obj.name):
        child = org.schema.objects[child_name]
        for (child_id,) in org.db.execute(f'SELECT "Id" FROM {quote(child_name)} WHERE '
                                          f'{quote(fk)} = ? AND "IsDeleted" = 0', (record_id,)):
            latest = max(latest, _tree_latest(org, child, child_id))
    return latest


# --- simulated activity -----------------------------------------------------------------------

DEFAULT_ACTIVITY_OBJECTS = ("Lead", "Contact", "Account", "Opportunity", "Campaign",
                            "CampaignMember", "Task")
CREATE_WEIGHTS = {"Lead": 30, "Contact": 22, "Account": 8, "Opportunity": 8, "Campaign": 1,
                  "CampaignMember": 12, "Task": 16, "Event": 5, "OpportunityContactRole": 4,
                  "Webinar_Attendance__c": 4, "Subscription__c": 2}
UPDATE_WEIGHTS = {"Lead": 30, "Contact": 25, "Account": 10, "Opportunity": 12, "Campaign": 1,
                  "CampaignMember": 8, "Task": 14, "Event": 4, "OpportunityContactRole": 2,
                  "Webinar_Attendance__c": 2, "Subscription__c": 2}
DELETE_WEIGHTS = {"Lead": 30, "Contact": 12, "Account": 2, "Opportunity": 8, "Campaign": 1,
                  "CampaignMember": 20, "Task": 22, "Event": 5, "OpportunityContactRole": 3,
                  "Webinar_Attendance__c": 4, "Subscription__c": 2}
MERGE_WEIGHTS = {"Lead": 45, "Contact": 45, "Account": 10}


class _Picker:
    """Random live rows, picked by rowid so it stays fast on a million-row org."""

    def __init__(self, org: Org, rng: random.Random):
        self.org, self.rng = org, rng

    def pick(self, table: str, where: str = "", args: tuple = ()) -> str | None:
        db = self.org.db
        cond = '"IsDeleted" = 0' + (f" AND {where}" if where else "")
        top = db.execute(f"SELECT max(rowid) FROM {quote(table)}").fetchone()[0]
        if not top:
            return None
        for _ in range(8):
            row = db.execute(f'SELECT "Id" FROM {quote(table)} WHERE rowid >= ? AND {cond} '
                             f'ORDER BY rowid LIMIT 1', (self.rng.randint(1, top), *args)
                             ).fetchone()
            if row:
                return row[0]
        row = db.execute(f'SELECT "Id" FROM {quote(table)} WHERE {cond} ORDER BY rowid LIMIT 1',
                         args).fetchone()
        return row[0] if row else None

    def row(self, table: str, record_id: str) -> dict:
        return records.fetch_row(self.org, self.org.schema.objects[table], record_id) or {}


class _Activity:
    def __init__(self, org: Org, rng: random.Random):
        self.org, self.rng = org, rng
        self.picker = _Picker(org, rng)
        sync = org.sync_user_id()
        self.owners = [r[0] for r in org.db.execute(
            'SELECT "Id" FROM "User" WHERE "IsActive" = 1 AND "Id" != ? ORDER BY "Id"', (sync,))]
        self.owners = self.owners or [sync]
        self.today = org.now().date()

    def owner(self) -> str:
        return self.rng.choice(self.owners)

    def email(self, first: str, last: str, domain: str | None = None) -> str:
        domain = domain or self.rng.choice(FREE_MAIL)
        return f"{_slug(first)}.{_slug(last)}{self.rng.randrange(10**5, 10**7)}@{domain}"

    def address(self, prefix: str) -> dict:
        rng = self.rng
        country = rng.choices(list(COUNTRY_WEIGHTS), weights=list(COUNTRY_WEIGHTS.values()))[0]
        state = (rng.choice(US_ONLY_STATES) if country == "United States" else
                 rng.choice(CA_PROVINCES) if country == "Canada" else None)
        names = {"Billing": ("BillingCity", "BillingState", "BillingCountry"),
                 "Mailing": ("MailingCity", "MailingState", "MailingCountry"),
                 "": ("City", "State", "Country")}[prefix]
        out = {names[0]: rng.choice(CITIES[country]), names[2]: country}
        if state:
            out[names[1]] = state
        return out

    def day(self, offset_days: int) -> str:
        return (self.today + timedelta(days=offset_days)).isoformat()

    # --- creates

    def new_values(self, name: str) -> dict | None:
        rng, pick = self.rng, self.picker.pick
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        if name == "Lead":
            word, noun = rng.choice(COMPANY_WORDS), rng.choice(COMPANY_NOUNS)
            return {"FirstName": first, "LastName": last, "Company": f"{word} {noun}",
                    "Email": self.email(first, last, f"{word}{noun}.com".lower()),
                    "Title": rng.choice(TITLES), "LeadSource": rng.choice(LEAD_SOURCES),
                    "Status": rng.choice(OPEN_LEAD_STATUSES[:2]),
                    "Industry": rng.choice(INDUSTRIES), "OwnerId": self.owner(),
                    "Lead_Score__c": rng.randrange(0, 101), **self.address("")}
        if name == "Contact":
            account = pick("Account")
            return {"FirstName": first, "LastName": last, "AccountId": account,
                    "Email": self.email(first, last), "Title": rng.choice(TITLES),
                    "LeadSource": rng.choice(LEAD_SOURCES), "OwnerId": self.owner(),
                    "Phone": f"+1 (415) 555-{rng.randrange(10000):04d}", **self.address("Mailing")}
        if name == "Account":
            word, noun = rng.choice(COMPANY_WORDS), rng.choice(COMPANY_NOUNS)
            return {"Name": f"{word} {noun} {rng.choice(COMPANY_SUFFIXES)}".strip(),
                    "Industry": rng.choice(INDUSTRIES), "Type": "Prospect",
                    "Rating": rng.choice(("Hot", "Warm", "Cold")), "OwnerId": self.owner(),
                    "Website": f"https://www.{word}{noun}.com".lower(), **self.address("Billing")}
        if name == "Opportunity":
            account = pick("Account")
            if account is None:
                return None
            acct_name = self.picker.row("Account", account).get("Name") or "Deal"
            return {"Name": f"{acct_name} - {rng.choice(PRODUCTS)}"[:120], "AccountId": account,
                    "StageName": rng.choice(OPEN_STAGES),
                    "Amount": float(rng.randrange(5, 2000) * 250),
                    "CloseDate": self.day(rng.randrange(14, 120)), "OwnerId": self.owner()}
        if name == "Campaign":
            return {"Name": f"{self.today.year} {rng.choice(CAMPAIGN_THEMES)}",
                    "Type": rng.choice(("Email", "Webinar", "Conference")), "Status": "Planned",
                    "IsActive": True, "StartDate": self.day(7), "EndDate": self.day(60),
                    "OwnerId": self.owner(), "BudgetedCost": float(rng.randrange(1, 50) * 1000)}
        if name == "CampaignMember":
            campaign = pick("Campaign")
            if campaign is None:
                return None
            for _ in range(10):
                if rng.random() < 0.5:
                    col, person = "ContactId", pick("Contact")
                else:
                    col, person = "LeadId", pick("Lead", '"IsConverted" = 0')
                if person and not self.org.db.execute(
                        f'SELECT 1 FROM "CampaignMember" WHERE "CampaignId" = ? AND {quote(col)} '
                        f'= ?', (campaign, person)).fetchone():
                    return {"CampaignId": campaign, col: person,
                            "Status": "Responded" if rng.random() < 0.3 else "Sent"}
            return None
        if name in {"Task", "Event"}:
            if rng.random() < 0.65:
                who = pick("Contact")
            else:
                who = pick("Lead", '"IsConverted" = 0')
            values = {"WhoId": who, "OwnerId": self.owner(), "Description": None}
            if name == "Task":
                kind = rng.choice(("Call", "Email", "Meeting", "Other"))
                values.update({"Subject": rng.choice(TASK_SUBJECTS[kind]), "Type": kind,
                               "Status": rng.choice(("Not Started", "In Progress", "Completed")),
                               "Priority": rng.choice(("High", "Normal", "Low")),
                               "ActivityDate": self.day(rng.randrange(-2, 14))})
            else:
                start = datetime.combine(self.today + timedelta(days=rng.randrange(1, 30)),
                                         datetime.min.time(), UTC) + timedelta(hours=15)
                values.update({"Subject": rng.choice(EVENT_SUBJECTS), "Type": "Meeting",
                               "StartDateTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                               "DurationInMinutes": rng.choice((30, 60)),
                               "Location": rng.choice(LOCATIONS)})
            return values
        if name == "OpportunityContactRole":
            opp, contact = pick("Opportunity"), pick("Contact")
            if not opp or not contact:
                return None
            return {"OpportunityId": opp, "ContactId": contact, "Role": rng.choice(ROLES),
                    "IsPrimary": False}
        if name == "Webinar_Attendance__c":
            contact = pick("Contact")
            if not contact:
                return None
            return {"Contact__c": contact, "Webinar_Name__c": rng.choice(WEBINARS),
                    "Attended__c": False, "Registration_Source__c": "Website",
                    "OwnerId": self.owner()}
        if name == "Subscription__c":
            account = pick("Account")
            if not account:
                return None
            plan = rng.choice(PLANS)
            return {"Name": f"Subscription - {plan[0]}", "Account__c": account,
                    "Plan__c": plan[0], "Seats__c": float(rng.randrange(1, 50)),
                    "Active__c": True, "Renewal_Date__c": self.day(365)}
        raise ValueError(f"simulate_activity cannot create {name}")

    # --- updates

    def changes(self, name: str, row: dict) -> dict:
        rng = self.rng
        r = rng.randrange
        options: dict[str, Callable[[], object]] = {}
        fields_ = self.org.schema.objects[name].fields
        if name in {"Lead", "Contact"}:
            options.update({
                "Title": lambda: rng.choice(TITLES),
                "Phone": lambda: f"+1 ({r(200, 999)}) 555-{r(10000):04d}",
                "Lead_Score__c": lambda: r(0, 101),
                "HasOptedOutOfEmail": lambda: not row.get("HasOptedOutOfEmail"),
                "OwnerId": self.owner,
                "Email": lambda: self.email(row.get("FirstName") or "x", row.get("LastName") or "y",
                                            (row.get("Email") or "@example.com").split("@")[-1]),
                "Description": lambda: rng.choice(("Asked for pricing.", "Left voicemail.",
                                                   "Interested in Q3 rollout.")),
            })
            if name == "Lead":
                options.update({"Status": lambda: rng.choice(OPEN_LEAD_STATUSES),
                                "Rating": lambda: rng.choice(("Hot", "Warm", "Cold")),
                                "Industry": lambda: rng.choice(INDUSTRIES)})
            else:
                options.update({"Department": lambda: rng.choice(DEPARTMENTS),
                                "MobilePhone": lambda: f"+1 ({r(200, 999)}) 555-{r(10000):04d}"})
            if rng.random() < 0.05 and "Do_Not_Sync_Marketing__c" in fields_:
                return {"Do_Not_Sync_Marketing__c": not row.get("Do_Not_Sync_Marketing__c")}
        elif name == "Account":
            options.update({
                "Rating": lambda: rng.choice(("Hot", "Warm", "Cold")),
                "Industry": lambda: rng.choice(INDUSTRIES),
                "Phone": lambda: f"+1 ({r(200, 999)}) 555-{r(10000):04d}",
                "AnnualRevenue": lambda: float(r(1, 5000) * 100_000),
                "NumberOfEmployees": lambda: r(5, 50_000),
                "Type": lambda: rng.choice(("Prospect", "Customer - Direct", "Partner")),
                "Customer_Tier__c": lambda: rng.choice(("Gold", "Silver", "Bronze")),
            })
        elif name == "Opportunity":
            options.update({
                "StageName": lambda: rng.choice(STAGES),
                "Amount": lambda: float(r(5, 2000) * 250),
                "CloseDate": lambda: self.day(r(-10, 120)),
                "NextStep": lambda: rng.choice(("Send proposal", "Legal review", "Follow up")),
            })
        elif name == "Campaign":
            options.update({
                "Status": lambda: rng.choice(("Planned", "In Progress", "Completed")),
                "ActualCost": lambda: float(r(1, 50) * 1000),
                "Description": lambda: "Updated brief",
            })
        elif name == "CampaignMember":
            return {"Status": "Sent" if row.get("Status") == "Responded" else "Responded"}
        elif name == "Task":
            options.update({
                "Status": lambda: rng.choice(tuple(TASK_STATUSES)),
                "Priority": lambda: rng.choice(("High", "Normal", "Low")),
                "ActivityDate": lambda: self.day(r(-5, 30)),
                "Description": lambda: "Follow-up notes added.",
            })
        elif name == "Event":
            options.update({"Location": lambda: rng.choice(LOCATIONS),
                            "Description": lambda: "Agenda updated.",
                            "DurationInMinutes": lambda: rng.choice((30, 45, 60, 90))})
        elif name == "OpportunityContactRole":
            options["Role"] = lambda: rng.choice(ROLES)
        elif name == "Webinar_Attendance__c":
            options.update({"Attended__c": lambda: not row.get("Attended__c"),
                            "Duration_Minutes__c": lambda: float(r(5, 91))})
        elif name == "Subscription__c":
            options.update({"Seats__c": lambda: float(r(1, 500)),
                            "Plan__c": lambda: rng.choice(PLANS)[0],
                            "Active__c": lambda: not row.get("Active__c")})
        else:
            raise ValueError(f"simulate_activity cannot update {name}")
        options = {k: v for k, v in options.items() if k in fields_}  # this org's fields
        keys = rng.sample(sorted(options), min(len(options), rng.randint(1, 3)))
        return {k: options[k]() for k in keys}


def _weighted(rng: random.Random, weights: dict[str, int], objects) -> str:
    names = [n for n in weights if n in objects]
    return rng.choices(names, weights=[weights[n] for n in names])[0]


def simulate_activity(org: Org, *, creates: int = 0, updates: int = 0, deletes: int = 0,
                      undeletes: int = 0, merges: int = 0, conversions: int = 0,
                      objects=None, rng_seed: int | None = None) -> dict:
    """Play sales activity through the records write path; returns what changed.

    ``objects`` limits creates/updates/deletes to those objects (default
    ``DEFAULT_ACTIVITY_OBJECTS``). Merges pick two leads, contacts or accounts (preferring pairs
    with the same e-mail / name); conversions convert open leads; undeletes restore records
    from the recycle bin.
    """
    objects = tuple(objects or DEFAULT_ACTIVITY_OBJECTS)
    for name in objects:
        if name not in CREATE_WEIGHTS or name not in org.schema.objects:
            raise ValueError(f"simulate_activity does not know {name!r}; choose from "
                             f"{sorted(set(CREATE_WEIGHTS) & set(org.schema.objects))}")

    def known(name: str, values: dict | None) -> dict | None:
        """Only the fields this org has (the values are written for the demo org's shape)."""
        fields_ = org.schema.objects[name].fields
        return None if values is None else {k: v for k, v in values.items() if k in fields_}

    rng = random.Random(rng_seed)
    out: dict = {"created": defaultdict(list), "updated": defaultdict(list),
                 "deleted": defaultdict(list), "undeleted": [], "merged": [], "converted": []}
    with org.lock, org.tx():
        act = _Activity(org, rng)
        picker = act.picker
        for _ in range(creates):
            name = _weighted(rng, CREATE_WEIGHTS, objects)
            for _attempt in range(3):
                values = known(name, act.new_values(name))
                if values is None:
                    break
                actor = act.owner()  # a sales rep, not the sync user (echo suppression)
                values.update(CreatedById=actor, LastModifiedById=actor)
                try:
                    out["created"][name].append(records.create(org, name, values, system=True))
                    break
                except ApiError:
                    continue
        for _ in range(updates):
            name = _weighted(rng, UPDATE_WEIGHTS, objects)
            record_id = picker.pick(name, '"IsConverted" = 0' if name == "Lead" else "")
            if record_id is None:
                continue
            try:
                records.update(org, name, record_id, act.changes(name, picker.row(name, record_id)),
                               system=True)
                _attribute(org, record_id, act.owner())
                out["updated"][name].append(record_id)
            except ApiError:
                continue
        for _ in range(conversions):
            lead_id = picker.pick("Lead", '"IsConverted" = 0')
            if lead_id is None:
                break
            lead = picker.row("Lead", lead_id)
            account_id = contact_id = None
            if lead.get("Email") and rng.random() < 0.5:
                match = org.db.execute('SELECT "Id", "AccountId" FROM "Contact" WHERE "Email" = ? '
                                       'AND "IsDeleted" = 0 AND "AccountId" IS NOT NULL '
                                       'ORDER BY "Id" LIMIT 1', (lead["Email"],)).fetchone()
                if match:
                    contact_id, account_id = match
            try:
                result = records.convert_lead(org, lead_id, account_id=account_id,
                                              contact_id=contact_id,
                                              create_opportunity=rng.random() < 0.4)
            except ApiError:
                continue
            _attribute_conversion(org, result, lead["OwnerId"], account_id is None)
            out["converted"].append(result)
        if merges:
            _merges(org, rng, picker, merges, out["merged"])
        for _ in range(deletes):
            name = _weighted(rng, DELETE_WEIGHTS, objects)
            record_id = picker.pick(name)
            if record_id is None:
                continue
            try:
                records.delete(org, record_id, sobject=name)
                out["deleted"][name].append(record_id)
            except ApiError:
                continue
        if undeletes:
            for record_id in _undelete_candidates(org, rng, undeletes):
                try:
                    records.undelete(org, record_id)
                    out["undeleted"].append(record_id)
                except ApiError:
                    continue
    for key in ("created", "updated", "deleted"):
        out[key] = dict(out[key])
    return out


def _merges(org: Org, rng: random.Random, picker: _Picker, count: int, merged: list) -> None:
    reps = _reps(org)
    for _ in range(count):
        name = rng.choices(list(MERGE_WEIGHTS), weights=list(MERGE_WEIGHTS.values()))[0]
        chosen = _duplicate_group(org, picker, name)
        if chosen is None:  # no duplicate found: merge two random records
            where = '"IsConverted" = 0' if name == "Lead" else ""
            a, b = picker.pick(name, where), picker.pick(name, where)
            if not a or not b or a == b:
                continue
            chosen = [a, b]
        chosen = sorted(chosen)
        master, losers = chosen[0], chosen[1:]
        try:
            records.merge(org, name, master, losers)
        except ApiError:
            continue
        _attribute(org, master, rng.choice(reps))
        merged.append({"sobject": name, "master": master, "losers": losers})


def _duplicate_group(org: Org, picker: _Picker, name: str, tries: int = 150) -> list[str] | None:
    """Up to three live records sharing an e-mail (any case) or, for accounts, a name.

    Random probes through the indexed column: a few hundred microseconds even on a large org,
    where a GROUP BY over the whole table would take a second.
    """
    key = "Name" if name == "Account" else "Email"
    extra = ' AND "IsConverted" = 0' if name == "Lead" else ""
    for _ in range(tries if name != "Account" else 5):
        record_id = picker.pick(name, f'{quote(key)} IS NOT NULL{extra}')
        if record_id is None:
            return None
        value = org.db.execute(f'SELECT {quote(key)} FROM {quote(name)} WHERE "Id" = ?',
                               (record_id,)).fetchone()[0]
        others = [r[0] for r in org.db.execute(
            f'SELECT "Id" FROM {quote(name)} WHERE {quote(key)} = ? AND "IsDeleted" = 0 AND '
            f'"Id" != ?{extra} ORDER BY "Id" LIMIT 2', (value, record_id))]
        if others:
            return [record_id, *others]
    return None


def _live(org: Org, name: str, record_id: str) -> bool:
    extra = ' AND "IsConverted" = 0' if name == "Lead" else ""
    return org.db.execute(f'SELECT 1 FROM {quote(name)} WHERE "Id" = ? AND "IsDeleted" = 0'
                          f'{extra}', (record_id,)).fetchone() is not None


def _undelete_candidates(org: Org, rng: random.Random, count: int) -> list[str]:
    rows = org.db.execute("SELECT sobject, id FROM _deleted_log WHERE hard = 0 AND cascade_root "
                          "IS NULL ORDER BY rowid").fetchall()
    rng.shuffle(rows)
    out = []
    for name, record_id in rows:
        if len(out) >= count:
            break
        obj = org.schema.get(name)
        if obj is None or not obj.undeletable or obj.hard_delete_only:
            continue
        row = records.fetch_row(org, obj, record_id)
        if not row or not row["IsDeleted"] or row.get("MasterRecordId"):
            continue
        parents_live = True
        for f in obj.fields.values():
            if (f.type != "reference" or not row.get(f.name) or f.name in records.AUDIT_FIELDS
                    or f.name in {"OwnerId", "MasterRecordId"} or f.name.startswith("Converted")):
                continue
            target = org.schema.object_for_id(row[f.name])
            if target is not None and not _live_any(org, target.name, row[f.name]):
                parents_live = False
                break
        if parents_live:
            out.append(record_id)
    return out


def _live_any(org: Org, name: str, record_id: str) -> bool:
    return org.db.execute(f'SELECT 1 FROM {quote(name)} WHERE "Id" = ? AND "IsDeleted" = 0',
                          (record_id,)).fetchone() is not None

"""Seeding (demo / empty / N) and simulated activity of the Salesforce emulator."""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from include.salesforce_emulator import records
from include.salesforce_emulator.ids import make_id, normalize_id
from include.salesforce_emulator.schema import COUNTRIES, US_STATES
from include.salesforce_emulator.seed import (
    DEMO_COUNTS,
    fast_ids,
    seed_counts,
    seed_org,
    simulate_activity,
)
from include.salesforce_emulator.storage import quote
from include.salesforce_emulator.store import Org

NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)
STAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def frozen_org(path) -> Org:
    org = Org(path)
    org.set_clock(to=NOW, frozen=True)
    return org


@pytest.fixture(scope="module")
def demo_org(tmp_path_factory):
    org = frozen_org(tmp_path_factory.mktemp("demo"))
    org.seed_counts = seed_org(org, "demo")
    return org


@pytest.fixture(scope="module")
def big_org(tmp_path_factory):
    org = frozen_org(tmp_path_factory.mktemp("n20000"))
    calls = []
    org.seed_counts = seed_org(org, 20000, progress=lambda done, total: calls.append((done, total)))
    org.progress_calls = calls
    return org


@pytest.fixture(params=["demo", "n20000"])
def org(request, demo_org, big_org):
    return demo_org if request.param == "demo" else big_org


def rows(org: Org, sql: str, args=()) -> list[tuple]:
    return org.db.execute(sql, args).fetchall()


def scalar(org: Org, sql: str, args=()):
    return org.db.execute(sql, args).fetchone()[0]


def dump(org: Org) -> str:
    digest = hashlib.sha256()
    for name in org.schema.objects:
        for row in org.db.execute(f'SELECT * FROM {quote(name)} ORDER BY "Id"'):
            digest.update(repr(row).encode())
    for row in org.db.execute("SELECT * FROM _deleted_log ORDER BY id"):
        digest.update(repr(row).encode())
    return digest.hexdigest()


# --- counts -------------------------------------------------------------------------------------

def test_fast_ids_match_make_id():
    for prefix in ("001", "00Q", "a01"):
        for first in (1, 61, 3843, 3844, 238_327, 14_776_335, 62 ** 5 - 3):
            assert fast_ids(prefix, first, 6) == [make_id(prefix, n) for n in range(first, first + 6)]


def test_empty_org_has_only_the_sync_user(tmp_path):
    org = frozen_org(tmp_path)
    counts = seed_org(org, "empty")
    assert counts["User"] == 1 and sum(counts.values()) == 1
    (user_id, username, last, alias, email, active, tz, name), = rows(
        org, 'SELECT "Id", "Username", "LastName", "Alias", "Email", "IsActive", '
             '"TimeZoneSidKey", "Name" FROM "User"')
    assert user_id == make_id("005", 1) == org.sync_user_id()
    assert username == org.settings.username
    assert (last, alias, active) == ("Sync User", "sync", 1)
    assert "@" in email and name.endswith("Sync User")
    assert tz in org.schema.objects["User"].fields["TimeZoneSidKey"].picklist


def test_reseeding_replaces_everything(tmp_path):
    org = frozen_org(tmp_path)
    seed_org(org, "demo")
    counts = seed_org(org, "empty")
    assert sum(counts.values()) == 1
    assert scalar(org, "SELECT count(*) FROM _deleted_log") == 0
    assert scalar(org, 'SELECT "Id" FROM "User"') == make_id("005", 1)


def test_demo_counts(demo_org):
    counts = demo_org.seed_counts
    for name, planned in DEMO_COUNTS.items():
        assert planned * 0.9 <= counts[name] <= planned * 1.15 + 3, (name, counts[name])
    assert counts["CampaignMemberStatus"] == 2 * counts["Campaign"]
    # a few converted through records.convert_lead, a few sitting in the recycle bin
    assert scalar(demo_org, 'SELECT count(*) FROM "Lead" WHERE "IsConverted" = 1') >= 5
    deleted = sum(scalar(demo_org, f'SELECT count(*) FROM {quote(n)} WHERE "IsDeleted" = 1')
                  for n in demo_org.schema.objects)
    assert 3 <= deleted <= 60
    assert scalar(demo_org, 'SELECT count(*) FROM "Lead" WHERE "Do_Not_Sync_Marketing__c" = 1') >= 1


def test_scaled_counts(big_org):
    counts = big_org.seed_counts
    total = sum(counts.values())
    assert 19_000 <= total <= 21_000
    planned = seed_counts(20000)
    for name, n in planned.items():
        assert n * 0.95 <= counts[name] <= n * 1.05 + 5, (name, counts[name], n)
    assert counts["User"] >= 5 and counts["Campaign"] >= 3
    calls = big_org.progress_calls
    assert calls and calls[-1][0] == calls[-1][1]
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)


def test_deterministic_for_a_seed(tmp_path):
    a, b, c = (frozen_org(tmp_path / x) for x in "abc")
    seed_org(a, 3000, rng_seed=7)
    seed_org(b, 3000, rng_seed=7)
    seed_org(c, 3000, rng_seed=8)
    assert dump(a) == dump(b)
    assert dump(a) != dump(c)


# --- invariants ---------------------------------------------------------------------------------

def test_ids_valid_and_references_resolve(org):
    schema = org.schema
    for obj in schema.objects.values():
        for (record_id,) in rows(org, f'SELECT "Id" FROM {quote(obj.name)}'):
            assert normalize_id(record_id) == record_id and record_id[:3] == obj.key_prefix
        for f in obj.fields.values():
            if f.type != "reference":
                continue
            targets = [t for t in f.reference_to if t in schema.objects]
            values = [v for (v,) in rows(org, f'SELECT DISTINCT {quote(f.name)} FROM '
                                              f'{quote(obj.name)} WHERE {quote(f.name)} IS NOT NULL')]
            for value in values:
                target = schema.object_for_id(value)
                assert target is not None and target.name in targets, (obj.name, f.name, value)
                assert scalar(org, f'SELECT count(*) FROM {quote(target.name)} WHERE "Id" = ?',
                              (value,)) == 1, (obj.name, f.name, value)
            if not f.nillable and f.name not in ("OwnerId",):
                assert scalar(org, f'SELECT count(*) FROM {quote(obj.name)} WHERE '
                                   f'{quote(f.name)} IS NULL') == 0, (obj.name, f.name)


def test_timestamps(org):
    now = org.now().strftime("%Y-%m-%dT%H:%M:%S")
    three_years = (org.now() - timedelta(days=3 * 365 + 1)).strftime("%Y-%m-%dT%H:%M:%S")
    for name in org.schema.objects:
        data = rows(org, f'SELECT "CreatedDate", "LastModifiedDate", "SystemModstamp" FROM '
                         f'{quote(name)}')
        for created, modified, stamp in data:
            assert STAMP_RE.match(created) and STAMP_RE.match(modified) and STAMP_RE.match(stamp)
            assert created <= modified <= stamp <= now, (name, created, modified, stamp)
            if name != "User":
                assert created >= three_years, (name, created)
    # created dates spread over three years: every year holds a fair share of the leads
    created = [r[0] for r in rows(org, 'SELECT "CreatedDate" FROM "Lead"')]
    for years_ago in range(3):
        hi = (org.now() - timedelta(days=365 * years_ago)).isoformat()[:19]
        lo = (org.now() - timedelta(days=365 * (years_ago + 1))).isoformat()[:19]
        share = sum(lo <= c < hi for c in created) / len(created)
        assert 0.15 <= share <= 0.55, (years_ago, share)


def test_ids_increase_with_created_date(big_org):
    for name in ("Account", "Lead", "Task", "CampaignMember"):
        created = [r[0] for r in rows(big_org, f'SELECT "CreatedDate" FROM {quote(name)} '
                                               f'WHERE "Id" NOT IN (SELECT "Id" FROM {quote(name)} '
                                               f'ORDER BY "Id" DESC LIMIT 20) ORDER BY "Id"')]
        assert created == sorted(created), name


def test_mass_import_ties(big_org):
    for name in ("Lead", "Contact", "Account"):
        total = scalar(big_org, f'SELECT count(*) FROM {quote(name)}')
        tied = scalar(big_org, f'SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM '
                               f'{quote(name)} GROUP BY "SystemModstamp" HAVING n >= 10)')
        biggest = scalar(big_org, f'SELECT max(n) FROM (SELECT count(*) AS n FROM {quote(name)} '
                                  f'GROUP BY "SystemModstamp")')
        assert 0.12 <= tied / total <= 0.35, (name, tied, total)
        assert biggest >= min(total // 80, 50), (name, biggest)
        # whole mass imports: created, modified and the stamp are one instant
        assert scalar(big_org, f'SELECT count(*) FROM {quote(name)} WHERE "CreatedDate" = '
                               f'"SystemModstamp" AND "LastModifiedDate" = "SystemModstamp" AND '
                               f'"SystemModstamp" IN (SELECT "SystemModstamp" FROM {quote(name)} '
                               f'GROUP BY 1 HAVING count(*) >= 10)') >= 0.08 * total


def test_derived_fields_match_the_write_path(org):
    """Every stored row is what records._derive would compute from it."""
    sample = 400
    for name in ("User", "Lead", "Contact", "Opportunity", "Task", "Event", "CampaignMember"):
        obj = org.schema.objects[name]
        ids = [r[0] for r in rows(org, f'SELECT "Id" FROM {quote(name)} ORDER BY "Id"')]
        for record_id in ids[:: max(1, len(ids) // sample)]:
            row = records.fetch_row(org, obj, record_id)
            derived = dict(row)
            records._derive(org, obj, row, derived)
            assert derived == row, (name, {k: (row[k], derived[k]) for k in row
                                           if row[k] != derived[k]})


def test_specific_derived_rules(org):
    assert scalar(org, 'SELECT count(*) FROM "Contact" c LEFT JOIN "Account" a ON a."Id" = '
                       'c."AccountId" WHERE c."Account_Rating__c" IS NOT a."Rating"') == 0
    assert scalar(org, 'SELECT count(*) FROM "Opportunity" WHERE "CloseDate" IS NULL OR '
                       '"ForecastCategory" IS NULL OR "Probability" IS NULL') == 0
    assert scalar(org, 'SELECT count(*) FROM "Opportunity" WHERE "Amount" IS NOT NULL AND '
                       'abs("ExpectedRevenue" - "Amount" * "Probability" / 100) > 0.001') == 0
    assert scalar(org, 'SELECT count(*) FROM "Task" WHERE ("IsClosed" = 1) != '
                       '("CompletedDateTime" IS NOT NULL)') == 0
    names = rows(org, 'SELECT "Id", "Name" FROM "Webinar_Attendance__c" ORDER BY "Id"')
    assert names and all(re.fullmatch(r"WA-\d{6}", n) for _, n in names)
    assert len({n for _, n in names}) == len(names)
    assert [int(n[3:]) for _, n in names] == sorted(int(n[3:]) for _, n in names)


def test_picklists_hold_allowed_values(org):
    for obj in org.schema.objects.values():
        for f in obj.fields.values():
            if f.type != "picklist" or not f.picklist:
                continue
            values = {v for (v,) in rows(org, f'SELECT DISTINCT {quote(f.name)} FROM '
                                              f'{quote(obj.name)} WHERE {quote(f.name)} IS NOT NULL')}
            assert values <= set(f.picklist), (obj.name, f.name, values - set(f.picklist))
    for table, state, country in (("Account", "BillingState", "BillingCountry"),
                                  ("Contact", "MailingState", "MailingCountry"),
                                  ("Lead", "State", "Country")):
        for st, co in rows(org, f'SELECT DISTINCT {quote(state)}, {quote(country)} FROM '
                                f'{quote(table)}'):
            assert st is None or st in US_STATES
            assert co is None or co in COUNTRIES
            if st is not None:
                assert co in ("United States", "Canada")


def test_owners_are_active_users(org):
    sync = org.sync_user_id()
    for obj in org.schema.objects.values():
        if "OwnerId" not in obj.fields:
            continue
        bad = scalar(org, f'SELECT count(*) FROM {quote(obj.name)} t LEFT JOIN "User" u ON '
                          f'u."Id" = t."OwnerId" WHERE u."IsActive" IS NOT 1')
        assert bad == 0, obj.name
        assert scalar(org, f'SELECT count(*) FROM {quote(obj.name)} WHERE "OwnerId" IS NULL') == 0
        if obj.name not in {"Account", "Contact", "Opportunity"}:  # conversions: records path
            assert scalar(org, f'SELECT count(*) FROM {quote(obj.name)} WHERE "OwnerId" = ?',
                          (sync,)) == 0, obj.name
    assert scalar(org, 'SELECT count(*) FROM "User" WHERE "IsActive" = 0') >= 1


def test_campaign_members(org):
    assert rows(org, 'SELECT "CampaignId", "LeadId", count(*) FROM "CampaignMember" WHERE '
                     '"LeadId" IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1') == []
    assert rows(org, 'SELECT "CampaignId", "ContactId", count(*) FROM "CampaignMember" WHERE '
                     '"ContactId" IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1') == []
    statuses = rows(org, 'SELECT "CampaignId", group_concat("Label" || ":" || "IsDefault" || '
                         '"HasResponded", ",") FROM (SELECT * FROM "CampaignMemberStatus" ORDER BY '
                         '"SortOrder") GROUP BY 1')
    assert len(statuses) == scalar(org, 'SELECT count(*) FROM "Campaign"')
    assert {s for _, s in statuses} == {"Sent:10,Responded:01"}
    assert scalar(org, 'SELECT count(*) FROM "CampaignMember" m WHERE NOT EXISTS (SELECT 1 FROM '
                       '"CampaignMemberStatus" s WHERE s."CampaignId" = m."CampaignId" AND '
                       's."Label" = m."Status")') == 0
    assert scalar(org, 'SELECT count(*) FROM "CampaignMember" WHERE ("Status" = \'Responded\') '
                       '!= "HasResponded" OR ("FirstRespondedDate" IS NULL) = "HasResponded"') == 0
    kinds = Counter(r[0] for r in rows(org, 'SELECT "Type" FROM "CampaignMember"'))
    assert kinds["Lead"] > 0 and kinds["Contact"] > 0


def test_converted_leads(org):
    total = scalar(org, 'SELECT count(*) FROM "Lead"')
    converted = rows(org, 'SELECT l."Status", l."ConvertedDate", c."Id", c."AccountId", '
                          'l."ConvertedAccountId", a."Id", l."ConvertedOpportunityId", '
                          'l."LastModifiedDate", c."CreatedDate" FROM "Lead" l '
                          'LEFT JOIN "Contact" c ON c."Id" = l."ConvertedContactId" '
                          'LEFT JOIN "Account" a ON a."Id" = l."ConvertedAccountId" '
                          'WHERE l."IsConverted" = 1')
    assert 0.03 <= len(converted) / total <= 0.09, len(converted) / total
    for status, cdate, contact, contact_acct, acct, acct_row, opp, modified, c_created in converted:
        assert status == "Closed - Converted" and DATE_RE.match(cdate)
        assert contact is not None and acct_row is not None and contact_acct == acct
        assert cdate == c_created[:10] and modified >= c_created
        if opp:
            assert scalar(org, 'SELECT "AccountId" FROM "Opportunity" WHERE "Id" = ?', (opp,)) == acct
    assert scalar(org, 'SELECT count(*) FROM "Lead" WHERE "IsConverted" = 0 AND ("Status" = '
                       '\'Closed - Converted\' OR "ConvertedDate" IS NOT NULL OR '
                       '"ConvertedContactId" IS NOT NULL)') == 0


def test_emails_and_do_not_sync(big_org):
    people = rows(big_org, 'SELECT "Email", "Do_Not_Sync_Marketing__c" FROM "Lead" WHERE '
                           '"IsConverted" = 0 UNION ALL SELECT "Email", "Do_Not_Sync_Marketing__c" '
                           'FROM "Contact"')
    emails = [e for e, _ in people if e]
    assert sum(e == e.lower() for e in emails) / len(emails) > 0.97
    assert all(re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", e) for e in emails)
    by_norm = Counter(e.lower() for e in emails)
    shared = sum(n for n in by_norm.values() if n > 1) / len(emails)
    assert 0.02 <= shared <= 0.08, shared
    variants: dict[str, set[str]] = {}
    for e in emails:
        variants.setdefault(e.lower(), set()).add(e)
    assert sum(len(v) > 1 for v in variants.values()) >= 10  # differ only in case
    dns = sum(d for _, d in people) / len(people)
    assert 0.01 <= dns <= 0.035, dns


def test_archived_activities(org):
    cutoff = (org.now().date() - timedelta(days=365)).isoformat()
    now = org.now().strftime("%Y-%m-%dT%H:%M:%S")
    assert scalar(org, 'SELECT count(*) FROM "Task" WHERE "IsArchived" != ("IsClosed" = 1 AND '
                       '"ActivityDate" < ?)', (cutoff,)) == 0
    assert scalar(org, 'SELECT count(*) FROM "Event" WHERE "IsArchived" != ("ActivityDate" < ? '
                       'AND "EndDateTime" <= ?)', (cutoff, now)) == 0
    assert scalar(org, 'SELECT count(*) FROM "Task" WHERE "IsArchived" = 1') > 0
    assert scalar(org, 'SELECT count(*) FROM "Task" WHERE "IsArchived" = 0') > 0


def test_contact_roles_have_one_primary(org):
    counts = rows(org, 'SELECT "OpportunityId", sum("IsPrimary") FROM "OpportunityContactRole" '
                       'GROUP BY 1')
    assert counts and all(p == 1 for _, p in counts)
    assert rows(org, 'SELECT "OpportunityId", "ContactId" FROM "OpportunityContactRole" '
                     'GROUP BY 1, 2 HAVING count(*) > 1') == []


def test_recycle_bin(org):
    deleted = []
    for name in org.schema.objects:
        deleted += [(name, i) for (i,) in rows(org, f'SELECT "Id" FROM {quote(name)} WHERE '
                                                   f'"IsDeleted" = 1')]
    assert deleted
    for name, record_id in deleted:
        assert scalar(org, "SELECT count(*) FROM _deleted_log WHERE id = ? AND sobject = ?",
                      (record_id, name)) == 1
    oldest = scalar(org, "SELECT min(deleted_date) FROM _deleted_log")
    assert oldest >= (org.now() - timedelta(days=org.settings.recycle_bin_days)).isoformat()[:19]
    assert org.purge_expired(force=True) == 0


def test_audit_users(big_org):
    sync = big_org.sync_user_id()
    for name in ("Lead", "Contact", "Task"):
        assert scalar(big_org, f'SELECT count(*) FROM {quote(name)} WHERE "LastModifiedById" = ?',
                      (sync,)) == 0, name


# --- simulated activity -------------------------------------------------------------------------

@pytest.fixture
def active_org(tmp_path):
    org = frozen_org(tmp_path)
    seed_org(org, 5000, rng_seed=3)
    org.set_clock(advance_seconds=3600, frozen=True)
    return org


def stamp_of(org: Org, name: str, record_id: str):
    return rows(org, f'SELECT "SystemModstamp", "IsDeleted", "LastModifiedById" FROM {quote(name)} '
                     f'WHERE "Id" = ?', (record_id,))


def test_simulated_creates_and_updates(active_org):
    org = active_org
    now = org.now().strftime("%Y-%m-%dT%H:%M:%S")
    sync = org.sync_user_id()
    out = simulate_activity(org, creates=200, updates=300, rng_seed=1)
    created = out["created"]
    assert set(created) <= {"Lead", "Contact", "Account", "Opportunity", "Campaign",
                            "CampaignMember", "Task"}
    assert sum(map(len, created.values())) >= 190
    for name, ids in created.items():
        for record_id in ids:
            (stamp, deleted, modifier), = stamp_of(org, name, record_id)
            assert stamp == now and not deleted and modifier != sync
    updated = out["updated"]
    assert sum(map(len, updated.values())) >= 280
    for name, ids in updated.items():
        for record_id in ids:
            (stamp, _, modifier), = stamp_of(org, name, record_id)
            assert stamp == now and modifier != sync
    for name in ("Lead", "Contact", "Opportunity", "Task", "CampaignMember"):
        obj = org.schema.objects[name]
        for record_id in (updated.get(name, []) + created.get(name, []))[:50]:
            row = records.fetch_row(org, obj, record_id)
            derived = dict(row)
            records._derive(org, obj, row, derived)
            assert derived == row


def test_simulated_deletes_undeletes_merges_conversions(active_org):
    org = active_org
    now = org.now().strftime("%Y-%m-%dT%H:%M:%S")
    out = simulate_activity(org, deletes=60, undeletes=5, merges=12, conversions=15, rng_seed=2)
    assert sum(map(len, out["deleted"].values())) == 60
    undeleted = set(out["undeleted"])
    for name, ids in out["deleted"].items():
        for record_id in ids:
            if record_id in undeleted:
                continue
            assert scalar(org, "SELECT count(*) FROM _deleted_log WHERE id = ?", (record_id,)) == 1
            found = stamp_of(org, name, record_id)
            if name == "CampaignMember":
                assert found == []  # hard delete
            else:
                assert found[0][:2] == (now, 1)
    assert 1 <= len(undeleted) <= 5
    for record_id in undeleted:
        name = org.schema.object_for_id(record_id).name
        assert stamp_of(org, name, record_id)[0][:2] == (now, 0)
        assert scalar(org, "SELECT count(*) FROM _deleted_log WHERE id = ?", (record_id,)) == 0
    assert len(out["merged"]) == 12
    same_email = 0
    for merge in out["merged"]:
        name = merge["sobject"]
        assert name in ("Lead", "Contact", "Account")
        for loser in merge["losers"]:
            (deleted, master), = rows(org, f'SELECT "IsDeleted", "MasterRecordId" FROM '
                                           f'{quote(name)} WHERE "Id" = ?', (loser,))
            assert deleted == 1 and master == merge["master"]
        if name != "Account":
            group = [merge["master"], *merge["losers"]]
            emails = {r[0].lower() for r in rows(
                org, f'SELECT "Email" FROM {quote(name)} WHERE "Id" IN '
                     f'({",".join("?" * len(group))})', group) if r[0]}
            same_email += len(emails) == 1
    assert same_email >= 1
    assert len(out["converted"]) == 15
    for conv in out["converted"]:
        lead = rows(org, 'SELECT "IsConverted", "ConvertedContactId", "ConvertedAccountId", '
                         '"Status" FROM "Lead" WHERE "Id" = ?', (conv["leadId"],))[0]
        assert lead == (1, conv["contactId"], conv["accountId"], "Closed - Converted")
        # the contact exists (later merges/deletes of the same run may have binned it)
        assert scalar(org, 'SELECT count(*) FROM "Contact" WHERE "Id" = ?',
                      (conv["contactId"],)) == 1


def test_simulate_limits_objects(active_org):
    out = simulate_activity(active_org, creates=40, updates=40, deletes=20,
                            objects=["Task", "Event"], rng_seed=4)
    for key in ("created", "updated", "deleted"):
        assert set(out[key]) <= {"Task", "Event"} and out[key]
    with pytest.raises(ValueError):
        simulate_activity(active_org, creates=1, objects=["Nope"])


def test_simulate_ten_thousand_changes_quickly(tmp_path):
    org = frozen_org(tmp_path)
    seed_org(org, 20000, rng_seed=5)
    org.set_clock(advance_seconds=60, frozen=True)
    start = time.perf_counter()
    out = simulate_activity(org, creates=3000, updates=5000, deletes=1500, undeletes=200,
                            merges=100, conversions=200, rng_seed=6)
    elapsed = time.perf_counter() - start
    changes = (sum(map(len, out["created"].values())) + sum(map(len, out["updated"].values()))
               + sum(map(len, out["deleted"].values())) + len(out["undeleted"])
               + len(out["merged"]) + len(out["converted"]))
    assert changes >= 9_500
    assert elapsed < 30, elapsed
    now = org.now().strftime("%Y-%m-%dT%H:%M:%S")
    for name in org.schema.objects:  # the audit invariants survive the activity
        assert scalar(org, f'SELECT count(*) FROM {quote(name)} WHERE NOT ("CreatedDate" <= '
                           f'"LastModifiedDate" AND "LastModifiedDate" <= "SystemModstamp" AND '
                           f'"SystemModstamp" <= ?)', (now,)) == 0, name

"""SOQL engine: grammar, semantics, response shapes and errors (include/salesforce_emulator/soql.py)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest

from include.salesforce_emulator import storage
from include.salesforce_emulator.errors import ApiError
from include.salesforce_emulator.ids import make_id
from include.salesforce_emulator.schema import demo_schema
from include.salesforce_emulator.soql import prepare

NOW = datetime(2026, 3, 4, 12, 0, 0, tzinfo=UTC)   # a Wednesday
V = "59.0"

U1, U2 = make_id("005", 1), make_id("005", 2)
QUEUE = make_id("00G", 1)
A1, A2, A3, A4 = (make_id("001", i) for i in range(1, 5))
C1, C2, C3 = (make_id("003", i) for i in range(1, 4))
L1, L2 = make_id("00Q", 1), make_id("00Q", 2)
T1, T2, T3 = (make_id("00T", i) for i in range(1, 4))
O1, O2, O3 = (make_id("006", i) for i in range(1, 4))

SCHEMA = demo_schema()


def _insert(db, table, **values):
    cols = ", ".join(f'"{c}"' for c in values)
    db.execute(f'INSERT INTO "{table}" ({cols}) VALUES ({", ".join("?" * len(values))})',
               tuple(values.values()))


@pytest.fixture(scope="module")
def db():
    conn = sqlite3.connect(":memory:")
    storage.create_tables(conn, SCHEMA)
    _insert(conn, "User", Id=U1, Username="guy@x.com", FirstName="Guy", LastName="Smiley",
            Name="Guy Smiley", Alias="gsmil", Email="guy@x.com", IsActive=1, Title="Boss")
    _insert(conn, "User", Id=U2, Username="ann@x.com", FirstName="Ann", LastName="Other",
            Name="Ann Other", Alias="aoth", Email="ann@x.com", IsActive=0)
    _insert(conn, "Account", Id=A1, OwnerId=U1, Name="Acme", Industry="Technology",
            AnnualRevenue=1000.0, NumberOfEmployees=10, SystemModstamp="2026-01-02T00:00:00",
            CreatedDate="2026-01-02T00:00:00", Type="Customer - Direct")
    _insert(conn, "Account", Id=A2, OwnerId=U2, Name="Globex", Industry="Banking",
            AnnualRevenue=500.0, SystemModstamp="2026-01-05T10:00:00",
            CreatedDate="2026-01-05T10:00:00", ParentId=A1)
    _insert(conn, "Account", Id=A3, OwnerId=U1, Name="Initech", SystemModstamp="2026-02-01T00:00:00",
            CreatedDate="2026-02-01T00:00:00", IsDeleted=1)
    _insert(conn, "Account", Id=A4, OwnerId=U1, Name="100% Pure_Co", Industry="technology",
            Description="back\\slash", SystemModstamp="2026-03-04T11:00:00",
            CreatedDate="2026-03-04T11:00:00")
    _insert(conn, "Contact", Id=C1, OwnerId=U1, LastName="Doe", FirstName="Jane", Name="Jane Doe",
            AccountId=A1, Email="doe@x.com", Birthdate="1990-05-01",
            SystemModstamp="2026-03-01T00:00:00", HasOptedOutOfEmail=1)
    _insert(conn, "Contact", Id=C2, OwnerId=U2, LastName="roe", Name="roe",
            SystemModstamp="2026-03-02T00:00:00")
    _insert(conn, "Contact", Id=C3, OwnerId=U1, LastName="Poe", Name="Poe", AccountId=A2,
            ReportsToId=C1, SystemModstamp="2026-03-03T00:00:00", Birthdate="2026-03-04")
    _insert(conn, "Lead", Id=L1, OwnerId=U1, LastName="Lead1", Name="Lead1", Company="LCo",
            Status="Open - Not Contacted", Email="l1@x.com")
    _insert(conn, "Lead", Id=L2, OwnerId=QUEUE, LastName="Lead2", Name="Lead2", Company="LCo",
            Status="Open - Not Contacted")
    _insert(conn, "Task", Id=T1, OwnerId=U1, WhoId=C1, WhatId=A1, Subject="Call",
            Status="Completed", Priority="Normal")
    _insert(conn, "Task", Id=T2, OwnerId=U2, WhoId=L1, Subject="Archived", Status="Completed",
            Priority="Normal", IsArchived=1)
    _insert(conn, "Task", Id=T3, OwnerId=U1, Subject="Deleted", Status="Completed",
            Priority="Normal", IsDeleted=1)
    _insert(conn, "Opportunity", Id=O1, OwnerId=U1, Name="O1", AccountId=A1, Amount=100.0,
            StageName="Prospecting", CloseDate="2026-03-04")
    _insert(conn, "Opportunity", Id=O2, OwnerId=U1, Name="O2", AccountId=A1, Amount=300.0,
            StageName="Closed Won", CloseDate="2026-03-10")
    _insert(conn, "Opportunity", Id=O3, OwnerId=U2, Name="O3", AccountId=A2,
            StageName="Prospecting", CloseDate="2025-12-31")
    yield conn
    conn.close()


def prep(soql, *, include_deleted=False, bulk=False):
    return prepare(soql, SCHEMA, now=NOW, include_deleted=include_deleted, bulk=bulk)


def recs(db, soql, **kw):
    p = prep(soql, **kw)
    return p.records(db, p.rowids(db), V)


def ids(db, soql, **kw):
    return [r["Id"] for r in recs(db, soql, **kw)]


def err(soql, **kw) -> ApiError:
    with pytest.raises(ApiError) as info:
        prep(soql, **kw)
    return info.value


def header(soql, col, row=1, line=None):
    line = soql if line is None else line
    return f"\n{line}\n{' ' * (col - 1)}^\nERROR at Row:{row}:Column:{col}\n"


# --- field lists and record shape -------------------------------------------------------------

def test_record_shape_and_canonical_casing(db):
    p = prep("select id, NAME, annualrevenue, numberofemployees, industry FROM account "
             f"WHERE Id = '{A1}'")
    assert p.columns == ["Id", "Name", "AnnualRevenue", "NumberOfEmployees", "Industry"]
    assert p.sobject.name == "Account"
    assert not p.count_only and not p.is_aggregate
    assert p.records(db, p.rowids(db), V) == [{
        "attributes": {"type": "Account", "url": f"/services/data/v59.0/sobjects/Account/{A1}"},
        "Id": A1, "Name": "Acme", "AnnualRevenue": 1000.0, "NumberOfEmployees": 10,
        "Industry": "Technology"}]


def test_nulls_are_explicit_and_value_formats(db):
    [r] = recs(db, f"SELECT Description, NumberOfEmployees, SystemModstamp, IsDeleted FROM Account "
                   f"WHERE Id = '{A2}'")
    assert r["Description"] is None and r["NumberOfEmployees"] is None
    assert r["SystemModstamp"] == "2026-01-05T10:00:00.000+0000"
    assert r["IsDeleted"] is False
    [c] = recs(db, f"SELECT Birthdate, HasOptedOutOfEmail FROM Contact WHERE Id = '{C1}'")
    assert c["Birthdate"] == "1990-05-01" and c["HasOptedOutOfEmail"] is True


def test_records_follow_given_rowid_order_and_skip_missing(db):
    p = prep("SELECT Id FROM Contact")
    rows = p.rowids(db)
    assert [r["Id"] for r in p.records(db, list(reversed(rows)) + [999999], V)] == [C3, C2, C1]
    assert p.records(db, [], V) == []


def test_to_label_and_object_name_prefix_and_alias(db):
    [r] = recs(db, f"SELECT toLabel(Industry), Account.Name FROM Account WHERE Id = '{A1}'")
    assert r["Industry"] == "Technology" and r["Name"] == "Acme"
    assert ids(db, "SELECT a.Id FROM Account a WHERE a.Name = 'acme'") == [A1]


def test_using_scope_and_with_security_enforced_accepted(db):
    assert ids(db, "SELECT Id FROM Account USING SCOPE everything WHERE Name = 'Acme' "
                   "WITH SECURITY_ENFORCED") == [A1]


# --- relationships ------------------------------------------------------------------------------

def test_parent_relationship_null_and_non_null(db):
    out = recs(db, "SELECT Id, Account.Name, Account.Industry, LastName FROM Contact ORDER BY Id")
    assert out[0]["Account"] == {
        "attributes": {"type": "Account", "url": f"/services/data/v59.0/sobjects/Account/{A1}"},
        "Name": "Acme", "Industry": "Technology"}
    assert list(out[0]) == ["attributes", "Id", "Account", "LastName"]
    assert out[1]["Account"] is None


def test_two_level_relationships(db):
    [r] = recs(db, f"SELECT ReportsTo.Account.Name, Account.Owner.Email, Account.Parent.Name "
                   f"FROM Contact WHERE Id = '{C3}'")
    assert r["ReportsTo"]["attributes"]["type"] == "Contact"
    assert r["ReportsTo"]["Account"]["Name"] == "Acme"
    assert r["Account"]["Owner"] == {
        "attributes": {"type": "User", "url": f"/services/data/v59.0/sobjects/User/{U2}"},
        "Email": "ann@x.com"}
    assert r["Account"]["Parent"]["Name"] == "Acme"
    p = prep(f"SELECT Id, ReportsTo.Account.Name FROM Contact WHERE Id = '{C1}'")
    assert p.records(db, p.rowids(db), V)[0]["ReportsTo"] is None
    assert p.columns == ["Id", "ReportsTo.Account.Name"]


def test_polymorphic_owner_and_who_render_as_name(db):
    out = recs(db, "SELECT Id, Owner.Name, Owner.Type, Owner.Alias, Owner.Phone FROM Lead ORDER BY Id")
    assert out[0]["Owner"] == {
        "attributes": {"type": "Name", "url": f"/services/data/v59.0/sobjects/User/{U1}"},
        "Name": "Guy Smiley", "Type": "User", "Alias": "gsmil", "Phone": None}
    # a queue owner: no Group table in this org, the reference still renders
    assert out[1]["Owner"]["attributes"] == {
        "type": "Name", "url": f"/services/data/v59.0/sobjects/Group/{QUEUE}"}
    assert out[1]["Owner"]["Type"] == "Group"
    [t] = recs(db, f"SELECT Who.Name, Who.Type, Who.Email, What.Name, What.Id, Subject FROM Task "
                   f"WHERE Id = '{T1}'")
    assert t["Who"] == {
        "attributes": {"type": "Name", "url": f"/services/data/v59.0/sobjects/Contact/{C1}"},
        "Name": "Jane Doe", "Type": "Contact", "Email": "doe@x.com"}
    assert t["What"] == {
        "attributes": {"type": "Name", "url": f"/services/data/v59.0/sobjects/Account/{A1}"},
        "Name": "Acme", "Id": A1}


def test_polymorphic_null_and_missing_fields(db):
    [t] = recs(db, f"SELECT Who.Name, What.Name, What.IsActive FROM Task WHERE Id = '{T2}'",
               include_deleted=True)
    assert t["What"] is None and t["Who"]["Name"] == "Lead1"


def test_polymorphic_filters_on_type_and_name(db):
    assert ids(db, "SELECT Id FROM Task WHERE Who.Type = 'contact'") == [T1]
    assert ids(db, "SELECT Id FROM Task WHERE Who.Type IN ('Lead') ", include_deleted=True) == [T2]
    assert ids(db, "SELECT Id FROM Lead WHERE Owner.Type != 'User'") == [L2]
    assert ids(db, "SELECT Id FROM Task WHERE What.Name LIKE 'ac%'") == [T1]
    assert ids(db, f"SELECT Id FROM Task WHERE Who.Id = '{C1[:15]}'") == [T1]
    assert ids(db, "SELECT Id FROM Lead ORDER BY Owner.Type, Id") == [L2, L1]


def test_polymorphic_unknown_subfield(db):
    e = err("SELECT Who.Bacon FROM Task")
    assert e.code == "INVALID_FIELD"
    assert "No such column 'Bacon' on entity 'Name'" in e.message
    e = err("SELECT Who.Owner.Name FROM Task")
    assert e.code == "INVALID_FIELD" and "Didn't understand relationship 'Owner'" in e.message


# --- operators and null logic ---------------------------------------------------------------------

@pytest.mark.parametrize("where, expected", [
    ("Name = 'ACME'", [A1]),
    ("Name != 'acme'", [A2, A4]),
    ("Name <> 'acme'", [A2, A4]),
    ("AnnualRevenue > 500", [A1]),
    ("AnnualRevenue >= 500", [A1, A2]),
    ("AnnualRevenue < 1000", [A2]),
    ("AnnualRevenue <= 1000", [A1, A2]),
    ("AnnualRevenue = 1000.0", [A1]),
    ("NumberOfEmployees = -3", []),
    ("Name IN ('acme', 'GLOBEX', 'nope')", [A1, A2]),
    ("Industry NOT IN ('Banking')", [A1, A4]),
    ("Industry IN ('Banking', null)", [A2]),
    ("Industry NOT IN ('Banking', null)", [A1, A4]),
    ("Name LIKE 'a%'", [A1]),
    ("Name LIKE '%E_'", [A2]),
    ("Industry = null", []),
    ("Description = null", [A1, A2]),
    ("Description != null", [A4]),
    ("Industry = 'technology'", [A1, A4]),
    ("Name = 'Acme' OR Name = 'Globex'", [A1, A2]),
    ("Name = 'Acme' AND Industry = 'Technology'", [A1]),
    ("(Name = 'Acme' OR Name = 'Globex') AND AnnualRevenue > 600", [A1]),
    ("NOT Name = 'Acme'", [A2, A4]),
    ("NOT (Name = 'Acme' OR AnnualRevenue < 600)", [A4]),
    ("IsDeleted = false", [A1, A2, A4]),
    ("Type = 'Customer - Direct'", [A1]),
])
def test_where_operators(db, where, expected):
    assert ids(db, f"SELECT Id FROM Account WHERE {where} ORDER BY Id") == expected


@pytest.mark.parametrize("where, expected", [
    # SOQL's two-valued logic: a comparison with a null field is simply false
    ("AnnualRevenue != 500", [A1, A4]),
    ("NOT AnnualRevenue = 500", [A1, A4]),
    ("NOT AnnualRevenue != 500", [A2]),
    ("NOT AnnualRevenue > 600", [A2, A4]),
    ("AnnualRevenue NOT IN (500)", [A1, A4]),
    ("NOT AnnualRevenue IN (500)", [A1, A4]),
    ("NOT AnnualRevenue NOT IN (500)", [A2]),
    ("NOT Industry LIKE 'tech%'", [A2]),
    ("NOT (Industry = null)", [A1, A2, A4]),
    ("NOT (NOT (AnnualRevenue > 600))", [A1]),
    ("NOT (AnnualRevenue > 600 AND Industry = 'Technology')", [A2, A4]),
    ("Parent.Name != 'Acme'", [A1, A4]),
    ("NOT Parent.Name = 'Acme'", [A1, A4]),
])
def test_null_logic(db, where, expected):
    assert ids(db, f"SELECT Id FROM Account WHERE {where} ORDER BY Id") == expected


def test_like_is_case_insensitive_and_escapes(db):
    assert ids(db, "SELECT Id FROM Account WHERE Name LIKE '100\\% pure\\_%'") == [A4]
    assert ids(db, "SELECT Id FROM Account WHERE Name LIKE '100\\%_Pure%'") == [A4]
    assert ids(db, "SELECT Id FROM Account WHERE Name LIKE '100\\%Pure%'") == []
    assert ids(db, "SELECT Id FROM Account WHERE Name LIKE '%\\_%'") == [A4]
    assert ids(db, "SELECT Id FROM Account WHERE Description LIKE 'back\\\\slash'") == [A4]
    assert ids(db, "SELECT Id FROM Account WHERE Description = 'BACK\\\\SLASH'") == [A4]


def test_string_escapes(db):
    db.execute('UPDATE Contact SET Department = ? WHERE Id = ?', ("O'Brien \"x\"\n\t", C2))
    try:
        assert ids(db, "SELECT Id FROM Contact WHERE Department = 'O\\'Brien \\\"x\\\"\\n\\t'") == [C2]
    finally:
        db.execute('UPDATE Contact SET Department = NULL WHERE Id = ?', (C2,))
    e = err("SELECT Id FROM Contact WHERE Department = 'bad \\q'")
    assert e.code == "MALFORMED_QUERY"


def test_id_literals_15_and_18(db):
    assert ids(db, f"SELECT Id FROM Account WHERE Id IN ('{A1[:15]}', '{A2}') ORDER BY Id") == [A1, A2]
    assert ids(db, f"SELECT Id FROM Account WHERE Id = '{A1[:15]}{A1[15:].lower()}'") == [A1]
    assert ids(db, f"SELECT Id FROM Contact WHERE AccountId = '{A1[:15]}'") == [C1]
    assert ids(db, f"SELECT Id FROM Contact WHERE AccountId != '{A1}' ORDER BY Id") == [C2, C3]
    assert ids(db, f"SELECT Id FROM Account WHERE Id > '{A1}' ORDER BY Id") == [A2, A4]


def test_malformed_id_literal():
    e = err("SELECT Id FROM Account WHERE Id = '001xyz'")
    assert (e.status, e.code, e.message) == (400, "INVALID_QUERY_FILTER_OPERATOR",
                                             "invalid ID field: 001xyz")
    bad = A1[:15] + "ZZZ"
    e = err(f"SELECT Id FROM Contact WHERE AccountId IN ('{A1}', '{bad}')")
    assert e.message == f"invalid ID field: {bad}"


def test_semi_join_and_anti_join(db):
    assert ids(db, "SELECT Id FROM Contact WHERE AccountId IN "
                   "(SELECT Id FROM Account WHERE Industry = 'technology')") == [C1]
    assert ids(db, "SELECT Id FROM Contact WHERE AccountId NOT IN "
                   "(SELECT Id FROM Account WHERE Industry = 'technology') ORDER BY Id") == [C2, C3]
    assert ids(db, "SELECT Id FROM Account WHERE Id IN (SELECT AccountId FROM Opportunity "
                   "WHERE Amount > 50) ") == [A1]
    e = err("SELECT Id FROM Contact WHERE LastName IN (SELECT Id FROM Account)")
    assert e.code == "INVALID_FIELD"


def test_includes_excludes_on_multipicklist():
    schema = demo_schema()
    from include.salesforce_emulator.schema import Field
    acc = schema.get("Account")
    acc.fields["Regions__c"] = Field("Regions__c", "multipicklist", custom=True,
                                     picklist=["AMER", "EMEA", "APAC"])
    acc.reindex()
    conn = sqlite3.connect(":memory:")
    storage.create_tables(conn, schema)
    for i, value in enumerate(["AMER;EMEA", "APAC", None], 1):
        _insert(conn, "Account", Id=make_id("001", i), Name=f"A{i}", Regions__c=value)

    def run(where):
        p = prepare(f"SELECT Id FROM Account WHERE {where} ORDER BY Id", schema, now=NOW,
                    include_deleted=False)
        return [r["Id"] for r in p.records(conn, p.rowids(conn), V)]

    a1, a2, a3 = (make_id("001", i) for i in (1, 2, 3))
    assert run("Regions__c INCLUDES ('emea')") == [a1]
    assert run("Regions__c INCLUDES ('AMER;EMEA', 'APAC')") == [a1, a2]
    assert run("Regions__c INCLUDES ('AMER;APAC')") == []
    assert run("Regions__c EXCLUDES ('AMER')") == [a2, a3]
    assert run("NOT Regions__c INCLUDES ('AMER')") == [a2, a3]
    e = err("SELECT Id FROM Account WHERE Name INCLUDES ('x')")
    assert e.code == "INVALID_QUERY_FILTER_OPERATOR"


# --- dates and datetimes ------------------------------------------------------------------------

@pytest.mark.parametrize("literal", [
    "2026-01-05T10:00:00Z", "2026-01-05T10:00:00+00:00", "2026-01-05T10:00:00.000+00:00",
    "2026-01-05T10:00:00.000000Z", "2026-01-05T05:00:00-05:00", "2026-01-05T15:30:00+05:30",
    "2026-01-05T10:00:00+0000",
])
def test_datetime_literal_forms(db, literal):
    assert ids(db, f"SELECT Id FROM Account WHERE SystemModstamp = {literal}") == [A2]
    assert ids(db, f"SELECT Id FROM Account WHERE SystemModstamp >= {literal} ORDER BY Id") == [A2, A4]


def test_fractional_seconds_compare_exactly(db):
    assert ids(db, "SELECT Id FROM Account WHERE SystemModstamp > 2026-01-05T09:59:59.500Z "
                   "ORDER BY Id") == [A2, A4]
    assert ids(db, "SELECT Id FROM Account WHERE SystemModstamp > 2026-01-05T10:00:00.500Z") == [A4]
    assert ids(db, "SELECT Id FROM Account WHERE SystemModstamp <= 2026-01-05T10:00:00.500Z "
                   "ORDER BY Id") == [A1, A2]
    assert ids(db, "SELECT Id FROM Account WHERE SystemModstamp = 2026-01-05T10:00:00.500Z") == []


def test_date_literals(db):
    assert ids(db, "SELECT Id FROM Contact WHERE Birthdate = 1990-05-01") == [C1]
    assert ids(db, "SELECT Id FROM Contact WHERE Birthdate > 1990-05-01") == [C3]
    assert ids(db, "SELECT Id FROM Opportunity WHERE CloseDate < 2026-01-01") == [O3]


def test_date_vs_datetime_literal_mismatch():
    e = err("SELECT Id FROM Account WHERE SystemModstamp > 2026-01-01")
    assert e.code == "INVALID_QUERY_FILTER_OPERATOR"
    assert e.message.endswith("value of filter criterion for field 'SystemModstamp' must be of "
                              "type dateTime and should not be enclosed in quotes")
    e = err("SELECT Id FROM Contact WHERE Birthdate > 2026-01-01T00:00:00Z")
    assert e.code == "INVALID_QUERY_FILTER_OPERATOR"
    assert "must be of type date and" in e.message


def test_quoted_datetime_and_date():
    soql = "SELECT Id FROM Account WHERE SystemModstamp > '2026-01-01T00:00:00Z'"
    e = err(soql)
    assert (e.status, e.code) == (400, "INVALID_QUERY_FILTER_OPERATOR")
    assert e.message == header(soql, 47) + (
        "value of filter criterion for field 'SystemModstamp' must be of type dateTime and "
        "should not be enclosed in quotes")
    e = err("SELECT Id FROM Opportunity WHERE CloseDate = '2026-01-01'")
    assert e.message.endswith("value of filter criterion for field 'CloseDate' must be of type "
                              "date and should not be enclosed in quotes")


def test_other_type_mismatches():
    assert "must be of type boolean" in err("SELECT Id FROM Account WHERE IsDeleted = 'true'").message
    assert "must be of type string and should be enclosed in quotes" in \
        err("SELECT Id FROM Account WHERE Name = 5").message
    assert "must be of type double" in err("SELECT Id FROM Account WHERE AnnualRevenue = '5'").message


def test_raw_space_in_datetime_is_malformed():
    e = err("SELECT Id FROM Account WHERE SystemModstamp > 2026-01-01T00:00:00 00:00")
    assert e.code == "MALFORMED_QUERY"
    assert "no viable alternative at character ' '" in e.message
    assert err("SELECT Id FROM Account WHERE SystemModstamp > 2026-01-01T00:00 ").code == \
        "MALFORMED_QUERY"


@pytest.mark.parametrize("where, expected", [
    ("CreatedDate = TODAY", [A4]),
    ("CreatedDate = YESTERDAY", []),
    ("CreatedDate < TODAY", [A1, A2]),
    ("CreatedDate > TODAY", []),
    ("CreatedDate <= TODAY", [A1, A2, A4]),
    ("CreatedDate >= TODAY", [A4]),
    ("CreatedDate != TODAY", [A1, A2]),
    ("CreatedDate = THIS_WEEK", [A4]),
    ("CreatedDate = LAST_WEEK", []),
    ("CreatedDate = THIS_MONTH", [A4]),
    ("CreatedDate = LAST_MONTH", []),
    ("CreatedDate = THIS_YEAR", [A1, A2, A4]),
    ("CreatedDate = LAST_YEAR", []),
    ("CreatedDate = LAST_N_DAYS:58", [A2, A4]),
    ("CreatedDate = LAST_N_DAYS:60", [A2, A4]),
    ("CreatedDate = LAST_N_DAYS:61", [A1, A2, A4]),
    ("CreatedDate = N_DAYS_AGO:58", [A2]),
    ("CreatedDate = LAST_N_HOURS:2", [A4]),
    ("CreatedDate = LAST_N_HOURS:0", []),
    ("CreatedDate = LAST_90_DAYS", [A1, A2, A4]),
    ("CreatedDate = NEXT_90_DAYS", []),
    ("CreatedDate = THIS_QUARTER", [A1, A2, A4]),
])
def test_relative_date_literals_on_datetime(db, where, expected):
    assert ids(db, f"SELECT Id FROM Account WHERE {where} ORDER BY Id") == expected


@pytest.mark.parametrize("where, expected", [
    ("CloseDate = TODAY", [O1]),
    ("CloseDate = TOMORROW", []),
    ("CloseDate = NEXT_N_DAYS:6", [O2]),
    ("CloseDate = NEXT_N_DAYS:5", []),
    ("CloseDate = NEXT_WEEK", [O2]),
    ("CloseDate = LAST_YEAR", [O3]),
    ("CloseDate > THIS_WEEK", [O2]),
    ("CloseDate = NEXT_N_HOURS:24", [O1]),
    ("CloseDate = LAST_N_MONTHS:3", [O3]),
    ("CloseDate = NEXT_MONTH", []),
])
def test_relative_date_literals_on_date(db, where, expected):
    assert ids(db, f"SELECT Id FROM Opportunity WHERE {where} ORDER BY Id") == expected


def test_relative_literal_on_wrong_type():
    assert err("SELECT Id FROM Account WHERE Name = TODAY").code == "INVALID_QUERY_FILTER_OPERATOR"


# --- ORDER BY / LIMIT / OFFSET ---------------------------------------------------------------------

def test_order_by_nulls_and_multiple_keys(db):
    assert ids(db, "SELECT Id FROM Account ORDER BY Industry, Id") == [A2, A1, A4]
    assert ids(db, "SELECT Id FROM Account ORDER BY AnnualRevenue") == [A4, A2, A1]
    assert ids(db, "SELECT Id FROM Account ORDER BY AnnualRevenue DESC") == [A1, A2, A4]
    assert ids(db, "SELECT Id FROM Account ORDER BY AnnualRevenue ASC NULLS LAST") == [A2, A1, A4]
    assert ids(db, "SELECT Id FROM Account ORDER BY AnnualRevenue DESC NULLS FIRST") == [A4, A1, A2]
    # text order is case-insensitive; rowid breaks ties
    assert ids(db, "SELECT Id FROM Account ORDER BY Industry DESC, Name") == [A4, A1, A2]
    assert ids(db, "SELECT Id FROM Contact ORDER BY LastName") == [C1, C3, C2]
    assert ids(db, "SELECT Id FROM Contact ORDER BY Account.Name DESC NULLS LAST, Id") == [C3, C1, C2]


def test_limit_offset_and_total(db):
    p = prep("SELECT Id FROM Account ORDER BY Name LIMIT 2 OFFSET 1")
    assert p.total(db) == 2
    assert [r["Id"] for r in p.records(db, p.rowids(db), V)] == [A1, A2]
    p = prep("SELECT Id FROM Account OFFSET 2")
    assert p.total(db) == 1 and len(p.rowids(db)) == 1
    p = prep("SELECT Id FROM Account LIMIT 0")
    assert p.total(db) == 0 and p.rowids(db) == []
    assert prep("SELECT Id FROM Account OFFSET 2000").total(db) == 0
    e = err("SELECT Id FROM Account OFFSET 2001")
    assert (e.code, e.message) == ("NUMBER_OUTSIDE_VALID_RANGE", "Maximum SOQL offset allowed is 2000")


# --- COUNT() and aggregates -------------------------------------------------------------------------

def test_count(db):
    p = prep("SELECT COUNT() FROM Account")
    assert p.count_only and p.total(db) == 3 and p.rowids(db) == []
    assert prep("select count() from Account where Industry = 'technology'").total(db) == 2
    assert prep("SELECT COUNT() FROM Account LIMIT 1").total(db) == 1
    assert prep("SELECT COUNT() FROM Account", include_deleted=True).total(db) == 4


def test_aggregates(db):
    p = prep("SELECT COUNT(Id), MAX(SystemModstamp), MIN(Name) low, SUM(AnnualRevenue), "
             "AVG(AnnualRevenue), COUNT_DISTINCT(Industry) FROM Account")
    assert p.is_aggregate and not p.count_only
    assert p.columns == ["expr0", "expr1", "low", "expr2", "expr3", "expr4"]
    assert p.aggregate_records(db) == [{
        "attributes": {"type": "AggregateResult"}, "expr0": 3,
        "expr1": "2026-03-04T11:00:00.000+0000", "low": "100% Pure_Co", "expr2": 1500.0,
        "expr3": 750.0, "expr4": 2}]
    assert p.total(db) == 1


def test_group_by_having_order(db):
    p = prep("SELECT AccountId, COUNT(Id) n, SUM(Amount) FROM Opportunity GROUP BY AccountId "
             "HAVING COUNT(Id) > 0 ORDER BY COUNT(Id) DESC")
    assert p.aggregate_records(db) == [
        {"attributes": {"type": "AggregateResult"}, "AccountId": A1, "n": 2, "expr0": 400.0},
        {"attributes": {"type": "AggregateResult"}, "AccountId": A2, "n": 1, "expr0": None}]
    p = prep("SELECT Account.Name, COUNT(Id) FROM Opportunity GROUP BY Account.Name "
             "HAVING COUNT(Id) > 1")
    assert p.aggregate_records(db) == [
        {"attributes": {"type": "AggregateResult"}, "Name": "Acme", "expr0": 2}]
    assert prep("SELECT StageName FROM Opportunity GROUP BY StageName").total(db) == 2
    e = err("SELECT Name, COUNT(Id) FROM Opportunity GROUP BY StageName")
    assert e.code == "MALFORMED_QUERY" and "Field must be grouped or aggregated: Name" in e.message


# --- FIELDS() ----------------------------------------------------------------------------------------

def test_fields_functions(db):
    p = prep("SELECT FIELDS(ALL) FROM Account LIMIT 200")
    assert p.columns[:3] == ["Id", "OwnerId", "IsDeleted"]
    assert "Credit_Limit__c" not in p.columns          # hidden by FLS
    assert "Customer_Tier__c" in p.columns
    assert prep("SELECT FIELDS(CUSTOM) FROM Account LIMIT 10").columns == ["Customer_Tier__c"]
    std = prep("SELECT FIELDS(STANDARD) FROM Account").columns
    assert "Customer_Tier__c" not in std and "Name" in std
    assert len(p.records(db, p.rowids(db), V)[0]) == len(p.columns) + 1
    assert prep("SELECT Name, FIELDS(CUSTOM) FROM Account LIMIT 1").columns == ["Name", "Customer_Tier__c"]


@pytest.mark.parametrize("soql", ["SELECT FIELDS(ALL) FROM Account",
                                  "SELECT FIELDS(CUSTOM) FROM Account LIMIT 201"])
def test_fields_needs_limit(soql):
    e = err(soql)
    assert (e.code, e.message) == ("MALFORMED_QUERY",
                                   "The SOQL FIELDS function must have a LIMIT of at most 200")


def test_duplicate_field():
    e = err("SELECT Id, FIELDS(ALL) FROM Account LIMIT 200")
    assert (e.code, e.message) == ("MALFORMED_QUERY", "duplicate field selected: Id")
    assert err("SELECT Name, name FROM Account").message == "duplicate field selected: Name"


# --- deleted / archived ---------------------------------------------------------------------------

def test_deleted_and_archived_rows(db):
    assert A3 not in ids(db, "SELECT Id FROM Account")
    assert A3 in ids(db, "SELECT Id FROM Account", include_deleted=True)
    assert ids(db, "SELECT Id FROM Task ORDER BY Id") == [T1]
    assert ids(db, "SELECT Id FROM Task ORDER BY Id", include_deleted=True) == [T1, T2, T3]
    assert ids(db, "SELECT Id FROM Task WHERE Subject != null") == [T1]
    assert ids(db, "SELECT Id FROM Account WHERE IsDeleted = true", include_deleted=True) == [A3]
    assert prep("SELECT COUNT() FROM Task", include_deleted=True).total(db) == 3


# --- child subqueries -------------------------------------------------------------------------

def test_child_subquery(db):
    out = recs(db, "SELECT Id, (SELECT LastName FROM Contacts ORDER BY LastName), "
                   "(SELECT Name, Amount FROM Opportunities WHERE Amount > 150) FROM Account "
                   "ORDER BY Id")
    assert out[0]["Contacts"] == {"totalSize": 1, "done": True, "records": [
        {"attributes": {"type": "Contact", "url": f"/services/data/v59.0/sobjects/Contact/{C1}"},
         "LastName": "Doe"}]}
    assert out[0]["Opportunities"]["records"][0]["Name"] == "O2"
    assert out[1]["Opportunities"] is None
    assert out[2]["Contacts"] is None
    e = err("SELECT Id, (SELECT Id FROM Bacons) FROM Account")
    assert e.code == "INVALID_TYPE" and "Didn't understand relationship 'Bacons'" in e.message


# --- Bulk -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("soql", [
    "SELECT Industry FROM Account GROUP BY Industry",
    "SELECT Id FROM Account OFFSET 5",
    "SELECT COUNT() FROM Account",
    "SELECT COUNT(Id) FROM Account",
    "SELECT FIELDS(STANDARD) FROM Account",
    "SELECT Id, (SELECT Id FROM Contacts) FROM Account",
])
def test_bulk_rejections(soql):
    e = err(soql, bulk=True)
    assert (e.status, e.code) == (400, "INVALIDJOB")
    prep(soql)   # fine over REST


def test_csv_rows(db):
    p = prep("SELECT Id, LastName, Account.Name, Owner.Email, HasOptedOutOfEmail, "
             "SystemModstamp, Account.AnnualRevenue FROM Contact ORDER BY Id", bulk=True)
    assert p.columns == ["Id", "LastName", "Account.Name", "Owner.Email", "HasOptedOutOfEmail",
                         "SystemModstamp", "Account.AnnualRevenue"]
    assert p.csv_rows(db, p.rowids(db)) == [
        [C1, "Doe", "Acme", "guy@x.com", "true", "2026-03-01T00:00:00.000Z", "1000.0"],
        [C2, "roe", "", "ann@x.com", "false", "2026-03-02T00:00:00.000Z", ""],
        [C3, "Poe", "Globex", "guy@x.com", "false", "2026-03-03T00:00:00.000Z", "500.0"],
    ]
    p = prep("SELECT Id, Who.Type, Who.Name, What.Name FROM Task", include_deleted=True, bulk=True)
    assert p.csv_rows(db, p.rowids(db)) == [[T1, "Contact", "Jane Doe", "Acme"],
                                            [T2, "Lead", "Lead1", ""], [T3, "", "", ""]]


# --- errors -----------------------------------------------------------------------------------

def test_unknown_field_message_exact():
    soql = "SELECT Bacon__c FROM Account LIMIT 2"
    e = err(soql)
    assert (e.status, e.code) == (400, "INVALID_FIELD")
    assert e.message == (
        "\nSELECT Bacon__c FROM Account LIMIT 2\n       ^\nERROR at Row:1:Column:8\nNo such column "
        "'Bacon__c' on entity 'Account'. If you are attempting to use a custom field, be sure to "
        "append the '__c' after the custom field name. Please reference your WSDL or the describe "
        "call for the appropriate names.")


def test_unknown_object_message_exact():
    e = err("select count() from XYZZY")
    assert (e.status, e.code) == (400, "INVALID_TYPE")
    assert e.message == (
        "\nselect count() from XYZZY\n                    ^\nERROR at Row:1:Column:21\nsObject type "
        "'XYZZY' is not supported. If you are attempting to use a custom object, be sure to append "
        "the '__c' after the entity name. Please reference your WSDL or the describe call for the "
        "appropriate names.")


def test_unknown_relationship_message():
    soql = "SELECT Id, Foo.Name FROM Contact"
    e = err(soql)
    assert e.code == "INVALID_FIELD"
    assert e.message == header(soql, 12) + (
        "Didn't understand relationship 'Foo' in field path. If you are attempting to use a custom "
        "relationship, be sure to append the '__r' after the custom relationship name. Please "
        "reference your WSDL or the describe call for the appropriate names.")
    # a reference field's own name is not a relationship
    assert "relationship 'AccountId'" in err("SELECT AccountId.Name FROM Contact").message


def test_multiline_error_position():
    soql = "SELECT Id,\n  Name\nFROM Account\nWHERE  Bacon__c = 1"
    e = err(soql)
    assert e.code == "INVALID_FIELD"
    assert e.message.startswith("\nWHERE  Bacon__c = 1\n       ^\nERROR at Row:4:Column:8\n"
                                "No such column 'Bacon__c' on entity 'Account'.")


@pytest.mark.parametrize("soql, name, entity", [
    ("SELECT Credit_Limit__c FROM Account", "Credit_Limit__c", "Account"),
    ("SELECT Id FROM Account WHERE Credit_Limit__c > 5", "Credit_Limit__c", "Account"),
    ("SELECT Id FROM Account ORDER BY Credit_Limit__c", "Credit_Limit__c", "Account"),
    ("SELECT Account.Credit_Limit__c FROM Contact", "Credit_Limit__c", "Account"),
    ("SELECT Internal_Notes__c FROM Lead", "Internal_Notes__c", "Lead"),
    ("SELECT Id FROM Account GROUP BY Credit_Limit__c", "Credit_Limit__c", "Account"),
])
def test_hidden_fields_are_nonexistent(soql, name, entity):
    e = err(soql)
    assert e.code == "INVALID_FIELD"
    assert f"\nNo such column '{name}' on entity '{entity}'. If you are" in e.message


@pytest.mark.parametrize("soql, message", [
    ("SELEKT Id FROM Account", "unexpected token: SELEKT"),
    ("SELECT Id FROM Account WHERE", None),
    ("SELECT Id FROM Account WHERE Name = 'x' OR Name = 'y' AND Name = 'z'", None),
    ("SELECT Id FROM Account LIMIT 'x'", None),
    ("SELECT Id Account", None),
    ("SELECT Id FROM Account WHERE Name = 'unterminated", None),
    ("SELECT * FROM Account", None),
    ("SELECT Id FROM Account WHERE Name = :bind", None),
    ("SELECT Id FROM Account WHERE Name > null", None),
    ("SELECT Id FROM Account extra junk", None),
    ("SELECT COUNT(), Id FROM Account", None),
    ("SELECT Id, CALENDAR_YEAR(CreatedDate) FROM Account", None),
    ("SELECT Id FROM Account WHERE CreatedDate > 2026-13-45T00:00:00Z", None),
    ("", None),
    ("   ", None),
])
def test_malformed_queries(soql, message):
    e = err(soql)
    assert (e.status, e.code) == (400, "MALFORMED_QUERY")
    if message is not None:
        assert e.message == message


def test_no_python_exception_escapes():
    for soql in ["SELECT Id FROM Account WHERE " + "(" * 3000 + "Name = 'x'" + ")" * 3000,
                 "SELECT Id FROM Account WHERE Name = '\\u00e9'",
                 "SELECT Id FROM Account ORDER BY",
                 "SELECT Id FROM Account WHERE Id IN ()",
                 "SELECT (SELECT Id FROM Contacts FROM Account"]:
        try:
            prep(soql)
        except ApiError as e:
            assert e.code == "MALFORMED_QUERY"


def test_prepared_methods_wrap_sqlite_errors():
    conn = sqlite3.connect(":memory:")     # no tables at all
    p = prep("SELECT Id FROM Account")
    with pytest.raises(ApiError) as info:
        p.rowids(conn)
    assert info.value.code == "MALFORMED_QUERY"


# --- scale ---------------------------------------------------------------------------------------

def test_rowids_scale():
    conn = sqlite3.connect(":memory:")
    storage.create_tables(conn, SCHEMA)
    n = 200_000
    # ids "00Q5e" + 10 digits: only the 'Q' is upper case, so the checksum is always "EAA"
    conn.execute(
        'WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < ?) '
        'INSERT INTO "Lead" (Id, LastName, Company, Status, SystemModstamp, IsDeleted) '
        "SELECT printf('00Q5e%010dEAA', i), 'L', 'C', 'Open - Not Contacted', "
        "printf('2026-01-%02dT00:00:00', 1 + i % 28), i % 100 = 0 FROM c", (n,))
    assert make_id("00Q", 0) == "00Q5e0000000000EAA"
    p = prep("SELECT Id, LastName FROM Lead WHERE SystemModstamp >= 2026-01-01T00:00:00Z "
             "ORDER BY SystemModstamp, Id")
    rows = p.rowids(conn)
    assert len(rows) == p.total(conn) == n - n // 100
    page = p.records(conn, rows[:2000], V)
    assert len(page) == 2000 and page[0]["attributes"]["type"] == "Lead"
    stamps = [r["Id"] for r in p.records(conn, rows[:3], V)]
    assert stamps == sorted(stamps)
    assert len(prep("SELECT Id FROM Lead").rowids(conn)) == n - n // 100

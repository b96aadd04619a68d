"""Org profiles other than the demo: ``standard`` (a fresh Enterprise org) and ``mature`` (record
types, person accounts, long text, multi-select, geolocation, a custom child of Lead, an object
the sync user cannot see), seen through real clients; sandbox logins."""

from __future__ import annotations

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed, SalesforceMalformedRequest

from include.salesforce_emulator.seed import parse_spec, seed_org
from include.salesforce_emulator.store import Org
from tests.fixtures_emulator import Emulator, start_emulator_server


@pytest.fixture(scope="module")
def standard(tmp_path_factory):
    server, info = start_emulator_server(tmp_path_factory.mktemp("standard"), seed="standard")
    yield Emulator(server, info)
    server.stop()


@pytest.fixture(scope="module")
def mature(tmp_path_factory):
    server, info = start_emulator_server(tmp_path_factory.mktemp("mature"), seed="mature")
    yield Emulator(server, info)
    server.stop()


def _bulk_create(emu: Emulator, soql: str) -> requests.Response:
    sf = emu.salesforce()
    return requests.post(f"https://{sf.sf_instance}/services/data/v59.0/jobs/query",
                         json={"operation": "query", "query": soql},
                         headers={"Authorization": "Bearer " + sf.session_id},
                         verify=emu.info["ca_bundle"], timeout=30)


def test_seed_specs_name_a_profile_and_a_size():
    assert parse_spec("demo") == ("demo", "demo")
    assert parse_spec(50000) == ("demo", 50000)
    assert parse_spec("standard") == ("standard", "demo")
    assert parse_spec("standard:50_000") == ("standard", 50000)
    assert parse_spec("mature:empty") == ("mature", "empty")
    for bad in ("enterprise", "standard:lots", "standard:"):
        with pytest.raises(ValueError, match="seed must be"):
            parse_spec(bad)


def test_a_standard_org_has_no_custom_object_or_field(standard):
    sf = standard.salesforce()
    names = {o["name"] for o in sf.describe()["sobjects"]}
    assert {"Lead", "Contact", "Account", "Task", "Event", "CampaignMember"} <= names
    assert not [n for n in names if n.endswith("__c")]
    for name in ("Lead", "Contact", "Account", "Opportunity", "Campaign", "Task", "Event"):
        fields = getattr(sf, name).describe()["fields"]
        assert not [f["name"] for f in fields if f["custom"]], name
        what = [f for f in fields if f["name"] == "WhatId"]
        assert not what or not [t for t in what[0]["referenceTo"] if t.endswith("__c")]
    assert sf.query("SELECT Name, IsSandbox FROM Organization")["records"][0]["Name"] == \
        "Standard Enterprise Org"
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] > 100


def test_compound_fields_are_objects_in_rest_and_refused_by_bulk(standard):
    sf = standard.salesforce()
    fields = {f["name"]: f for f in sf.Account.describe()["fields"]}
    assert fields["BillingAddress"]["type"] == "address"
    assert not fields["BillingAddress"]["createable"] and not fields["BillingAddress"]["filterable"]
    assert {n for n, f in fields.items() if f["compoundFieldName"] == "BillingAddress"} == {
        "BillingStreet", "BillingCity", "BillingState", "BillingPostalCode", "BillingCountry",
        "BillingLatitude", "BillingLongitude", "BillingGeocodeAccuracy"}
    rows = sf.query("SELECT Id, BillingCity, BillingLatitude, BillingAddress FROM Account "
                    "WHERE BillingCity != null AND BillingLatitude != null LIMIT 5")["records"]
    assert rows
    for row in rows:
        address = row["BillingAddress"]
        assert address["city"] == row["BillingCity"]
        assert address["latitude"] == row["BillingLatitude"]
        assert set(address) == {"street", "city", "state", "postalCode", "country", "latitude",
                                "longitude", "geocodeAccuracy"}
    empty = sf.query("SELECT Address FROM Lead WHERE Street = null AND City = null AND "
                     "Country = null AND Latitude = null LIMIT 1")["records"]
    assert not empty or empty[0]["Address"] is None

    refused = _bulk_create(standard, "SELECT Id, BillingAddress FROM Account")
    assert refused.status_code == 400, refused.text
    assert refused.json()[0]["errorCode"] == "FUNCTIONALITY_NOT_ENABLED"
    assert "compound" in refused.json()[0]["message"]
    assert _bulk_create(standard, "SELECT Id, BillingCity FROM Account").status_code == 200
    with pytest.raises(SalesforceMalformedRequest, match="can not be filtered"):
        sf.query("SELECT Id FROM Account WHERE BillingAddress != null")


def test_a_mature_org_has_what_orgs_we_did_not_design_have(mature):
    sf = mature.salesforce()
    lead_fields = {f["name"]: f for f in sf.Lead.describe()["fields"]}
    assert lead_fields["Product_Interest__c"]["type"] == "multipicklist"
    assert lead_fields["Conversation_Notes__c"]["length"] == 131072
    assert lead_fields["RecordTypeId"]["referenceTo"] == ["RecordType"]
    multi = sf.query("SELECT Product_Interest__c FROM Lead WHERE Product_Interest__c != null "
                     "LIMIT 50")["records"]
    assert any(";" in r["Product_Interest__c"] for r in multi)
    long_notes = [r for r in sf.query_all("SELECT Id, Conversation_Notes__c FROM Contact WHERE "
                                          "Conversation_Notes__c != null")["records"]
                  if len(r["Conversation_Notes__c"]) > 32768]
    assert long_notes
    typed = sf.query("SELECT COUNT() FROM Lead WHERE RecordTypeId != null")["totalSize"]
    assert typed > 0
    people = sf.query("SELECT Id, AccountId FROM Contact WHERE IsPersonAccount = true")
    assert people["totalSize"] >= 1
    account = sf.Account.get(people["records"][0]["AccountId"])
    assert account["IsPersonAccount"] and account["PersonContactId"] == people["records"][0]["Id"]
    hq = sf.query("SELECT Headquarters__c, Headquarters__Latitude__s FROM Account WHERE "
                  "Headquarters__Latitude__s != null LIMIT 1")["records"][0]
    assert hq["Headquarters__c"]["latitude"] == hq["Headquarters__Latitude__s"]
    assert set(hq["Headquarters__c"]) == {"latitude", "longitude"}
    assert _bulk_create(mature, "SELECT Id, Headquarters__c FROM Account").status_code == 400


def test_a_custom_child_of_lead_goes_with_its_lead(mature):
    sf = mature.salesforce()
    child = sf.query("SELECT Id, Name, Lead__c FROM Trial_Request__c LIMIT 1")["records"][0]
    assert child["Name"].startswith("TR-")
    sf.Lead.delete(child["Lead__c"])
    assert sf.query(f"SELECT COUNT() FROM Trial_Request__c WHERE Lead__c = "
                    f"'{child['Lead__c']}'")["totalSize"] == 0
    gone = sf.query_all(f"SELECT Id, IsDeleted FROM Trial_Request__c WHERE Id = '{child['Id']}'",
                        include_deleted=True)  # queryAll: the recycle bin
    assert gone["records"][0]["IsDeleted"] is True


def test_an_object_the_sync_user_cannot_see_does_not_exist_for_it(mature):
    sf = mature.salesforce()
    assert "Commission__c" not in {o["name"] for o in sf.describe()["sobjects"]}
    with pytest.raises(SalesforceMalformedRequest, match="INVALID_TYPE"):
        sf.query("SELECT Id FROM Commission__c")
    resp = requests.get(f"https://{sf.sf_instance}/services/data/v59.0/sobjects/Commission__c/"
                        "describe", headers={"Authorization": "Bearer " + sf.session_id},
                        verify=mature.info["ca_bundle"], timeout=30)
    assert resp.status_code == 404
    # ... while the org holds its records (the emulator's export is the true state)
    assert mature.control("GET", "/export", params={"objects": "Commission__c"})["Commission__c"]


def test_reseeding_changes_the_org_shape_and_it_survives_a_restart(tmp_path):
    org = Org(tmp_path)
    seed_org(org, "mature:empty")
    assert org.profile == "mature" and "Trial_Request__c" in org.schema.objects
    seed_org(org, "standard:empty")
    assert "Trial_Request__c" not in org.schema.objects
    assert "Do_Not_Sync_Marketing__c" not in org.schema.objects["Lead"].fields
    reopened = Org(tmp_path)
    assert reopened.profile == "standard"
    assert "Do_Not_Sync_Marketing__c" not in reopened.schema.objects["Lead"].fields
    assert "Address" in reopened.schema.objects["Lead"].fields


def test_sandbox_logins_go_through_the_test_domain(tmp_path):
    server, info = start_emulator_server(tmp_path / "sandbox", seed="standard:empty")
    try:
        emu = Emulator(server, info)
        host = info["login_domain"].rsplit("/", 1)[0]
        login = {"username": info["username"], "password": info["password"],
                 "security_token": info["security_token"]}
        with pytest.raises(SalesforceAuthenticationFailed):  # production: test.salesforce.com
            Salesforce(domain=f"{host}/test", **login)
        emu.control("PATCH", "/settings", json={"sandbox": True})
        sf = Salesforce(domain=f"{host}/test", **login)
        assert sf.query("SELECT IsSandbox FROM Organization")["records"][0]["IsSandbox"] is True
        with pytest.raises(SalesforceAuthenticationFailed):  # a sandbox: not login.salesforce.com
            Salesforce(domain=f"{host}/login", **login)
        Salesforce(domain=info["login_domain"], **login)  # a My Domain serves either
    finally:
        server.stop()

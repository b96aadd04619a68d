"""Every error the emulator answers has Salesforce's shape: REST envelope, per-record
``statusCode``, HTTP status, and the exception simple-salesforce maps it to."""

from __future__ import annotations

import time
import uuid

import pytest
import requests
from simple_salesforce.exceptions import (
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)


def _code(exc_info) -> str:
    return exc_info.value.content[0]["errorCode"]


def _raw(emulator, sf, method, path, **kwargs):
    """A raw call with the client's session, to check status codes and headers exactly."""
    headers = {"Authorization": f"Bearer {sf.session_id}", "Content-Type": "application/json"}
    return requests.request(method, emulator.info["instance_url"] + path, headers=headers,
                            timeout=30, **kwargs)


@pytest.mark.parametrize("soql, code, fragment", [
    ("SELEKT Id FROM Lead", "MALFORMED_QUERY", "unexpected token"),
    ("SELECT Bacon__c FROM Lead", "INVALID_FIELD", "No such column 'Bacon__c' on entity 'Lead'"),
    ("SELECT Internal_Notes__c FROM Lead", "INVALID_FIELD", "No such column"),  # hidden by FLS
    ("SELECT Id FROM Xyzzy", "INVALID_TYPE", "sObject type 'Xyzzy' is not supported"),
    ("SELECT Id FROM Lead WHERE SystemModstamp > '2026-01-01T00:00:00Z'",
     "INVALID_QUERY_FILTER_OPERATOR", "must be of type dateTime"),
    ("SELECT Id FROM Lead WHERE SystemModstamp > 2026-01-01T00:00:00 00:00", "MALFORMED_QUERY",
     "no viable alternative at character ' '"),
])
def test_query_errors(sf, soql, code, fragment):
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.query(soql)
    assert _code(err) == code
    assert fragment in err.value.content[0]["message"]


def test_invalid_field_message_points_at_the_column(sf):
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.query("SELECT Bacon__c FROM Account LIMIT 2")
    assert err.value.content[0]["message"].startswith(
        "\nSELECT Bacon__c FROM Account LIMIT 2\n       ^\nERROR at Row:1:Column:8\n")


def test_write_errors(sf, emulator):
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.Lead.create({"LastName": "NoCompany"})
    assert _code(err) == "REQUIRED_FIELD_MISSING" and err.value.content[0]["fields"] == ["Company"]
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.Lead.create({"LastName": "x", "Company": "y", "State": "CA"})
    assert _code(err) == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.Lead.create({"LastName": "x", "Company": "y", "Sales_Region__c": "EMEA"})
    assert _code(err) == "INVALID_FIELD_FOR_INSERT_UPDATE"
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.Lead.create({"LastName": "x", "Company": "y", "Internal_Notes__c": "secret"})
    assert _code(err) == "INVALID_FIELD"
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.Lead.create({"LastName": "x", "Company": "y", "CreatedDate": "2020-01-01T00:00:00Z"})
    assert _code(err) == "INVALID_FIELD_FOR_INSERT_UPDATE"
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.Lead.create({"LastName": "x", "Company": "y", "Lead_Score__c": 250})
    assert _code(err) == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.Lead.create({"LastName": "y" * 81, "Company": "y"})
    assert _code(err) == "STRING_TOO_LONG"
    key = f"dup-{uuid.uuid4().hex[:8]}"
    sf.Lead.create({"LastName": "x", "Company": "y", "Marketing_Id__c": key})
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.Lead.create({"LastName": "x", "Company": "y", "Marketing_Id__c": key})
    assert _code(err) == "DUPLICATE_VALUE"


def test_id_errors(sf):
    good = sf.Lead.create({"LastName": "Ids", "Company": "y"})["id"]
    bad_checksum = good[:15] + ("AAA" if good[15:] != "AAA" else "BBB")
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.Lead.update(bad_checksum, {"Title": "x"})
    assert _code(err) == "MALFORMED_ID"
    assert sf.Lead.get(good[:15])["Id"] == good  # 15-char ids are accepted
    sf.Lead.delete(good)
    with pytest.raises(SalesforceResourceNotFound) as err:
        sf.Lead.update(good, {"Title": "x"})
    assert _code(err) == "ENTITY_IS_DELETED"
    with pytest.raises(SalesforceResourceNotFound) as err:
        sf.Lead.delete(good)
    assert _code(err) == "ENTITY_IS_DELETED"
    with pytest.raises(SalesforceResourceNotFound) as err:
        sf.Xyzzy.describe()
    assert _code(err) == "NOT_FOUND"


def test_converted_lead_is_read_only(sf, emulator):
    lead = sf.Lead.create({"LastName": "Conv", "Company": "Conv Co"})["id"]
    result = emulator.control("POST", "/convert-lead", json={"lead_id": lead})
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.Lead.update(lead, {"Title": "x"})
    assert _code(err) == "CANNOT_UPDATE_CONVERTED_LEAD"
    converted = sf.query(f"SELECT IsConverted, ConvertedContactId FROM Lead WHERE Id = '{lead}'")
    assert converted["records"][0]["IsConverted"] is True  # converted leads stay in query
    assert converted["records"][0]["ConvertedContactId"] == result["contactId"]


def test_request_limit_exceeded_when_allowance_is_spent(fresh_emulator):
    sf = fresh_emulator.salesforce()
    used = fresh_emulator.control("GET", "/counters")["api_usage"]["used"]
    fresh_emulator.control("PATCH", "/settings", json={"api_max": used + 2})
    sf.query("SELECT COUNT() FROM User")
    sf.query("SELECT COUNT() FROM User")
    with pytest.raises(SalesforceRefusedRequest) as err:
        sf.query("SELECT COUNT() FROM User")
    assert _code(err) == "REQUEST_LIMIT_EXCEEDED"
    assert err.value.content[0]["message"] == "TotalRequests Limit exceeded."
    assert fresh_emulator.counters()["REQUEST_LIMIT_EXCEEDED"] == 1


@pytest.mark.parametrize("kind, status, code, exc", [
    ("http_500", 500, "UNKNOWN_EXCEPTION", SalesforceGeneralError),
    ("http_503", 503, "SERVER_UNAVAILABLE", SalesforceGeneralError),
    ("request_limit", 403, "REQUEST_LIMIT_EXCEEDED", SalesforceRefusedRequest),
    ("query_timeout", 400, "QUERY_TIMEOUT", SalesforceMalformedRequest),
])
def test_injected_query_faults(sf, emulator, kind, status, code, exc):
    emulator.control("POST", "/faults", json={"endpoint": "query", "kind": kind, "count": 1})
    with pytest.raises(exc) as err:
        sf.query("SELECT COUNT() FROM User")
    assert err.value.status == status and _code(err) == code
    assert sf.query("SELECT COUNT() FROM User")["totalSize"] >= 1  # fired once only


def test_injected_slow_answer(sf, emulator):
    emulator.control("POST", "/faults", json={"endpoint": "query", "kind": "slow",
                                               "delay_seconds": 0.6})
    started = time.monotonic()
    sf.query("SELECT COUNT() FROM User")
    assert time.monotonic() - started >= 0.6


@pytest.mark.parametrize("kind, content_type", [
    ("html_page", "text/html;charset=UTF-8"), ("empty_body", "application/json;charset=UTF-8"),
    ("truncated_json", "application/json;charset=UTF-8")])
def test_injected_malformed_answers(sf, emulator, kind, content_type):
    """The call runs and counts; its answer is a 200 that is not JSON, once."""
    path = "/services/data/v59.0/query/?q=SELECT+Id,Name+FROM+User"
    whole = _raw(emulator, sf, "GET", path).content
    before = emulator.counters()["query"]
    emulator.control("POST", "/faults", json={"endpoint": "query", "kind": kind})
    mangled = _raw(emulator, sf, "GET", path)
    assert mangled.status_code == 200 and mangled.headers["Content-Type"] == content_type
    assert mangled.headers["Sforce-Limit-Info"].startswith("api-usage=")
    with pytest.raises(ValueError):
        mangled.json()
    assert {"html_page": mangled.text.startswith("<!DOCTYPE html>"),
            "empty_body": mangled.content == b"",
            "truncated_json": whole.startswith(mangled.content) and 0 < len(mangled.content)
            < len(whole)}[kind]
    assert emulator.counters()["query"] == before + 1
    assert _raw(emulator, sf, "GET", path).content == whole  # fired once only


def test_malformed_answers_mangle_a_whole_composite_never_a_sub_request(sf, emulator):
    emulator.control("POST", "/faults", json={"endpoint": "*", "kind": "truncated_json"})
    body = {"compositeRequest": [{"method": "GET", "referenceId": "users",
                                  "url": "/services/data/v59.0/query/?q=SELECT+Id+FROM+User"}]}
    mangled = _raw(emulator, sf, "POST", "/services/data/v59.0/composite", json=body)
    with pytest.raises(ValueError):
        mangled.json()
    answer = _raw(emulator, sf, "POST", "/services/data/v59.0/composite", json=body).json()
    assert answer["compositeResponse"][0]["httpStatusCode"] == 200


def test_unable_to_lock_row_fails_one_record_not_the_batch(sf, emulator):
    emulator.control("POST", "/faults", json={"endpoint": "composite.sobjects",
                                               "kind": "unable_to_lock_row", "after": 1})
    body = {"allOrNone": False, "records": [
        {"attributes": {"type": "Lead"}, "LastName": f"Lock{i}", "Company": "L"}
        for i in range(3)]}
    results = sf.restful("composite/sobjects", method="POST", json=body)
    assert [r["success"] for r in results] == [True, False, True]
    assert results[1]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW"


def test_status_codes_and_headers_on_the_wire(sf, emulator):
    resp = _raw(emulator, sf, "GET", "/services/data/v59.0/query/?q=SELECT+Id+FROM+Nope")
    assert resp.status_code == 400
    assert resp.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert resp.headers["Sforce-Limit-Info"].startswith("api-usage=")
    created = _raw(emulator, sf, "POST", "/services/data/v59.0/sobjects/Lead/",
                   json={"LastName": "Wire", "Company": "W"})
    assert created.status_code == 201
    assert created.headers["Location"] == f"/services/data/v59.0/sobjects/Lead/{created.json()['id']}"
    patched = _raw(emulator, sf, "PATCH", f"/services/data/v59.0/sobjects/Lead/{created.json()['id']}",
                   json={"Title": "x"})
    assert patched.status_code == 204 and patched.content == b""
    assert "Content-Type" not in patched.headers
    versions = requests.get(emulator.info["instance_url"] + "/services/data/", timeout=10)
    assert versions.status_code == 200 and "Sforce-Limit-Info" not in versions.headers
    assert {"label": "Winter '24", "url": "/services/data/v59.0", "version": "59.0"} in versions.json()
    unknown_version = _raw(emulator, sf, "GET", "/services/data/v12.0/limits")
    assert unknown_version.status_code == 404
    assert unknown_version.json() == [{"message": "The requested resource does not exist",
                                       "errorCode": "NOT_FOUND"}]
    no_auth = requests.get(emulator.info["instance_url"] + "/services/data/v59.0/limits/",
                           timeout=10)
    assert no_auth.status_code == 401 and no_auth.json()[0]["errorCode"] == "INVALID_SESSION_ID"
    too_many = _raw(emulator, sf, "POST", "/services/data/v59.0/composite/sobjects", json={
        "records": [{"attributes": {"type": "Lead"}, "LastName": "x", "Company": "y"}] * 201})
    assert too_many.status_code == 400 and too_many.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    bad_json = _raw(emulator, sf, "POST", "/services/data/v59.0/sobjects/Lead/", data=b"{nope")
    assert bad_json.status_code == 400 and bad_json.json()[0]["errorCode"] == "JSON_PARSER_ERROR"


def test_invalid_query_locator(sf, emulator):
    resp = _raw(emulator, sf, "GET", "/services/data/v59.0/query/01g5e000000AAAAAAA-2000")
    assert resp.status_code == 400 and resp.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_composite_batch_and_composite(sf, emulator):
    lead = sf.Lead.create({"LastName": "Batch", "Company": "B"})["id"]
    batch = sf.restful("composite/batch", method="POST", json={"haltOnError": True, "batchRequests": [
        {"method": "PATCH", "url": f"v59.0/sobjects/Lead/{lead}", "richInput": {"Title": "Dr"}},
        {"method": "GET", "url": f"v59.0/sobjects/Lead/{lead}?fields=Title"},
        {"method": "PATCH", "url": f"v59.0/sobjects/Lead/{lead}", "richInput": {"State": "XX"}},
        {"method": "GET", "url": f"v59.0/sobjects/Lead/{lead}"}]})
    assert batch["hasErrors"] is True
    assert [r["statusCode"] for r in batch["results"]] == [204, 200, 400, 412]
    assert batch["results"][1]["result"]["Title"] == "Dr"
    composite = sf.restful("composite", method="POST", json={"allOrNone": False, "compositeRequest": [
        {"method": "POST", "url": "/services/data/v59.0/sobjects/Account", "referenceId": "acct",
         "body": {"Name": "Composite Co"}},
        {"method": "POST", "url": "/services/data/v59.0/sobjects/Contact", "referenceId": "ct",
         "body": {"LastName": "Ref", "AccountId": "@{acct.id}"}},
        {"method": "GET", "referenceId": "q",
         "url": "/services/data/v59.0/query?q=SELECT Id, Account.Name FROM Contact WHERE "
                "Id = '@{ct.id}'"}]})
    statuses = [r["httpStatusCode"] for r in composite["compositeResponse"]]
    assert statuses == [201, 201, 200]
    assert composite["compositeResponse"][2]["body"]["records"][0]["Account"]["Name"] == "Composite Co"
    rolled = sf.restful("composite", method="POST", json={"allOrNone": True, "compositeRequest": [
        {"method": "POST", "url": "/services/data/v59.0/sobjects/Account", "referenceId": "a",
         "body": {"Name": "Rolled Back Co"}},
        {"method": "POST", "url": "/services/data/v59.0/sobjects/Contact", "referenceId": "c",
         "body": {"FirstName": "NoLastName"}}]})
    assert [r["httpStatusCode"] for r in rolled["compositeResponse"]] == [400, 400]
    assert sf.query("SELECT COUNT() FROM Account WHERE Name = 'Rolled Back Co'")["totalSize"] == 0


def test_composite_allows_at_most_five_queries(sf):
    subs = [{"method": "GET", "referenceId": f"q{i}",
             "url": "/services/data/v59.0/query?q=SELECT COUNT() FROM User"} for i in range(6)]
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.restful("composite", method="POST", json={"compositeRequest": subs})
    assert _code(err) == "INVALID_BATCH_REQUEST"
    ok = sf.restful("composite", method="POST", json={"compositeRequest": subs[:5]})
    assert [r["httpStatusCode"] for r in ok["compositeResponse"]] == [200] * 5


def test_sessions_time_out_after_the_configured_idle_time(fresh_emulator):
    sf = fresh_emulator.salesforce()
    fresh_emulator.control("PATCH", "/settings", json={"session_seconds": 1})
    logins = fresh_emulator.counters()["login.soap"]
    time.sleep(1.3)
    assert sf.query("SELECT COUNT() FROM User")["totalSize"] >= 1  # re-logged in transparently
    assert fresh_emulator.counters()["login.soap"] == logins + 1

"""Org behaviour a sync depends on, driven through the control API plus real clients:
recycle bin and purge, hard deletes, merges, conversions, formulas, late commits, schema drift,
the clock, persistence across restarts and the startup line."""

from __future__ import annotations

import json

import requests

from include.salesforce_emulator.process import INFO_KEYS, start_emulator


def _one(sf, soql: str, *, include_deleted: bool = False) -> dict:
    rows = sf.query_all(soql, include_deleted=include_deleted)["records"]
    assert len(rows) == 1, rows
    return rows[0]


def test_recycle_bin_undelete_and_purge(fresh_emulator):
    emu, sf = fresh_emulator, fresh_emulator.salesforce()
    account = sf.Account.create({"Name": "Bin Co"})["id"]
    contact = sf.Contact.create({"LastName": "Binned", "AccountId": account})["id"]
    sf.Account.delete(account)  # cascades to the contact
    assert _one(sf, f"SELECT IsDeleted FROM Contact WHERE Id = '{contact}'",
                include_deleted=True)["IsDeleted"] is True
    emu.control("POST", "/undelete", json={"ids": [account]})
    assert _one(sf, f"SELECT IsDeleted FROM Contact WHERE Id = '{contact}'")["IsDeleted"] is False
    sf.Contact.delete(contact)
    emu.control("POST", "/clock", json={"advance_seconds": 16 * 86400})  # past 15-day retention
    assert sf.query_all(f"SELECT Id FROM Contact WHERE Id = '{contact}'",
                        include_deleted=True)["totalSize"] == 0
    log = emu.control("GET", "/deleted-log")
    assert contact in {e["id"] for e in log}  # the deleted endpoint still knows it


def test_campaign_member_delete_is_hard(fresh_emulator):
    sf = fresh_emulator.salesforce()
    campaign = sf.Campaign.create({"Name": "Hard Delete Webinar"})["id"]
    lead = sf.Lead.create({"LastName": "Member", "Company": "M"})["id"]
    member = sf.CampaignMember.create({"CampaignId": campaign, "LeadId": lead})["id"]
    assert _one(sf, f"SELECT Status, HasResponded FROM CampaignMember WHERE Id = '{member}'"
                ) == {**_one(sf, f"SELECT Status, HasResponded FROM CampaignMember WHERE Id = "
                                 f"'{member}'"), "Status": "Sent", "HasResponded": False}
    sf.CampaignMember.update(member, {"Status": "Responded"})
    assert _one(sf, f"SELECT HasResponded FROM CampaignMember WHERE Id = '{member}'"
                )["HasResponded"] is True
    sf.CampaignMember.delete(member)
    assert sf.query_all(f"SELECT Id FROM CampaignMember WHERE Id = '{member}'",
                        include_deleted=True)["totalSize"] == 0
    assert member in {e["id"] for e in fresh_emulator.control("GET", "/deleted-log")
                      if e["hard"]}


def test_formula_changes_without_bumping_systemmodstamp(fresh_emulator):
    emu, sf = fresh_emulator, fresh_emulator.salesforce()
    account = sf.Account.create({"Name": "Formula Co", "Rating": "Hot"})["id"]
    contact = sf.Contact.create({"LastName": "Formula", "AccountId": account})["id"]
    before = _one(sf, f"SELECT Account_Rating__c, SystemModstamp FROM Contact WHERE Id = '{contact}'")
    emu.control("POST", "/clock", json={"advance_seconds": 60})
    sf.Account.update(account, {"Rating": "Cold"})
    after = _one(sf, f"SELECT Account_Rating__c, SystemModstamp FROM Contact WHERE Id = '{contact}'")
    assert (before["Account_Rating__c"], after["Account_Rating__c"]) == ("Hot", "Cold")
    assert after["SystemModstamp"] == before["SystemModstamp"]


def test_late_commit_lands_behind_the_clock(fresh_emulator):
    emu, sf = fresh_emulator, fresh_emulator.salesforce()
    lead = sf.Lead.create({"LastName": "Late", "Company": "L"})["id"]
    emu.control("POST", "/clock", json={"advance_seconds": 600})
    result = emu.control("POST", "/late-commit", json={"id": lead, "values": {"Title": "Late"},
                                                       "seconds_ago": 300})
    row = _one(sf, f"SELECT Title, SystemModstamp FROM Lead WHERE Id = '{lead}'")
    assert row["Title"] == "Late" and row["SystemModstamp"].startswith(result["SystemModstamp"])
    now = emu.control("GET", "/clock")["now"]
    assert row["SystemModstamp"][:19] < now[:19]


def test_merge_reparents_children_and_marks_losers(fresh_emulator):
    emu, sf = fresh_emulator, fresh_emulator.salesforce()
    campaign = sf.Campaign.create({"Name": "Merge Campaign"})["id"]
    master = sf.Contact.create({"LastName": "Master"})["id"]
    loser = sf.Contact.create({"LastName": "Loser", "Phone": "555-0100"})["id"]
    sf.CampaignMember.create({"CampaignId": campaign, "ContactId": loser})
    task = sf.Task.create({"Subject": "Call", "WhoId": loser})["id"]
    emu.control("POST", "/merge", json={"sobject": "Contact", "master_id": master,
                                        "loser_ids": [loser]})
    gone = _one(sf, f"SELECT IsDeleted, MasterRecordId FROM Contact WHERE Id = '{loser}'",
                include_deleted=True)
    assert gone == {**gone, "IsDeleted": True, "MasterRecordId": master}
    assert _one(sf, f"SELECT Phone FROM Contact WHERE Id = '{master}'")["Phone"] == "555-0100"
    assert _one(sf, f"SELECT WhoId FROM Task WHERE Id = '{task}'")["WhoId"] == master
    assert _one(sf, f"SELECT ContactId FROM CampaignMember WHERE CampaignId = '{campaign}'"
                )["ContactId"] == master


def test_lead_conversion_moves_memberships_and_activities(fresh_emulator):
    emu, sf = fresh_emulator, fresh_emulator.salesforce()
    campaign = sf.Campaign.create({"Name": "Convert Campaign"})["id"]
    lead = sf.Lead.create({"LastName": "Convertee", "Company": "Conv Inc", "Email": "c@conv.io"})["id"]
    sf.CampaignMember.create({"CampaignId": campaign, "LeadId": lead})
    task = sf.Task.create({"Subject": "Intro", "WhoId": lead})["id"]
    ids = emu.control("POST", "/convert-lead", json={"lead_id": lead, "create_opportunity": True})
    contact = _one(sf, f"SELECT Email, AccountId, Account.Name FROM Contact WHERE "
                       f"Id = '{ids['contactId']}'")
    assert contact["Email"] == "c@conv.io" and contact["Account"]["Name"] == "Conv Inc"
    member = _one(sf, f"SELECT LeadId, ContactId, Type FROM CampaignMember WHERE "
                      f"CampaignId = '{campaign}'")
    assert (member["LeadId"], member["ContactId"], member["Type"]) == (lead, ids["contactId"],
                                                                       "Contact")
    assert _one(sf, f"SELECT WhoId FROM Task WHERE Id = '{task}'")["WhoId"] == ids["contactId"]
    assert ids["opportunityId"]


def test_schema_drift_through_control_api(fresh_emulator):
    emu, sf = fresh_emulator, fresh_emulator.salesforce()
    emu.control("POST", "/schema/Lead/fields", json={"name": "Webinar_Count__c", "type": "double",
                                                     "precision": 4, "scale": 0})
    fields = {f["name"]: f for f in sf.Lead.describe()["fields"]}
    assert fields["Webinar_Count__c"]["type"] == "double"
    lead = sf.Lead.create({"LastName": "Drift", "Company": "D", "Webinar_Count__c": 3})["id"]
    assert _one(sf, f"SELECT Webinar_Count__c FROM Lead WHERE Id = '{lead}'")[
        "Webinar_Count__c"] == 3.0
    emu.control("PATCH", "/schema/Lead/fields/Webinar_Count__c", json={"fls": "hidden"})
    assert "Webinar_Count__c" not in {f["name"] for f in sf.Lead.describe()["fields"]}
    emu.control("PATCH", "/schema/Lead/fields/Webinar_Count__c", json={"fls": None,
                                                                       "type": "string",
                                                                       "length": 20})
    assert {f["name"]: f for f in sf.Lead.describe()["fields"]}["Webinar_Count__c"][
        "type"] == "string"


def test_export_matches_what_clients_read(emulator):
    sf = emulator.salesforce()
    truth = emulator.control("GET", "/export", params={"objects": "Account"})["Account"]
    read = sf.query_all("SELECT FIELDS(STANDARD) FROM Account")["records"]
    by_id = {r["Id"]: r for r in read}
    assert set(by_id) == {r["Id"] for r in truth}
    for row in truth:
        for key, value in by_id[row["Id"]].items():
            if key != "attributes" and key in row:
                assert row[key] == value, (row["Id"], key)


def test_startup_line_and_state_persist_across_restarts(tmp_path):
    data = tmp_path / "persisted"
    with start_emulator(data_dir=data, seed="empty") as emu:
        info = emu.info
        assert set(INFO_KEYS) <= set(info)
        assert info["login_domain"].endswith("/emu") and info["ca_bundle"].endswith("ca.pem")
        ca = info["ca_bundle"]
        token = requests.post(info["instance_url"] + "/services/oauth2/token", verify=ca, data={
            "grant_type": "password", "client_id": info["consumer_key"],
            "client_secret": info["consumer_secret"], "username": info["username"],
            "password": info["password"] + info["security_token"]}, timeout=10).json()
        headers = {"Authorization": "Bearer " + token["access_token"]}
        created = requests.post(info["instance_url"] + "/services/data/v59.0/sobjects/Lead/",
                                json={"LastName": "Persist", "Company": "P"}, headers=headers,
                                verify=ca, timeout=10).json()
        requests.patch(info["control_url"] + "/settings", json={"api_max": 12345}, verify=ca,
                       timeout=10)
    with start_emulator(data_dir=data, seed="demo") as emu:  # an existing org is not re-seeded
        exported = requests.get(emu.info["control_url"] + "/export", params={"objects": "Lead"},
                                verify=emu.info["ca_bundle"], timeout=10).json()
        assert [r["Id"] for r in exported["Lead"]] == [created["id"]]
        settings = requests.get(emu.info["control_url"] + "/settings",
                                verify=emu.info["ca_bundle"], timeout=10).json()
        assert settings["api_max"] == 12345
    assert json.loads(json.dumps(info))  # the line was valid JSON


def test_organization_row_follows_the_org_id(fresh_emulator):
    sf = fresh_emulator.salesforce()
    org = _one(sf, "SELECT Id, Name, IsSandbox FROM Organization")
    assert org["Id"] == fresh_emulator.control("GET", "/")["org_id"]
    other = "00D5e0000000OTHEA2"
    fresh_emulator.control("PATCH", "/settings", json={"org_id": other})
    assert _one(sf, "SELECT Id FROM Organization")["Id"] == other


def test_seed_and_simulate_over_http(fresh_emulator):
    emu, sf = fresh_emulator, fresh_emulator.salesforce()
    counts = emu.control("POST", "/seed", json={"size": 3000, "seed": 7})["counts"]
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == counts["Lead"] - sf.query_all(
        "SELECT Id FROM Lead WHERE IsDeleted = true", include_deleted=True)["totalSize"]
    emu.control("POST", "/clock", json={"advance_seconds": 60})
    since = emu.control("GET", "/clock")["now"][:19] + "Z"
    changes = emu.control("POST", "/simulate", json={"creates": 20, "updates": 30, "deletes": 5,
                                                     "conversions": 2, "rng_seed": 3})
    touched = sf.query_all(f"SELECT Id FROM Lead WHERE SystemModstamp >= {since}",
                           include_deleted=True)["records"]
    expected = set(changes["created"].get("Lead", [])) | set(changes["updated"].get("Lead", [])) \
        | set(changes["deleted"].get("Lead", [])) | {c["leadId"] for c in changes["converted"]}
    assert expected and expected <= {r["Id"] for r in touched}
    with_unknown = requests.post(emu.info["control_url"] + "/simulate", json={"bogus": 1},
                                 verify=emu.info["ca_bundle"], timeout=10)
    assert with_unknown.status_code == 400 and "bogus" in with_unknown.text

"""`admin connect`: which org and user the Salesforce connection reaches, its API usage and what
the sync user can see, before anything is copied."""

from __future__ import annotations

import pytest
import yaml

from include.sfsync import admin

pytestmark = pytest.mark.integration


def test_connect_names_the_org_the_user_the_usage_and_what_is_not_visible(org, tmp_path,
                                                                          monkeypatch, capsys):
    config = tmp_path / "sfsync.yaml"
    config.write_text(yaml.safe_dump({"custom_objects": ["Subscription__c", "Nope__c"]}))
    monkeypatch.setenv("SFSYNC_CONFIG", str(config))
    org.control("PATCH", "/settings", json={"api_max": 15000})
    assert admin.main(["connect"]) == 0
    out = capsys.readouterr().out
    org_id = org.control("GET", "/")["org_id"]
    assert f"Salesforce org {org_id}" in out and "(production, " in out, out
    assert f"Sync user: {org.info['username']}" in out
    assert "of 15,000" in out
    assert "of the 12 the configuration syncs, not visible: Nope__c." in out, out
    assert "Create key field Sfsync_Key__c (push.create_key_field): Lead: missing; " \
        "Contact: missing; Campaign: missing." in out, out
    assert "This check made 4 API calls." in out


@pytest.mark.parametrize("org", ["standard"], indirect=True)
def test_connect_checks_the_create_key_field_set_up(org, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SFSYNC_CONFIG", str(tmp_path / "none.yaml"))
    spec = {"name": "Sfsync_Key__c", "type": "string", "length": 64, "external_id": True,
            "unique": True}
    org.control("POST", "/schema/Lead/fields", json=spec)
    org.control("POST", "/schema/Contact/fields", json={**spec, "external_id": False})
    assert admin.main(["connect"]) == 0
    out = capsys.readouterr().out
    assert "Create key field Sfsync_Key__c (push.create_key_field): Contact: not a Text field " \
        "marked External ID; Campaign: missing. Creates there look up what a lost call made " \
        "instead (README: Set up the org)." in out, out
    org.control("PATCH", "/schema/Contact/fields/Sfsync_Key__c", json={"external_id": True})
    org.control("POST", "/schema/Campaign/fields", json=spec)
    assert admin.main(["connect"]) == 0
    assert "Create key field Sfsync_Key__c: set up on Lead, Contact, Campaign." in \
        capsys.readouterr().out


def test_connect_with_a_bad_password_is_one_line(org, monkeypatch, capsys):
    import json

    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", json.dumps({
        "conn_type": "salesforce", "login": org.info["username"], "password": "wrong",
        "extra": {"security_token": org.info["security_token"],
                  "domain": org.info["login_domain"]}}))
    assert admin.main(["connect"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Salesforce refused the login of Airflow connection "
                          f"'salesforce_default' (user {org.info['username']}, login domain "
                          f"{org.info['login_domain']}): INVALID_LOGIN: ") and \
        len(err.splitlines()) == 1, err
    assert "security token" in err and org.info["security_token"] not in err, err


def test_fields_shows_what_the_sync_does_with_each_field(org, tmp_path, monkeypatch, capsys):
    import csv
    import io

    config = tmp_path / "sfsync.yaml"
    config.write_text(yaml.safe_dump({"hidden_fields": {"Lead": ["Description"]},
                                      "mappings": {"Lead.Title": "job_title"},
                                      "custom_objects": ["Nope__c"]}))
    monkeypatch.setenv("SFSYNC_CONFIG", str(config))
    assert admin.main(["fields", "--csv"]) == 0
    rows = {(r["object"], r["field"]): r
            for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert (rows[("Lead", "Email")]["column"], rows[("Lead", "Email")]["direction"]) == (
        "email", "two-way")
    assert (rows[("Account", "Name")]["table"], rows[("Account", "Name")]["direction"]) == (
        "company", "salesforce-to-marketing")
    assert rows[("Lead", "Title")]["column"] == "job_title"
    assert (rows[("Lead", "Description")]["synced"], rows[("Lead", "Description")]["reason"]) \
        == ("no", "hidden in config (hidden_fields)")
    assert not [key for key in rows if key[0] == "Nope__c"]
    assert admin.main(["fields"]) == 0
    table = capsys.readouterr().out
    assert "fields synced" in table and "warning: custom_objects: Nope__c" in table


@pytest.mark.parametrize("org", ["standard"], indirect=True)
def test_fields_refuses_a_configuration_naming_what_the_org_lacks(org, tmp_path, monkeypatch,
                                                                  capsys):
    """Checked against the org before anything is copied: one line naming the key and value."""
    config = tmp_path / "sfsync.yaml"
    config.write_text(yaml.safe_dump({"hidden_fields": {"Lead": ["Descripton"]}}))
    monkeypatch.setenv("SFSYNC_CONFIG", str(config))
    assert admin.main(["fields"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1, captured.err
    assert captured.err.startswith("error: hidden_fields.Lead: Descripton: Lead has no field "
                                   "Descripton the sync user can see"), captured.err


def test_start_copies_the_org_and_the_incremental_cycles_carry_on(org, marketing_db, tmp_path,
                                                                 monkeypatch, capsys):
    """The default configuration (standard objects only, no custom field named) on the demo
    org: `admin start` copies it and starts every cursor; the next cycle reads only changes."""
    from include.sfsync import pipeline
    from include.sfsync.config import load_config
    from include.sfsync.objects import object_names

    config = tmp_path / "sfsync.yaml"
    config.write_text(yaml.safe_dump({"bulk_poll_seconds": 0}))
    monkeypatch.setenv("SFSYNC_CONFIG", str(config))
    assert admin.main(["start"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "Initial copy (admin_start:" in out and "Incremental cycles continue" in out, out
    assert "Not complete yet" not in out
    truth = org.control("GET", "/export", params={"objects": "Account,Lead,Contact"})
    assert marketing_db.scalar("SELECT count(*) FROM company") == len(truth["Account"])
    assert marketing_db.scalar("SELECT count(*) FROM sfsync_watermark WHERE cursor_modstamp "
                               "IS NOT NULL") == len(object_names())
    assert marketing_db.scalar("SELECT status FROM sfsync_run") == "success"
    org.control("POST", "/clock", json={"advance_seconds": 900})
    summary = pipeline.run_cycle("after-start", config=load_config())
    assert all(c["new"] == 0 for c in summary["counts"].values()), summary["counts"]

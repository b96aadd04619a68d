"""Bad configuration: the file alone (``python -m include.sfsync.config``: one line naming the
key, exit status 2, never a traceback) and names checked against the org by a run's
``prepare`` (the run fails at once, not retried, marked failed with the cause, nothing copied
or moved). tests/sync/test_config_strict.py and tests/unit/test_config_command.py hold the
first cases of each kind; these are others."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from include.sfsync import admin
from include.sfsync import config as config_module
from tests.corpus.conftest import fails, one_line, run_row, state

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

# (file text, what the one line must say after "error: <path>: ")
FILE_MISTAKES = {
    "unknown-key-overlap_second": ("overlap_second: 300\n", "overlap_second: unknown key"),
    "bulk_threshold=lots": ("bulk_threshold: lots\n",
                            "bulk_threshold: Input should be a valid integer"),
    "query_batch_size=5000": ("query_batch_size: 5000\n",
                              "query_batch_size: Input should be less than or equal to 2000"),
    "bulk_poll_seconds=-1": ("bulk_poll_seconds: -1\n",
                             "bulk_poll_seconds: Input should be greater than or equal to 0"),
    "reconcile_hours=0": ("reconcile_hours: 0\n",
                          "reconcile_hours: Input should be greater than or equal to 1"),
    "salesforce_conn_id=list": ("salesforce_conn_id: [a, b]\n",
                                "salesforce_conn_id: Input should be a valid string"),
    "custom_objects=no__c": ("custom_objects: [Webinar_Attendance]\n",
                             "custom object 'Webinar_Attendance' must be an API name ending in "
                             "__c"),
    "mappings-key-without-object": ("mappings: {LeadTitle: job_title}\n",
                                    "mapping key 'LeadTitle' must look like 'Object.Field'"),
    "mappings-column-with-space": ("mappings: {Lead.Title: job title}\n",
                                   "column 'job title' must be letters, digits and underscores"),
    "mappings-column-sql-injection": (
        "mappings: {Lead.Title: 'title; DROP TABLE person; --'}\n",
        "column 'title; DROP TABLE person; --' must be letters, digits and underscores"),
    "hidden_fields-not-a-list": ("hidden_fields: {Lead: Description}\n",
                                 "hidden_fields.Lead: Input should be a valid list"),
    "conflicts.objects=both": ("conflicts: {objects: {Lead: both}}\n",
                               "conflicts.objects.Lead: Input should be 'marketing' or "
                               "'salesforce'"),
    "conflicts.fields-key-without-object": ("conflicts: {fields: {Title: marketing}}\n",
                                            "conflict field 'Title' must look like "
                                            "'Object.Field'"),
    "dedupe_rules-no-columns": ("dedupe_rules: [{name: nothing, columns: []}]\n",
                                "dedupe_rules.0.columns: List should have at least 1 item"),
    "dedupe_rules-normalize=soundex": (
        "dedupe_rules: [{name: sound, columns: [email], normalize: soundex}]\n",
        "dedupe_rules.0.normalize: Input should be 'lower', 'email', 'digits' or 'exact'"),
    "formula_fields.refresh_minutes=1": (
        "formula_fields: {refresh_minutes: 1}\n",
        "formula_fields.refresh_minutes: Input should be greater than or equal to 5"),
    "formula_fields.include-without-object": (
        "formula_fields: {include: [Account_Rating__c]}\n",
        "formula field 'Account_Rating__c' must look like 'Object.Field'"),
    "sync_filters-without-field": ("sync_filters: [{object: Lead, skip_when: true}]\n",
                                   "sync_filters.0.field: Field required"),
    "push.quarantine_after=0": ("push: {quarantine_after: 0}\n",
                                "push.quarantine_after: Input should be greater than or equal "
                                "to 1"),
    "push.transient_retries=11": ("push: {transient_retries: 11}\n",
                                  "push.transient_retries: Input should be less than or equal "
                                  "to 10"),
    "push.enabled=maybe": ("push: {enabled: maybe}\n",
                           "push.enabled: Input should be a valid boolean"),
    "push.value_maps-unknown-builtin": (
        "push: {value_maps: {Lead.State: us_provinces}}\n",
        "value map 'Lead.State': unknown built-in map 'us_provinces'"),
    "push.activities.max_per_cycle=0": (
        "push: {activities: {max_per_cycle: 0}}\n",
        "push.activities.max_per_cycle: Input should be greater than or equal to 1"),
    "top-level-is-a-list": ("- overlap_seconds: 300\n",
                            "the top level must be a mapping of settings"),
    "yaml-tab-indent": ("hidden_fields:\n\tLead: [Description]\n",
                        "not valid YAML: line 2, column 1: found character '\\t' that cannot "
                        "start any token"),
}


def check_file(path: Path, capsys) -> tuple[int, str, str]:
    os.environ["SFSYNC_CONFIG"] = str(path)
    try:
        status = config_module.main()
    finally:
        del os.environ["SFSYNC_CONFIG"]
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("case", list(FILE_MISTAKES))
def test_a_bad_file_is_one_line_naming_the_key(case, tmp_path, capsys):
    text, culprit = FILE_MISTAKES[case]
    path = tmp_path / "sfsync.yaml"
    path.write_text(text)
    status, out, err = check_file(path, capsys)
    assert (status, out) == (2, ""), (status, out, err)
    assert one_line(err).startswith(f"error: {path}: ") and culprit in err, err


# Files that could not be read at all printed a traceback (UnicodeDecodeError,
# IsADirectoryError): the real command, in a subprocess.
UNREADABLE = {
    "latin-1-file": (b"mappings: {Lead.Title: soci\xe9t\xe9}\n",
                     "not UTF-8 text: byte b'\\xe9' at position 27; save the file as UTF-8"),
    "a-directory": (None, "cannot be read: Is a directory"),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_an_unreadable_file_is_one_line_not_a_traceback(case, tmp_path):
    content, culprit = UNREADABLE[case]
    path = tmp_path / "sfsync.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    done = subprocess.run([sys.executable, "-m", "include.sfsync.config"], cwd=ROOT,
                          env={**os.environ, "SFSYNC_CONFIG": str(path)}, capture_output=True,
                          text=True, timeout=120)
    assert (done.returncode, done.stdout) == (2, ""), done
    assert one_line(done.stderr).rstrip("\n") == f"error: {path}: {culprit}", done.stderr


def test_admin_config_with_a_bad_file_is_one_line(tmp_path, capsys, monkeypatch):
    path = tmp_path / "sfsync.yaml"
    path.write_text("push: {bulk_threshold: 0}\n")
    monkeypatch.setenv("SFSYNC_CONFIG", str(path))
    assert admin.main(["config"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and one_line(err).rstrip("\n") == (
        f"error: {path}: push.bulk_threshold: Input should be greater than or equal to 1"), err


# Names checked against the org at the run's prepare step: (configuration, key, value).
ORG_MISTAKES = {
    "mappings-onto-id": ({"mappings": {"Lead.Title": "id"}}, "mappings['Lead.Title']", "id"),
    "mappings-onto-sfsync_updated_at": ({"mappings": {"Contact.Title": "sfsync_updated_at"}},
                                        "mappings['Contact.Title']", "sfsync_updated_at"),
    "mappings-onto-person_id": ({"mappings": {"CampaignMember.Status": "person_id"}},
                                "mappings['CampaignMember.Status']", "person_id"),
    "mappings-remap-Id": ({"mappings": {"Contact.Id": "contact_id"}}, "mappings['Contact.Id']",
                          "contact_id"),
    "mappings-unmap-SystemModstamp": ({"mappings": {"Account.SystemModstamp": None}},
                                      "mappings['Account.SystemModstamp']", "null"),
    "mappings-collision-on-Contact": ({"mappings": {"Contact.Department": "title"}},
                                      "mappings['Contact.Department']", "title"),
    "mappings-compound-Address": ({"mappings": {"Contact.MailingAddress": "mailing"}},
                                  "mappings['Contact.MailingAddress']", "mailing"),
    "hidden_fields-SystemModstamp": ({"hidden_fields": {"Contact": ["SystemModstamp"]}},
                                     "hidden_fields.Contact", "SystemModstamp"),
    "hidden_fields-lower-case-object": ({"hidden_fields": {"lead": ["Description"]}},
                                        "hidden_fields", "lead"),
    "hidden_fields-unknown-custom-field": ({"hidden_fields": {"Account": ["Credit_Limit__c"]}},
                                           "hidden_fields.Account", "Credit_Limit__c"),
    "sync_filters-number-field-text-value": (
        {"sync_filters": [{"object": "Lead", "field": "NumberOfEmployees",
                           "skip_when": "many"}]},
        "sync_filters.0.skip_when", "'many'"),
    "sync_filters-text-field-boolean-value": (
        {"sync_filters": [{"object": "Account", "field": "Industry", "skip_when": True}]},
        "sync_filters.0.skip_when", "True"),
    "sync_filters-object-lower-case": (
        {"sync_filters": [{"object": "contact", "field": "DoNotCall", "skip_when": True}]},
        "sync_filters.0.object", "contact"),
    "conflicts.fields-case": ({"conflicts": {"fields": {"Lead.title": "marketing"}}},
                              "conflicts.fields", "Lead.title"),
    "conflicts.fields-one-way-object": ({"conflicts": {"fields": {"Account.Name": "marketing"}}},
                                        "conflicts.fields", "Account.Name"),
    "push.lead_defaults-case": ({"push": {"lead_defaults": {"company": "[none]"}}},
                                "push.lead_defaults", "company"),
    "push.value_maps-typo": ({"push": {"value_maps": {"Contact.MailingStat": "us_states"}}},
                             "push.value_maps", "Contact.MailingStat"),
    "block_updates-column-case": ({"block_updates": {"person": ["Title"]}},
                                  "block_updates.person", "Title"),
    "dedupe_rules-unknown-column": ({"dedupe_rules": [{"name": "by_phone", "columns":
                                                       ["phone_number"]}]},
                                    "dedupe_rules.0.columns", "phone_number"),
}


@pytest.fixture(scope="module")
def configured(synced):
    """The module's synced database, with a new lead waiting in Salesforce: a refused run
    must not copy it."""
    synced.create("Lead", {"LastName": "Waiting", "Company": "Refused Config Co",
                           "Email": "waiting@example.org"})
    synced.advance(60)
    return synced


@pytest.mark.parametrize("case", list(ORG_MISTAKES))
def test_a_name_the_org_lacks_fails_the_run_naming_key_and_value(case, configured):
    overrides, key, value = ORG_MISTAKES[case]
    before = state(configured.mdb)
    run_key = f"config-{case}"
    _error, message = fails(configured, run_key, **overrides)
    assert f"{key}: {value}: " in message, message
    assert state(configured.mdb) == before  # nothing copied, no cursor moved
    run = run_row(configured.mdb, run_key)
    assert (run["status"], run["message"]) == ("failed", message)
    assert configured.mdb.scalar("SELECT count(*) FROM sfsync_count WHERE run_key = :k",
                                 k=run_key) == 0


def test_a_custom_object_the_org_lacks_is_a_warning_naming_it(configured, caplog):
    """The one name that may be missing: the run goes on and its log names the object."""
    with caplog.at_level("WARNING"):
        summary = configured.cycle("config-missing-custom", custom_objects=["Webinar_Attendance__c"])
    assert "custom_objects: Webinar_Attendance__c is not in this org or the sync user cannot " \
        "see it: not synced" in caplog.text
    assert summary["counts"]["Lead"]["new"] == 1  # the waiting lead
    assert "webinar_attendance" not in configured.mdb.snapshot()


# Mistakes in a command's own arguments: one line, exit status 2, nothing written.
COMMAND_MISTAKES = {
    "start-unknown-object": (["start", "--objects", "Leed"],
                             "error: objects: ['Leed']: choose 'all' or objects the "
                             "configuration syncs (User, Account, Lead, "),
    "release-unknown-table": (["release", "--table", "persons", "--row-id", "1"],
                              "error: --table persons: not a two-way table (campaign, "
                              "campaign_member, person)"),
}


@pytest.mark.parametrize("case", list(COMMAND_MISTAKES))
def test_a_command_mistake_is_one_line_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    argv, start = COMMAND_MISTAKES[case]
    path = tmp_path / "mk.db"
    monkeypatch.setenv("AIRFLOW_CONN_MARKETING_DB", f'{{"conn_type": "sqlite", "host": "{path}"}}')
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", '{"conn_type": "salesforce"}')
    monkeypatch.setenv("SFSYNC_CONFIG", str(tmp_path / "none.yaml"))
    assert admin.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and one_line(err).startswith(start), err
    assert not path.exists() or path.stat().st_size == 0  # the database was not touched

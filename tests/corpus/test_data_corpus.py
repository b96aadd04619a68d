"""Bad and awkward marketing data, in both directions, in one shared pair of cycles per backend:

* values Salesforce refuses (an invalid e-mail, a restricted picklist's unknown value, too long
  for the field, NULL in a required field, a number out of range, a validation rule, a member
  status the campaign lacks): an ``sfsync_error`` row names the table, the row and the field
  with Salesforce's code; the change waits as failed in the outbox; the Salesforce record and
  the local value stay as they were; every other row goes through;
* values that must round-trip verbatim both ways (``O'Brien``, quotes, backslashes, ``%`` and
  ``_``, ``;--``, SOQL metacharacters, accents, CJK, right-to-left text, emoji, new lines): a
  local edit reaches Salesforce exactly, a Salesforce record reaches the marketing database
  exactly, and the next cycle writes nothing (no value read back differently).

The validation rule is the emulator's on ``Lead_Score__c``: the module adds that field to the
plain org first, as an admin would (nothing of the demo org is used)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

# case -> (table, column, bad value, Salesforce field, Salesforce's code)
REFUSED = {
    "lead-email=not-an-email": ("person", "email", "not-an-email", "Email",
                                "INVALID_EMAIL_ADDRESS"),
    "lead-email-with-a-space": ("person", "email", "ann smith@example.org", "Email",
                                "INVALID_EMAIL_ADDRESS"),
    "lead-status-not-in-picklist": ("person", "lead_status", "Maybe Later", "Status",
                                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
    "lead-state-not-in-picklist": ("person", "state", "Atlantis", "State",
                                   "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
    "lead-country-not-in-picklist": ("person", "country", "Narnia", "Country",
                                     "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
    "lead-title-129-characters": ("person", "title", "T" * 129, "Title", "STRING_TOO_LONG"),
    "lead-first_name-41-characters": ("person", "first_name", "Bartholomew-Maximilian-"
                                      "Alexander-Jonathan", "FirstName", "STRING_TOO_LONG"),
    "lead-last_name-NULL": ("person", "last_name", None, "LastName", "REQUIRED_FIELD_MISSING"),
    "lead-company-NULL": ("person", "company", None, "Company", "REQUIRED_FIELD_MISSING"),
    "lead-annual_revenue-out-of-range": ("person", "annual_revenue", 1e20, "AnnualRevenue",
                                         "NUMBER_OUTSIDE_VALID_RANGE"),
    "lead-score-validation-rule": ("person", "lead_score", 500, "Lead_Score__c",
                                   "FIELD_CUSTOM_VALIDATION_EXCEPTION"),
    "contact-last_name-NULL": ("person", "last_name", None, "LastName",
                               "REQUIRED_FIELD_MISSING"),
    "contact-state-not-in-picklist": ("person", "state", "Middle Earth", "MailingState",
                                      "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
    "campaign-name-NULL": ("campaign", "name", None, "Name", "REQUIRED_FIELD_MISSING"),
    "member-status-the-campaign-lacks": ("campaign_member", "status", "Attended-ish", "Status",
                                         "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
    "new-person-invalid-email": ("person", "email", "new@@example..org", "Email",
                                 "INVALID_EMAIL_ADDRESS"),
}

# case -> (column, Salesforce field of a Lead, value)
VERBATIM = {
    "O'Brien": ("last_name", "LastName", "O'Brien"),
    "double-quotes": ("title", "Title", 'The "Best" Title'),
    "backslashes": ("title", "Title", "C:\\new\\table \\\\ end\\"),
    "percent-and-underscore": ("title", "Title", "100% _match_ of LIKE %_"),
    "sql-terminator-and-comment": ("company", "Company", "Acme'); DROP TABLE person; --"),
    "soql-injection": ("company", "Company", "x' OR Name LIKE '%"),
    "soql-escape-sequences": ("title", "Title", "\\' \\\" \\n \\t \\u0041"),
    "bind-and-merge-syntax": ("title", "Title", ":email {!Lead.Id} ${x} {{y}} ?"),
    "accents": ("first_name", "FirstName", "Zoë-Ångström Ñúñez"),
    "combining-characters-kept": ("first_name", "FirstName", "e\u0301cole"),
    "cjk": ("city", "City", "北京市海淀区"),
    "right-to-left": ("last_name", "LastName", "مرحبا بالعالم"),
    "emoji-with-zwj-and-flags": ("title", "Title", "Launch 🚀 by 👩🏽‍💻 for 🇫🇷"),
    "newline-and-tab": ("street", "Street", "Line 1\nLine 2\tTabbed"),
}


def new_email(kind: str) -> str:
    """A new person's e-mail (the dedupe query and the create), one per backend: the org is
    shared by both."""
    return f"o'brien+{kind}100%_x@example.org"


@pytest.fixture(scope="module")
def scored_org(corpus_org):
    """The plain org with a Lead Score field on leads and contacts (its validation rule:
    between 0 and 100), added as an admin would."""
    for sobject in ("Lead", "Contact"):
        corpus_org.control("POST", f"/schema/{sobject}/fields", json={
            "name": "Lead_Score__c", "type": "double", "precision": 3, "scale": 0,
            "label": "Lead Score"})
    return corpus_org


@pytest.fixture(scope="module")
def data(scored_org, synced):
    """Every case's edit (and a Salesforce record per verbatim value) carried by one cycle,
    then one more cycle, which must write nothing."""
    sync = synced
    sync.advance(60)
    sync.cycle("data-schema")  # the new column
    leads = [r["id"] for r in sync.mdb.rows(
        "person", "sfdc_type = 'Lead' AND sfdc_is_deleted = :f AND sfdc_converted_contact_id IS "
        "NULL AND last_name IS NOT NULL AND company IS NOT NULL", f=False)]
    contacts = [r["id"] for r in sync.mdb.rows(
        "person", "sfdc_type = 'Contact' AND sfdc_is_deleted = :f", f=False)]
    rows: dict[str, int] = {}
    for case, (table, column, value, _field, _code) in REFUSED.items():
        if table == "person" and case.startswith("new-"):
            sync.mdb.execute("INSERT INTO person (email, last_name, company, sync_to_salesforce)"
                             " VALUES (:e, 'Newcomer', 'Bad Mail Co', true)", e=value)
            rows[case] = sync.mdb.scalar("SELECT max(id) FROM person")
        elif table == "person":
            rows[case] = (contacts if case.startswith("contact-") else leads).pop(0)
        elif table == "campaign":
            rows[case] = sync.mdb.rows("campaign", "sfdc_is_deleted = :f", f=False)[0]["id"]
        else:
            person = leads.pop(0)
            campaign = sync.mdb.rows("campaign", "sfdc_is_deleted = :f AND sfdc_id NOT IN "
                                     "(SELECT sfdc_campaign_id FROM campaign_member WHERE "
                                     "person_id = :p)", f=False, p=person)[-1]
            sync.mdb.execute("INSERT INTO campaign_member (person_id, sfdc_campaign_id, status) "
                             "VALUES (:p, :c, :s)", p=person, c=campaign["sfdc_id"], s=value)
            rows[case] = sync.mdb.scalar("SELECT max(id) FROM campaign_member")
        if not case.startswith("new-") and table != "campaign_member":
            sync.mdb.execute(f"UPDATE {table} SET {column} = :v WHERE id = :i", v=value,
                             i=rows[case])
    for case, (column, _field, value) in VERBATIM.items():
        rows[case] = leads.pop(0)
        sync.mdb.execute(f"UPDATE person SET {column} = :v WHERE id = :i", v=value, i=rows[case])
    sync.mdb.execute("INSERT INTO person (email, first_name, last_name, company, "
                     "sync_to_salesforce) VALUES (:e, 'Quoted', 'O''Brien', 'Quote & Co', true)",
                     e=new_email(sync.mdb.kind))
    rows["new-email"] = sync.mdb.scalar("SELECT max(id) FROM person")
    created = dict(zip(VERBATIM, sync.create("Lead", *[
        {"LastName": "Verbatim", "Company": "Round Trip Co", field: value}
        for _column, field, value in VERBATIM.values()]), strict=True))
    before = {o: {r["Id"]: r for r in recs}
              for o, recs in sync.truth("Lead", "Contact", "Campaign").items()}
    sync.advance(60)
    first = sync.cycle("data-1")
    sync.advance(60)
    second = sync.cycle("data-2")
    truth = sync.truth("Lead", "Contact", "Campaign", "CampaignMember")
    return {"sync": sync, "rows": rows, "created": created, "first": first, "second": second,
            "before": before, "truth": {o: {r["Id"]: r for r in recs} for o, recs in truth.items()}}


def sf_object_of(data: dict, table: str, row: dict) -> tuple[str, str | None]:
    if table == "campaign":
        return "Campaign", row["sfdc_id"]
    if table == "campaign_member":
        return "CampaignMember", row["sfdc_id"]
    return ("Contact", row["sfdc_contact_id"]) if row["sfdc_type"] == "Contact" else \
        ("Lead", row["sfdc_lead_id"])


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_value_salesforce_refuses_is_a_record_error_naming_row_and_field(case, data):
    table, column, value, field, code = REFUSED[case]
    sync, row_id = data["sync"], data["rows"][case]
    row = sync.mdb.one(table, "id = :i", i=row_id)
    sf_object, sfdc_id = sf_object_of(data, table, row)
    errors = [e for e in sync.mdb.rows("sfsync_error", "run_key = 'data-1'")
              if json.loads(e["record"] or "{}").get("row_id") == row_id
              and json.loads(e["record"])["table"] == table]
    assert len(errors) == 1, errors
    error = errors[0]
    assert error["message"].startswith(f"{table} row {row_id}: "), error["message"]
    assert (error["sf_object"], error["error_code"], error["field"]) == (sf_object, code, field)
    assert "\n" not in error["message"]
    box = sync.mdb.one("sfsync_outbox", "table_name = :t AND row_id = :i", order="row_id",
                       t=table, i=row_id)
    assert box["status"] == "failed" and box["last_error"].startswith(code), box
    assert row[column] == value  # the local value is kept, not reverted
    if sfdc_id:  # nothing half-written in Salesforce: the record as it was
        before = data["before"][sf_object][sfdc_id]
        after = data["truth"][sf_object][sfdc_id]
        assert after[field] == before[field] and after["SystemModstamp"] == before[
            "SystemModstamp"], (before[field], after[field])
    else:
        assert sync.mdb.one(table, "id = :i", i=row_id)["sfdc_id"] is None
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_error WHERE run_key = 'data-2'") == 0


@pytest.mark.parametrize("case", list(VERBATIM))
def test_a_value_round_trips_verbatim_both_ways(case, data):
    column, field, value = VERBATIM[case]
    sync = data["sync"]
    row = sync.mdb.one("person", "id = :i", i=data["rows"][case])
    assert row[column] == value  # the local edit, untouched by its push
    assert data["truth"]["Lead"][row["sfdc_lead_id"]][field] == value  # reached Salesforce
    pulled = sync.person(data["created"][case])  # and Salesforce's reached the database
    assert pulled[column] == value
    assert data["truth"]["Lead"][data["created"][case]][field] == value
    assert not sync.mdb.rows("sfsync_outbox", "table_name = 'person' AND row_id = :i",
                             order="row_id", i=row["id"])


def test_a_new_persons_quoted_email_is_matched_and_created_verbatim(data):
    sync = data["sync"]
    row = sync.mdb.one("person", "id = :i", i=data["rows"]["new-email"])
    lead = data["truth"]["Lead"][row["sfdc_lead_id"]]
    email = new_email(sync.mdb.kind)
    assert (lead["Email"], lead["LastName"], lead["Company"]) == (email, "O'Brien", "Quote & Co")
    assert row["email"] == email


def test_the_cycle_after_is_quiet_and_the_good_rows_all_went_through(data):
    """One bad row blocked no other; nothing read back differently (no write, no conflict)."""
    sync, first, second = data["sync"], data["first"]["push"], data["second"]["push"]
    people = first["people"]["counts"]
    updated = sum(c.get("updated", 0) for c in people.values())
    assert updated == len(VERBATIM)
    failed = sum(c.get("failed", 0) for c in people.values())
    assert failed == sum(t == "person" for t, *_ in REFUSED.values()) - 1  # the new one: below
    for step in second.values():
        for counts in (step.get("counts") or {}).values():
            assert not any(counts.get(k) for k in ("new", "updated", "deleted", "linked")), step
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_conflict") == 0

"""Issue 12, strict configuration: every object, field and column the configuration names is
checked against the org after describe. A mistake fails the run at once, before anything is
copied, with one line naming the key and the value; a filter that cannot be applied fails
closed (a filter's field deleted later: tests/sync/test_pull.py). On the emulator's plain
``standard`` org, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from include.salesforce_emulator.schema import schema_for
from include.sfsync.catalog import build_catalog
from include.sfsync.config import ConfigError, load_config
from include.sfsync.objects import object_names
from include.sfsync.pull.filters import filter_records
from tests.sync.test_pull import Sync

pytestmark = pytest.mark.integration
on_standard_org = pytest.mark.parametrize("org", ["standard"], indirect=True)


@pytest.fixture
def sync(org, marketing_db):
    return Sync(org, marketing_db)


def refused(sync: Sync, run_key: str, **overrides) -> str:
    """The run fails in ``prepare`` with a ConfigError, whose message is returned."""
    with pytest.raises(ConfigError) as failed:
        sync.cycle(run_key, **overrides)
    message = str(failed.value)
    del failed  # its frames hold the run's Salesforce session open
    assert len(message.splitlines()) == 1, message
    return message


def assert_nothing_copied(sync: Sync) -> None:
    tables = set(sa.inspect(sync.mdb.engine).get_table_names())
    assert "person" not in tables  # the schema is never made from a refused configuration
    assert sync.mdb.scalar("SELECT count(*) FROM sfsync_watermark") == 0


# (configuration, its key, the value the message names)
MISTAKES = [
    ({"sync_filters": [{"object": "Lead", "field": "Do_Not_Sync__c", "skip_when": True}]},
     "sync_filters.0.field", "Do_Not_Sync__c"),
    ({"sync_filters": [{"object": "Lead", "field": "donotcall", "skip_when": True}]},
     "sync_filters.0.field", "donotcall"),
    ({"sync_filters": [{"object": "Lead", "field": "DoNotCall", "skip_when": "true"}]},
     "sync_filters.0.skip_when", "'true'"),
    ({"mappings": {"Leed.Title": "job_title"}}, "mappings", "Leed.Title"),
    ({"mappings": {"Lead.Titel": "job_title"}}, "mappings", "Lead.Titel"),
    ({"mappings": {"Lead.Title": "sfdc_contact_id"}}, "mappings['Lead.Title']",
     "sfdc_contact_id"),
    ({"mappings": {"Lead.Email": None}}, "mappings['Lead.Email']", "null"),
    ({"mappings": {"Lead.Address": "lead_address"}}, "mappings['Lead.Address']",
     "lead_address"),
    ({"hidden_fields": {"Leed": ["Description"]}}, "hidden_fields", "Leed"),
    ({"hidden_fields": {"Lead": ["Descripton"]}}, "hidden_fields.Lead", "Descripton"),
    ({"hidden_fields": {"Lead": ["Email"]}}, "hidden_fields.Lead", "Email"),
    ({"formula_fields": {"include": ["Contact.Nope__c"]}}, "formula_fields.include",
     "Contact.Nope__c"),
    ({"block_updates": {"persons": ["title"]}}, "block_updates", "persons"),
    ({"block_updates": {"person": ["lead_score"]}}, "block_updates.person", "lead_score"),
    ({"dedupe_rules": [{"name": "phone", "columns": ["phone_number"]}]},
     "dedupe_rules.0.columns", "phone_number"),
    ({"conflicts": {"objects": {"Leed": "marketing"}}}, "conflicts.objects", "Leed"),
    ({"conflicts": {"objects": {"Account": "marketing"}}}, "conflicts.objects", "Account"),
    ({"conflicts": {"fields": {"Contact.Titel": "marketing"}}}, "conflicts.fields",
     "Contact.Titel"),
    ({"push": {"value_maps": {"Lead.Stat": "us_states"}}}, "push.value_maps", "Lead.Stat"),
    ({"push": {"value_maps": {"Account.BillingState": "us_states"}}}, "push.value_maps",
     "Account.BillingState"),
    ({"push": {"lead_defaults": {"Compny": "[not provided]"}}}, "push.lead_defaults",
     "Compny"),
]


@on_standard_org
@pytest.mark.parametrize("overrides, key, value", MISTAKES,
                         ids=[f"{key}={value}" for _o, key, value in MISTAKES])
def test_a_configuration_mistake_fails_the_run_naming_key_and_value(sync, overrides, key, value):
    message = refused(sync, "mistake", **overrides)
    assert f"{key}: {value}: " in message, message
    assert_nothing_copied(sync)


@on_standard_org
def test_a_filter_on_an_unknown_object_fails_closed(sync):
    """``Leed`` for ``Lead``: not one do-not-call lead is copied; once spelled right, the
    filter keeps them out."""
    do_not_call = {r["Id"] for r in sync.truth("Lead")["Lead"] if r["DoNotCall"]}
    assert do_not_call
    message = refused(sync, "typo", sync_filters=[
        {"object": "Leed", "field": "DoNotCall", "skip_when": True}])
    assert message.startswith("sync_filters.0.object: Leed: not an object this sync copies "
                              "(synced objects: User, Account, Lead, Contact, "), message
    assert_nothing_copied(sync)

    sync.overrides["sync_filters"] = [{"object": "Lead", "field": "DoNotCall", "skip_when": True}]
    summary = sync.cycle("fixed")
    assert summary["counts"]["Lead"]["skipped"] >= len(do_not_call)
    copied = {r["sfdc_lead_id"] for r in sync.mdb.rows("person", "sfdc_lead_id IS NOT NULL")}
    assert copied and not copied & do_not_call


def _fields_around(sync: Sync, name: str) -> tuple[str, str]:
    """A text field of Lead the describe lists before ``name``, and one it lists after."""
    fields = [f["name"] for f in sync.org.salesforce().Lead.describe()["fields"]
              if f["type"] in {"string", "textarea", "url"}]
    at = fields.index(name)
    return fields[at - 1], fields[at + 1]


@on_standard_org
def test_a_mapping_onto_a_used_column_is_refused_whatever_the_field_order(sync):
    before, after = _fields_around(sync, "Title")
    for i, mapped in enumerate((before, after, "Email")):
        message = refused(sync, f"collision{i}", mappings={f"Lead.{mapped}": "title"})
        assert f"mappings['Lead.{mapped}']: title: " in message, message
        assert "Lead.Title" in message, message
    # Lead.Title onto the e-mail's column: refused too, naming Lead.Email.
    message = refused(sync, "onto-email", mappings={"Lead.Title": "email"})
    assert "mappings['Lead.Title']: email: column email is Lead.Email's too" in message, message
    assert_nothing_copied(sync)
    # Moving Title out of the way first makes the column free.
    sync.cycle("moved", mappings={f"Lead.{before}": "title", "Lead.Title": "job_title"})
    lead = next(r for r in sync.truth("Lead")["Lead"] if r[before] and not r["IsConverted"])
    person = sync.person(lead["Id"])
    assert (person["title"], person["job_title"]) == (lead[before], lead["Title"])
    assert person["email"] == lead["Email"]


def test_a_filter_the_staged_records_were_not_read_for_fails_closed():
    """A filter added after the run's extract: its field is not in the staged records, so the
    filter cannot be applied and no record passes (standard org's describes)."""
    config = load_config("/nonexistent/sfsync.yaml", overrides={
        "sync_filters": [{"object": "Lead", "field": "DoNotCall", "skip_when": True}]})
    schema = schema_for("standard")
    catalog = build_catalog({n: schema.describe(n, "59.0") for n in object_names()}, config)
    lead = catalog.object("Lead")
    assert filter_records(lead, [{"Id": "00Q1", "DoNotCall": False}])[0]
    with pytest.raises(ConfigError, match=r"^sync_filters: Lead\.DoNotCall was not read"):
        filter_records(lead, [{"Id": "00Q1", "Email": "a@example.org"}])

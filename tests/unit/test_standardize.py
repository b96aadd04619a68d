from __future__ import annotations

import pytest

from include.salesforce_emulator.schema import demo_schema
from include.sfsync.config import ConfigError, PushSettings, load_config
from include.sfsync.standardize import (
    BUILTIN_MAPS,
    CANADIAN_PROVINCES,
    COUNTRIES,
    US_STATES,
    Standardizer,
    builtin_map,
    normalize,
)

# Built-in map of each address picklist the default configuration standardises.
PICKLIST_MAPS = {("Lead", "State"): "us_states", ("Lead", "Country"): "countries",
                 ("Contact", "MailingState"): "us_states",
                 ("Contact", "MailingCountry"): "countries"}


@pytest.fixture(scope="module")
def std() -> Standardizer:
    return Standardizer.from_settings(PushSettings())


def _config_error(value_maps) -> str:
    with pytest.raises(ConfigError) as info:
        load_config("/nonexistent/sfsync.yaml", overrides={"push": {"value_maps": value_maps}})
    return str(info.value)


def test_default_fields(std):
    assert std.fields == {"Lead.State", "Lead.Country", "Contact.MailingState",
                          "Contact.MailingCountry"}


@pytest.mark.parametrize("value, expected", [
    ("CA", "California"), ("ca", "California"), (" CA ", "California"), ("Ca.", "California"),
    ("california", "California"), ("NEW  YORK", "New York"), ("dc", "District of Columbia"),
    ("Washington, D.C.", "District of Columbia"), ("QC", "Quebec"), ("Québec", "Quebec"),
    ("on", "Ontario"), ("PR", "Puerto Rico"),
])
def test_states(std, value, expected):
    assert std.standardize("Lead", "State", value) == expected
    assert std.standardize("Contact", "MailingState", value) == expected


@pytest.mark.parametrize("value, expected", [
    ("US", "United States"), ("USA", "United States"), ("U.S.A.", "United States"),
    ("u.s.", "United States"), ("United States of America", "United States"),
    ("UK", "United Kingdom"), ("GB", "United Kingdom"), ("gbr", "United Kingdom"),
    ("Great Britain", "United Kingdom"), ("Deutschland", "Germany"), ("DE", "Germany"),
    ("deu", "Germany"), ("holland", "Netherlands"), ("CA", "Canada"), (" ie ", "Ireland"),
    ("cote d'ivoire", "Cote d'Ivoire"), ("Côte d'Ivoire", "Cote d'Ivoire"),
    ("curacao", "Curaçao"), ("St. Lucia", "Saint Lucia"), ("South Korea", "Korea, Republic of"),
    ("Virgin Islands, U.S.", "Virgin Islands, U.S."),
])
def test_countries(std, value, expected):
    assert std.standardize("Lead", "Country", value) == expected
    assert std.standardize("Contact", "MailingCountry", value) == expected


def test_object_and_field_match_case_insensitively(std):
    assert std.standardize("lead", "STATE", "ca") == "California"


@pytest.mark.parametrize("value", [None, 42, 1.5, True, "", "   ", "Atlantis", "N/A", "NA", "California!"])
def test_unknown_values_unchanged(std, value):
    assert std.standardize("Lead", "Country", value) is value
    assert std.standardize("Lead", "State", value) is value


def test_unmapped_fields_unchanged(std):
    assert std.standardize("Lead", "City", "CA") == "CA"
    assert std.standardize("Account", "BillingState", "CA") == "CA"


def test_explicit_map_via_config():
    cfg = load_config("/nonexistent/sfsync.yaml", overrides={"push": {"value_maps": {
        "Lead.Industry": {"tech": "Technology", "Fin. Services": "Finance"},
        "Lead.State": "us_states"}}})
    std = Standardizer.from_settings(cfg.push)
    assert std.fields == {"Lead.Industry", "Lead.State"}
    assert std.standardize("Lead", "Industry", " TECH ") == "Technology"
    assert std.standardize("Lead", "Industry", "fin. services.") == "Finance"
    assert std.standardize("Lead", "Industry", "Technology") == "Technology"
    assert std.standardize("Lead", "Industry", "Retail") == "Retail"
    assert std.standardize("Lead", "Country", "USA") == "USA"  # no longer configured


def test_empty_config_maps_nothing():
    std = Standardizer.from_settings(PushSettings(value_maps={}))
    assert std.fields == frozenset()
    assert std.standardize("Lead", "State", "CA") == "CA"


def test_unknown_builtin_is_a_config_error():
    message = _config_error({"Lead.State": "us_state"})
    assert "push.value_maps" in message and "'Lead.State'" in message
    assert "unknown built-in map 'us_state' (known: countries, us_states)" in message


@pytest.mark.parametrize("value_maps, expected", [
    ({"LeadState": "us_states"}, "must look like 'Object.Field'"),
    ({"Lead.": "us_states"}, "must look like 'Object.Field'"),
    ({"Lead.Industry": {"tech": "Technology", "TECH.": "Telecommunications"}},
     "maps to both 'Technology' and 'Telecommunications'"),
    ({"Lead.Industry": {" ": "Technology"}}, "is blank"),
])
def test_bad_value_maps_are_config_errors(value_maps, expected):
    message = _config_error(value_maps)
    assert repr(next(iter(value_maps))) in message and expected in message


def test_standardizer_names_the_key():
    with pytest.raises(ConfigError, match=r"^push\.value_maps\['Lead\.State'\]: unknown built-in map "
                                          r"'us_state' \(known: countries, us_states\)$"):
        Standardizer({"Lead.State": "us_state"})


def test_builtin_tables_are_consistent():
    assert BUILTIN_MAPS == ("countries", "us_states")
    assert len(COUNTRIES) == 249
    alpha3 = [a3 for a3, _ in COUNTRIES.values()]
    assert len(set(alpha3)) == len(alpha3)
    assert all(len(a2) == 2 and a2.isupper() and len(a3) == 3 and a3.isupper()
               for a2, (a3, _) in COUNTRIES.items())
    assert len(US_STATES) == 60 and not set(US_STATES) & set(CANADIAN_PROVINCES)
    for name in BUILTIN_MAPS:  # every produced value maps to itself
        table = builtin_map(name)
        assert all(table[normalize(target)] == target for target in table.values())


@pytest.mark.parametrize("sf_object, sf_field", sorted(PICKLIST_MAPS))
def test_emulator_picklists_are_covered(std, sf_object, sf_field):
    field = demo_schema().get(sf_object).field(sf_field)
    assert field is not None and field.restricted_picklist and field.picklist
    picklist = set(field.picklist)
    # Every picklist value is reachable: it maps to itself, whatever its case or spacing.
    for value in picklist:
        assert std.standardize(sf_object, sf_field, value) == value
        assert std.standardize(sf_object, sf_field, f" {value.upper()} ") == value
    # The codes of picklist values map into the picklist.
    if PICKLIST_MAPS[sf_object, sf_field] == "us_states":
        codes = US_STATES | CANADIAN_PROVINCES
    else:
        codes = {code: name for a2, (a3, name) in COUNTRIES.items() for code in (a2, a3)}
    covered = {name for name in codes.values() if name in picklist}
    assert covered == picklist
    for code, name in codes.items():
        if name in picklist:
            assert std.standardize(sf_object, sf_field, code) == name
            assert std.standardize(sf_object, sf_field, code.lower()) == name
    # Whatever the map produces is spelt exactly as in the picklist when the picklist has it.
    by_key = {normalize(value): value for value in picklist}
    for target in set(builtin_map(PICKLIST_MAPS[sf_object, sf_field]).values()):
        assert by_key.get(normalize(target), target) == target

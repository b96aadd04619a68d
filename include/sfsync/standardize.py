"""Value standardisation before the push writes to Salesforce.

``push.value_maps`` maps an ``Object.Field`` to a built-in map (``us_states``, ``countries``) or
to an explicit ``{"value as stored": "value Salesforce accepts"}``. Lookups ignore case,
surrounding and repeated whitespace, trailing dots and accents, so "ca", " CA " and "Ca." all
become "California"; values the map does not know (and non-strings) are written unchanged.

The built-in names follow Salesforce's standard state and country/territory picklists (ISO 3166
English short names), which is what a restricted State or Country picklist accepts.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from include.sfsync.errors import ConfigError

_DATA = json.loads((Path(__file__).parent / "standard_values.json").read_text(encoding="utf-8"))
# USPS code -> the name in Salesforce's United States state picklist (territories and military
# post offices included).
US_STATES: dict[str, str] = _DATA["us_states"]
# Canada Post code -> province or territory. Part of the ``us_states`` map: a State field holds
# Canadian provinces too (the codes never clash with USPS codes).
CANADIAN_PROVINCES: dict[str, str] = _DATA["canadian_provinces"]
# Other common spellings of a state or province -> its name.
STATE_ALIASES: dict[str, str] = _DATA["state_aliases"]
# ISO 3166 alpha-2 -> (alpha-3, the name in Salesforce's Country picklist).
COUNTRIES: dict[str, tuple[str, str]] = {k: tuple(v) for k, v in _DATA["countries"].items()}
# Codes left out of the ``countries`` map: "NA" is far more often "not applicable" than Namibia.
AMBIGUOUS_COUNTRY_CODES = frozenset({"NA"})

# Common names, abbreviations and native names -> the picklist name. Names starting "Saint" also
# match with "St" and "St." (added when the map is built).
COUNTRY_ALIASES: dict[str, str] = _DATA["country_aliases"]


def normalize(text: str) -> str:
    """The lookup form of a value: trimmed, inner whitespace collapsed, without trailing dots or
    accents, case-folded."""
    text = " ".join(text.split()).rstrip(". ")
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return text.casefold()


def _lookup_table(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """{normalize(value): target}; a value that would map to two targets raises ValueError."""
    table: dict[str, str] = {}
    for value, target in pairs:
        key = normalize(value)
        if not key:
            raise ValueError(f"{value!r} is blank")
        if table.setdefault(key, target) != target:
            raise ValueError(f"{value!r} maps to both {table[key]!r} and {target!r}")
    return table


def _state_pairs() -> Iterable[tuple[str, str]]:
    for code, name in (US_STATES | CANADIAN_PROVINCES).items():
        yield code, name
        yield name, name
    yield from STATE_ALIASES.items()


def _country_pairs() -> Iterable[tuple[str, str]]:
    for alpha2, (alpha3, name) in COUNTRIES.items():
        if alpha2 not in AMBIGUOUS_COUNTRY_CODES:
            yield alpha2, name
        yield alpha3, name
        yield name, name
        if name.startswith("Saint "):
            yield "St " + name[6:], name
            yield "St. " + name[6:], name
    yield from COUNTRY_ALIASES.items()


_BUILTINS = {"countries": _country_pairs, "us_states": _state_pairs}
BUILTIN_MAPS: tuple[str, ...] = tuple(sorted(_BUILTINS))


@cache
def builtin_map(name: str) -> dict[str, str]:
    """The lookup table {normalized value: Salesforce value} of a built-in map."""
    return _lookup_table(_BUILTINS[name]())


def value_map_problem(key: str, spec: Any) -> str | None:
    """What is wrong with the ``push.value_maps`` entry ``key: spec``, or None."""
    if not isinstance(key, str) or key.count(".") != 1 or not all(p.strip() for p in key.split(".")):
        return "the key must look like 'Object.Field'"
    if isinstance(spec, str):
        if spec not in _BUILTINS:
            return f"unknown built-in map {spec!r} (known: {', '.join(BUILTIN_MAPS)})"
        return None
    if not isinstance(spec, Mapping):
        return f"must be a built-in map's name ({', '.join(BUILTIN_MAPS)}) or a mapping of values"
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in spec.items()):
        return "an explicit map's keys and values must be strings"
    try:
        _lookup_table(spec.items())
    except ValueError as exc:
        return f"explicit map: {exc} (keys match ignoring case, spaces, accents and trailing dots)"
    return None


class Standardizer:
    """Maps values to what Salesforce accepts, per ``Object.Field``, as configured."""

    def __init__(self, maps: Mapping[str, str | Mapping[str, str]]):
        """``maps`` as in ``push.value_maps``; raises ConfigError naming the bad key."""
        self._fields = frozenset(maps)
        self._tables: dict[str, dict[str, str]] = {}
        for key, spec in maps.items():
            problem = value_map_problem(key, spec)
            if problem:
                raise ConfigError(f"push.value_maps[{key!r}]: {problem}")
            table = builtin_map(spec) if isinstance(spec, str) else _lookup_table(spec.items())
            self._tables[key.lower()] = table

    @classmethod
    def from_settings(cls, push_settings: Any) -> Standardizer:
        """From ``SyncConfig.push`` (anything with a ``value_maps`` mapping)."""
        return cls(push_settings.value_maps)

    @property
    def fields(self) -> frozenset[str]:
        """The configured ``Object.Field`` keys, as written in the configuration."""
        return self._fields

    def standardize(self, sf_object: str, sf_field: str, value: Any) -> Any:
        """``value`` as Salesforce accepts it; unchanged when the field has no map, the map does
        not know the value, or the value is not a string."""
        if not isinstance(value, str):
            return value
        table = self._tables.get(f"{sf_object}.{sf_field}".lower())
        if table is None:
            return value
        return table.get(normalize(value), value)

"""Value standardisation before the push writes to Salesforce.

``push.value_maps`` maps an ``Object.Field`` to a built-in map (``us_states``, ``countries``) or
to an explicit ``{"value as stored": "value Salesforce accepts"}``. Lookups ignore case,
surrounding and repeated whitespace, trailing dots and accents, so "ca", " CA " and "Ca." all
become "California"; values the map does not know (and non-strings) are written unchanged.

The built-in names follow Salesforce's standard state and country/territory picklists (ISO 3166
English short names), which is what a restricted State or Country picklist accepts.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from include.sfsync.config import ConfigError

# USPS code -> the name in Salesforce's United States state picklist.
US_STATES: dict[str, str] = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California",
    "CO": "Colorado", "CT": "Connecticut", "DE": "Delaware", "FL": "Florida", "GA": "Georgia",
    "HI": "Hawaii", "ID": "Idaho", "IL": "Illinois", "IN": "Indiana", "IA": "Iowa", "KS": "Kansas",
    "KY": "Kentucky", "LA": "Louisiana", "ME": "Maine", "MD": "Maryland", "MA": "Massachusetts",
    "MI": "Michigan", "MN": "Minnesota", "MS": "Mississippi", "MO": "Missouri", "MT": "Montana",
    "NE": "Nebraska", "NV": "Nevada", "NH": "New Hampshire", "NJ": "New Jersey",
    "NM": "New Mexico", "NY": "New York", "NC": "North Carolina", "ND": "North Dakota",
    "OH": "Ohio", "OK": "Oklahoma", "OR": "Oregon", "PA": "Pennsylvania", "RI": "Rhode Island",
    "SC": "South Carolina", "SD": "South Dakota", "TN": "Tennessee", "TX": "Texas", "UT": "Utah",
    "VT": "Vermont", "VA": "Virginia", "WA": "Washington", "WV": "West Virginia",
    "WI": "Wisconsin", "WY": "Wyoming", "DC": "District of Columbia",
    # Territories and military post offices.
    "AS": "American Samoa", "GU": "Guam", "MP": "Northern Mariana Islands", "PR": "Puerto Rico",
    "UM": "United States Minor Outlying Islands", "VI": "Virgin Islands, U.S.",
    "AA": "Armed Forces Americas", "AE": "Armed Forces Europe", "AP": "Armed Forces Pacific",
}

# Canada Post code -> province or territory. Part of the ``us_states`` map: a State field holds
# Canadian provinces too (the codes never clash with USPS codes).
CANADIAN_PROVINCES: dict[str, str] = {
    "AB": "Alberta", "BC": "British Columbia", "MB": "Manitoba", "NB": "New Brunswick",
    "NL": "Newfoundland and Labrador", "NS": "Nova Scotia", "NT": "Northwest Territories",
    "NU": "Nunavut", "ON": "Ontario", "PE": "Prince Edward Island", "QC": "Quebec",
    "SK": "Saskatchewan", "YT": "Yukon",
}

# Other common spellings of a state or province -> its name.
STATE_ALIASES: dict[str, str] = {
    "Washington DC": "District of Columbia", "Washington, DC": "District of Columbia",
    "Washington D.C": "District of Columbia", "Washington, D.C": "District of Columbia",
    "D.C": "District of Columbia", "US Virgin Islands": "Virgin Islands, U.S.",
    "U.S. Virgin Islands": "Virgin Islands, U.S.", "Newfoundland": "Newfoundland and Labrador",
    "PEI": "Prince Edward Island", "P.E.I": "Prince Edward Island", "Yukon Territory": "Yukon",
}

# ISO 3166-1 alpha-2 -> (alpha-3, the English short name of Salesforce's country picklist).
COUNTRIES: dict[str, tuple[str, str]] = {
    "AD": ("AND", "Andorra"), "AE": ("ARE", "United Arab Emirates"),
    "AF": ("AFG", "Afghanistan"), "AG": ("ATG", "Antigua and Barbuda"),
    "AI": ("AIA", "Anguilla"), "AL": ("ALB", "Albania"), "AM": ("ARM", "Armenia"),
    "AO": ("AGO", "Angola"), "AQ": ("ATA", "Antarctica"), "AR": ("ARG", "Argentina"),
    "AS": ("ASM", "American Samoa"), "AT": ("AUT", "Austria"), "AU": ("AUS", "Australia"),
    "AW": ("ABW", "Aruba"), "AX": ("ALA", "Aland Islands"), "AZ": ("AZE", "Azerbaijan"),
    "BA": ("BIH", "Bosnia and Herzegovina"), "BB": ("BRB", "Barbados"),
    "BD": ("BGD", "Bangladesh"), "BE": ("BEL", "Belgium"), "BF": ("BFA", "Burkina Faso"),
    "BG": ("BGR", "Bulgaria"), "BH": ("BHR", "Bahrain"), "BI": ("BDI", "Burundi"),
    "BJ": ("BEN", "Benin"), "BL": ("BLM", "Saint Barthélemy"), "BM": ("BMU", "Bermuda"),
    "BN": ("BRN", "Brunei Darussalam"), "BO": ("BOL", "Bolivia, Plurinational State of"),
    "BQ": ("BES", "Bonaire, Sint Eustatius and Saba"), "BR": ("BRA", "Brazil"),
    "BS": ("BHS", "Bahamas"), "BT": ("BTN", "Bhutan"), "BV": ("BVT", "Bouvet Island"),
    "BW": ("BWA", "Botswana"), "BY": ("BLR", "Belarus"), "BZ": ("BLZ", "Belize"),
    "CA": ("CAN", "Canada"), "CC": ("CCK", "Cocos (Keeling) Islands"),
    "CD": ("COD", "Congo, the Democratic Republic of the"),
    "CF": ("CAF", "Central African Republic"), "CG": ("COG", "Congo"),
    "CH": ("CHE", "Switzerland"), "CI": ("CIV", "Cote d'Ivoire"), "CK": ("COK", "Cook Islands"),
    "CL": ("CHL", "Chile"), "CM": ("CMR", "Cameroon"), "CN": ("CHN", "China"),
    "CO": ("COL", "Colombia"), "CR": ("CRI", "Costa Rica"), "CU": ("CUB", "Cuba"),
    "CV": ("CPV", "Cape Verde"), "CW": ("CUW", "Curaçao"), "CX": ("CXR", "Christmas Island"),
    "CY": ("CYP", "Cyprus"), "CZ": ("CZE", "Czechia"), "DE": ("DEU", "Germany"),
    "DJ": ("DJI", "Djibouti"), "DK": ("DNK", "Denmark"), "DM": ("DMA", "Dominica"),
    "DO": ("DOM", "Dominican Republic"), "DZ": ("DZA", "Algeria"), "EC": ("ECU", "Ecuador"),
    "EE": ("EST", "Estonia"), "EG": ("EGY", "Egypt"), "EH": ("ESH", "Western Sahara"),
    "ER": ("ERI", "Eritrea"), "ES": ("ESP", "Spain"), "ET": ("ETH", "Ethiopia"),
    "FI": ("FIN", "Finland"), "FJ": ("FJI", "Fiji"), "FK": ("FLK", "Falkland Islands (Malvinas)"),
    "FM": ("FSM", "Micronesia, Federated States of"), "FO": ("FRO", "Faroe Islands"),
    "FR": ("FRA", "France"), "GA": ("GAB", "Gabon"), "GB": ("GBR", "United Kingdom"),
    "GD": ("GRD", "Grenada"), "GE": ("GEO", "Georgia"), "GF": ("GUF", "French Guiana"),
    "GG": ("GGY", "Guernsey"), "GH": ("GHA", "Ghana"), "GI": ("GIB", "Gibraltar"),
    "GL": ("GRL", "Greenland"), "GM": ("GMB", "Gambia"), "GN": ("GIN", "Guinea"),
    "GP": ("GLP", "Guadeloupe"), "GQ": ("GNQ", "Equatorial Guinea"), "GR": ("GRC", "Greece"),
    "GS": ("SGS", "South Georgia and the South Sandwich Islands"), "GT": ("GTM", "Guatemala"),
    "GU": ("GUM", "Guam"), "GW": ("GNB", "Guinea-Bissau"), "GY": ("GUY", "Guyana"),
    "HK": ("HKG", "Hong Kong"), "HM": ("HMD", "Heard Island and McDonald Islands"),
    "HN": ("HND", "Honduras"), "HR": ("HRV", "Croatia"), "HT": ("HTI", "Haiti"),
    "HU": ("HUN", "Hungary"), "ID": ("IDN", "Indonesia"), "IE": ("IRL", "Ireland"),
    "IL": ("ISR", "Israel"), "IM": ("IMN", "Isle of Man"), "IN": ("IND", "India"),
    "IO": ("IOT", "British Indian Ocean Territory"), "IQ": ("IRQ", "Iraq"),
    "IR": ("IRN", "Iran, Islamic Republic of"), "IS": ("ISL", "Iceland"), "IT": ("ITA", "Italy"),
    "JE": ("JEY", "Jersey"), "JM": ("JAM", "Jamaica"), "JO": ("JOR", "Jordan"),
    "JP": ("JPN", "Japan"), "KE": ("KEN", "Kenya"), "KG": ("KGZ", "Kyrgyzstan"),
    "KH": ("KHM", "Cambodia"), "KI": ("KIR", "Kiribati"), "KM": ("COM", "Comoros"),
    "KN": ("KNA", "Saint Kitts and Nevis"), "KP": ("PRK", "Korea, Democratic People's Republic of"),
    "KR": ("KOR", "Korea, Republic of"), "KW": ("KWT", "Kuwait"), "KY": ("CYM", "Cayman Islands"),
    "KZ": ("KAZ", "Kazakhstan"), "LA": ("LAO", "Lao People's Democratic Republic"),
    "LB": ("LBN", "Lebanon"), "LC": ("LCA", "Saint Lucia"), "LI": ("LIE", "Liechtenstein"),
    "LK": ("LKA", "Sri Lanka"), "LR": ("LBR", "Liberia"), "LS": ("LSO", "Lesotho"),
    "LT": ("LTU", "Lithuania"), "LU": ("LUX", "Luxembourg"), "LV": ("LVA", "Latvia"),
    "LY": ("LBY", "Libya"), "MA": ("MAR", "Morocco"), "MC": ("MCO", "Monaco"),
    "MD": ("MDA", "Moldova, Republic of"), "ME": ("MNE", "Montenegro"),
    "MF": ("MAF", "Saint Martin (French part)"), "MG": ("MDG", "Madagascar"),
    "MH": ("MHL", "Marshall Islands"), "MK": ("MKD", "North Macedonia"), "ML": ("MLI", "Mali"),
    "MM": ("MMR", "Myanmar"), "MN": ("MNG", "Mongolia"), "MO": ("MAC", "Macao"),
    "MP": ("MNP", "Northern Mariana Islands"), "MQ": ("MTQ", "Martinique"),
    "MR": ("MRT", "Mauritania"), "MS": ("MSR", "Montserrat"), "MT": ("MLT", "Malta"),
    "MU": ("MUS", "Mauritius"), "MV": ("MDV", "Maldives"), "MW": ("MWI", "Malawi"),
    "MX": ("MEX", "Mexico"), "MY": ("MYS", "Malaysia"), "MZ": ("MOZ", "Mozambique"),
    "NA": ("NAM", "Namibia"), "NC": ("NCL", "New Caledonia"), "NE": ("NER", "Niger"),
    "NF": ("NFK", "Norfolk Island"), "NG": ("NGA", "Nigeria"), "NI": ("NIC", "Nicaragua"),
    "NL": ("NLD", "Netherlands"), "NO": ("NOR", "Norway"), "NP": ("NPL", "Nepal"),
    "NR": ("NRU", "Nauru"), "NU": ("NIU", "Niue"), "NZ": ("NZL", "New Zealand"),
    "OM": ("OMN", "Oman"), "PA": ("PAN", "Panama"), "PE": ("PER", "Peru"),
    "PF": ("PYF", "French Polynesia"), "PG": ("PNG", "Papua New Guinea"),
    "PH": ("PHL", "Philippines"), "PK": ("PAK", "Pakistan"), "PL": ("POL", "Poland"),
    "PM": ("SPM", "Saint Pierre and Miquelon"), "PN": ("PCN", "Pitcairn"),
    "PR": ("PRI", "Puerto Rico"), "PS": ("PSE", "Palestine"), "PT": ("PRT", "Portugal"),
    "PW": ("PLW", "Palau"), "PY": ("PRY", "Paraguay"), "QA": ("QAT", "Qatar"),
    "RE": ("REU", "Reunion"), "RO": ("ROU", "Romania"), "RS": ("SRB", "Serbia"),
    "RU": ("RUS", "Russian Federation"), "RW": ("RWA", "Rwanda"), "SA": ("SAU", "Saudi Arabia"),
    "SB": ("SLB", "Solomon Islands"), "SC": ("SYC", "Seychelles"), "SD": ("SDN", "Sudan"),
    "SE": ("SWE", "Sweden"), "SG": ("SGP", "Singapore"),
    "SH": ("SHN", "Saint Helena, Ascension and Tristan da Cunha"), "SI": ("SVN", "Slovenia"),
    "SJ": ("SJM", "Svalbard and Jan Mayen"), "SK": ("SVK", "Slovakia"),
    "SL": ("SLE", "Sierra Leone"), "SM": ("SMR", "San Marino"), "SN": ("SEN", "Senegal"),
    "SO": ("SOM", "Somalia"), "SR": ("SUR", "Suriname"), "SS": ("SSD", "South Sudan"),
    "ST": ("STP", "Sao Tome and Principe"), "SV": ("SLV", "El Salvador"),
    "SX": ("SXM", "Sint Maarten (Dutch part)"), "SY": ("SYR", "Syrian Arab Republic"),
    "SZ": ("SWZ", "Eswatini"), "TC": ("TCA", "Turks and Caicos Islands"), "TD": ("TCD", "Chad"),
    "TF": ("ATF", "French Southern Territories"), "TG": ("TGO", "Togo"), "TH": ("THA", "Thailand"),
    "TJ": ("TJK", "Tajikistan"), "TK": ("TKL", "Tokelau"), "TL": ("TLS", "Timor-Leste"),
    "TM": ("TKM", "Turkmenistan"), "TN": ("TUN", "Tunisia"), "TO": ("TON", "Tonga"),
    "TR": ("TUR", "Turkey"), "TT": ("TTO", "Trinidad and Tobago"), "TV": ("TUV", "Tuvalu"),
    "TW": ("TWN", "Taiwan"), "TZ": ("TZA", "Tanzania, United Republic of"),
    "UA": ("UKR", "Ukraine"), "UG": ("UGA", "Uganda"),
    "UM": ("UMI", "United States Minor Outlying Islands"), "US": ("USA", "United States"),
    "UY": ("URY", "Uruguay"), "UZ": ("UZB", "Uzbekistan"),
    "VA": ("VAT", "Holy See (Vatican City State)"),
    "VC": ("VCT", "Saint Vincent and the Grenadines"),
    "VE": ("VEN", "Venezuela, Bolivarian Republic of"), "VG": ("VGB", "Virgin Islands, British"),
    "VI": ("VIR", "Virgin Islands, U.S."), "VN": ("VNM", "Vietnam"), "VU": ("VUT", "Vanuatu"),
    "WF": ("WLF", "Wallis and Futuna"), "WS": ("WSM", "Samoa"), "YE": ("YEM", "Yemen"),
    "YT": ("MYT", "Mayotte"), "ZA": ("ZAF", "South Africa"), "ZM": ("ZMB", "Zambia"),
    "ZW": ("ZWE", "Zimbabwe"),
}

# Codes left out of the ``countries`` map: "NA" is far more often "not applicable" than Namibia.
AMBIGUOUS_COUNTRY_CODES = frozenset({"NA"})

# Common names, abbreviations and native names -> the picklist name. Names starting "Saint" also
# match with "St" and "St." (added when the map is built).
COUNTRY_ALIASES: dict[str, str] = {
    "USA": "United States", "U.S.A": "United States", "U.S": "United States",
    "United States of America": "United States", "US of A": "United States",
    "America": "United States",
    "UK": "United Kingdom", "U.K": "United Kingdom", "Great Britain": "United Kingdom",
    "Britain": "United Kingdom", "England": "United Kingdom", "Scotland": "United Kingdom",
    "Wales": "United Kingdom", "Northern Ireland": "United Kingdom",
    "United Kingdom of Great Britain and Northern Ireland": "United Kingdom",
    "Deutschland": "Germany", "Holland": "Netherlands", "The Netherlands": "Netherlands",
    "Nederland": "Netherlands", "España": "Spain", "Italia": "Italy", "Schweiz": "Switzerland",
    "Suisse": "Switzerland", "Svizzera": "Switzerland", "Österreich": "Austria",
    "Belgique": "Belgium", "België": "Belgium", "Sverige": "Sweden", "Norge": "Norway",
    "Danmark": "Denmark", "Suomi": "Finland", "Polska": "Poland", "Brasil": "Brazil",
    "Nippon": "Japan", "Nihon": "Japan", "Eire": "Ireland", "Republic of Ireland": "Ireland",
    "UAE": "United Arab Emirates", "U.A.E": "United Arab Emirates", "KSA": "Saudi Arabia",
    "PRC": "China", "People's Republic of China": "China", "Mainland China": "China",
    "South Korea": "Korea, Republic of", "Republic of Korea": "Korea, Republic of",
    "Korea": "Korea, Republic of", "North Korea": "Korea, Democratic People's Republic of",
    "DPRK": "Korea, Democratic People's Republic of",
    "DRC": "Congo, the Democratic Republic of the", "DR Congo": "Congo, the Democratic Republic of the",
    "Democratic Republic of the Congo": "Congo, the Democratic Republic of the",
    "Congo-Kinshasa": "Congo, the Democratic Republic of the",
    "Republic of the Congo": "Congo", "Congo-Brazzaville": "Congo",
    "Russia": "Russian Federation", "Iran": "Iran, Islamic Republic of",
    "Syria": "Syrian Arab Republic", "Viet Nam": "Vietnam", "Laos": "Lao People's Democratic Republic",
    "Lao PDR": "Lao People's Democratic Republic", "Bolivia": "Bolivia, Plurinational State of",
    "Venezuela": "Venezuela, Bolivarian Republic of", "Tanzania": "Tanzania, United Republic of",
    "Moldova": "Moldova, Republic of", "Micronesia": "Micronesia, Federated States of",
    "Czech Republic": "Czechia", "Macedonia": "North Macedonia", "Ivory Coast": "Cote d'Ivoire",
    "Cabo Verde": "Cape Verde", "Swaziland": "Eswatini", "Burma": "Myanmar",
    "East Timor": "Timor-Leste", "Türkiye": "Turkey", "Brunei": "Brunei Darussalam",
    "Vatican": "Holy See (Vatican City State)", "Vatican City": "Holy See (Vatican City State)",
    "Holy See": "Holy See (Vatican City State)", "Palestine, State of": "Palestine",
    "Falkland Islands": "Falkland Islands (Malvinas)", "Macau": "Macao",
    "Hong Kong SAR": "Hong Kong", "Taiwan, Province of China": "Taiwan",
    "British Virgin Islands": "Virgin Islands, British", "US Virgin Islands": "Virgin Islands, U.S.",
    "U.S. Virgin Islands": "Virgin Islands, U.S.", "The Bahamas": "Bahamas",
    "The Gambia": "Gambia", "RSA": "South Africa",
}


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

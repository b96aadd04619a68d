"""What is synced where: object types, their tables, and every field's mapping.

The catalog is built from the org's describe results and the configuration. Every field the
sync user can see becomes a column unless the configuration hides it, it is a formula (excluded
by default: it changes without bumping SystemModstamp) or its type cannot be stored. Leads and
contacts both land in ``person``; fields that mean the same thing share one column.

It is also where the configuration meets the org: every object, field and column the
configuration names is checked against the describes here, and a mistake is a
:class:`ConfigError` naming the key and the value (a mistyped name must never mean "no filter" or
"nothing hidden").
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from include.sfsync.config import SyncConfig, SyncFilter
from include.sfsync.errors import ConfigError
from include.sfsync.objects import (
    GROUP_ORDER,
    PEOPLE,
    ObjectType,
    custom_object_type,
    object_types,
    snake,
)
from include.sfsync.values import parse_sf_datetime, parse_value, same

# Contact fields that mean the same as a Lead field share the lead's column.
PERSON_SHARED = {"MailingStreet": "street", "MailingCity": "city", "MailingState": "state",
                 "MailingPostalCode": "postal_code", "MailingCountry": "country"}
PERSON_RENAMED = {("Lead", "Status"): "lead_status", ("Lead", "Rating"): "lead_rating"}
# Campaign member fields Salesforce copies from the member's lead or contact: they change when
# the person does, without the member's SystemModstamp (the person's own columns hold them).
PERSON_COPIES = {"CampaignMember": {
    "City", "CompanyOrAccount", "Country", "Description", "DoNotCall", "Email", "Fax",
    "FirstName", "HasOptedOutOfEmail", "HasOptedOutOfFax", "LastName", "LeadOrContactOwnerId",
    "LeadSource", "MobilePhone", "Name", "Phone", "PostalCode", "Salutation", "State", "Street",
    "Title"}}
# Objects the push creates records of that carry the row's key (push.create_key_field):
# Contact gets it from its lead when the admin maps the field for lead conversion.
CREATE_KEY_OBJECTS = ("Lead", "Contact", "Campaign")
# Salesforce's CreatedDate against this machine's clock, when a record is matched to a create
CREATE_CLOCK_SKEW = timedelta(minutes=10)
# Address and geolocation compounds are views over their component fields (which are synced).
COMPOUND_TYPES = {"address", "location"}
UNSTORABLE_TYPES = {"base64", "anyType", "complexvalue"}
# Fields every extract selects, whatever the mapping says, because the loader needs them.
PROCESSING_FIELDS = {
    "*": ("Id", "SystemModstamp", "IsDeleted", "CreatedDate"),
    "Lead": ("MasterRecordId", "IsConverted", "ConvertedContactId", "ConvertedAccountId",
             "Email"),
    "Contact": ("MasterRecordId", "AccountId", "Email"),
    "Account": ("MasterRecordId",),
    "CampaignMember": ("CampaignId", "LeadId", "ContactId"),
    "OpportunityContactRole": ("OpportunityId", "ContactId"),
    "Task": ("WhoId",),
    "Event": ("WhoId",),
}
# Column names the sync keeps for itself (its ids, stamps and links; store/schema.py): a mapping
# may not point a field at one unless it is that field's own default column.
OWN_COLUMN_PREFIXES = ("sfdc_", "sfsync_")
OWN_COLUMNS = {"id", "person_id"}
NUMBER_TYPES = {"int", "double", "currency", "percent"}


def processing_fields(sf_object: str) -> tuple[str, ...]:
    return PROCESSING_FIELDS["*"] + PROCESSING_FIELDS.get(sf_object, ())


def reference_column(name: str) -> str:
    base = name[:-3] if name.endswith("__c") else name
    if base.endswith("Id") and len(base) > 2:
        base = base[:-2]
    return f"sfdc_{snake(base)}_id"


@dataclass
class FieldMap:
    sf_object: str
    sf_field: str
    sf_type: str
    column: str | None
    synced: bool
    reason: str
    reference_to: tuple[str, ...] = ()
    updateable: bool = False
    createable: bool = False

    @property
    def key(self) -> str:
        return f"{self.sf_object}.{self.sf_field}"


@dataclass
class ObjectCatalog:
    type: ObjectType
    fields: list[FieldMap]
    filters: list[SyncFilter]
    describe_fields: dict[str, dict] = field(default_factory=dict)
    # The org's External ID field creates are upserted on (push.create_key_field), if it has one
    create_key: str | None = None

    @property
    def sf_object(self) -> str:
        return self.type.sf_object

    @property
    def synced(self) -> list[FieldMap]:
        return [f for f in self.fields if f.synced]

    def column_of(self, sf_field: str) -> str | None:
        for f in self.fields:
            if f.sf_field == sf_field and f.synced:
                return f.column
        return None

    @property
    def soql_fields(self) -> list[str]:
        """Fields to SELECT: every synced field plus what loading and filtering need."""
        wanted = [f.sf_field for f in self.synced]
        extra = list(processing_fields(self.sf_object)) + [flt.field for flt in self.filters]
        if self.create_key:
            extra.append(self.create_key)  # the pull recognises what a lost create made
        for name in extra:
            if name in self.describe_fields and name not in wanted:
                wanted.append(name)
        return wanted


    def carries(self, sent: dict, rec: dict, sent_at: datetime | None = None) -> bool:
        """Whether record ``rec`` is what a create that sent ``sent`` (at ``sent_at``) made: the
        same key (in the create key field), or, without one, created since and carrying the
        same value in every field sent."""
        if self.create_key and sent.get(self.create_key):
            return rec.get(self.create_key) == sent[self.create_key]
        if sent_at is not None and rec.get("CreatedDate") and \
                parse_sf_datetime(rec["CreatedDate"]) < sent_at - CREATE_CLOCK_SKEW:
            return False
        types = {name: meta["type"] for name, meta in self.describe_fields.items()}
        return bool(sent) and all(
            name in rec and same(parse_value(types.get(name, "string"), value),
                                 parse_value(types.get(name, "string"), rec[name]))
            for name, value in sent.items())


@dataclass
class Column:
    name: str
    sql_type: str  # text, boolean, integer, float, date, datetime
    sources: list[str] = field(default_factory=list)  # "Object.Field"


SQL_TYPES = {
    "boolean": "boolean", "int": "integer", "double": "float", "currency": "float",
    "percent": "float", "date": "date", "datetime": "datetime",
}


def sql_type_of(sf_type: str) -> str:
    return SQL_TYPES.get(sf_type, "text")


@dataclass
class Catalog:
    objects: dict[str, ObjectCatalog]
    tables: dict[str, dict[str, Column]]
    config: SyncConfig
    # Custom objects the configuration lists that this org lacks or hides from the sync user
    # (one line each, naming them): the sync goes on without them.
    warnings: list[str] = field(default_factory=list)

    def ordered(self) -> list[ObjectCatalog]:
        """Dependency order: by group, then as listed (leads load before contacts)."""
        position = {name: i for i, name in enumerate(self.objects)}
        return sorted(self.objects.values(),
                      key=lambda o: (GROUP_ORDER.index(o.type.group), position[o.sf_object]))

    def object(self, name: str) -> ObjectCatalog:
        return self.objects[name]

    def two_way_tables(self) -> list[str]:
        """Tables whose local changes are pushed to Salesforce (captured by triggers)."""
        return list(dict.fromkeys(o.type.table for o in self.ordered() if o.type.two_way))

    def mapping_overrides_template(self) -> dict[str, str | None]:
        return {f.key: (f.column if f.synced else None)
                for o in self.ordered() for f in o.fields if f.column or not f.synced}


def default_column(obj: ObjectType, field_name: str, sf_type: str) -> str:
    if obj.sf_object in PEOPLE:
        if field_name == "Id":
            return "sfdc_lead_id" if obj.sf_object == "Lead" else "sfdc_contact_id"
        if field_name == "SystemModstamp":
            return "sfdc_lead_system_modstamp" if obj.sf_object == "Lead" \
                else "sfdc_contact_system_modstamp"
        if (obj.sf_object, field_name) in PERSON_RENAMED:
            return PERSON_RENAMED[(obj.sf_object, field_name)]
        if obj.sf_object == "Contact" and field_name in PERSON_SHARED:
            return PERSON_SHARED[field_name]
    if field_name == "Id":
        return "sfdc_id"
    if field_name == "SystemModstamp":
        return "sfdc_system_modstamp"
    if field_name == "IsDeleted":
        return "sfdc_is_deleted"
    if field_name == "IsConverted":
        return "sfdc_is_converted"
    if sf_type in {"reference", "id"}:
        return reference_column(field_name)
    return snake(field_name)


def build_catalog(describes: dict[str, dict], config: SyncConfig) -> Catalog:
    """Map every visible field of every enabled object (``describes``: name -> describe).

    A custom object listed in ``custom_objects`` that this org lacks (or hides from the sync
    user) is left out with a warning that names it (``Catalog.warnings``): it is optional, and
    nothing of it is copied. A standard object the sync user cannot see, and any other name
    the configuration gives that the describes lack (see :func:`_config_problems`), is a
    :class:`ConfigError`: every problem in one line, each naming its key and value.
    """
    objects: dict[str, ObjectCatalog] = {}
    tables: dict[str, dict[str, Column]] = {}
    warnings: list[str] = []
    problems: list[str] = []
    for obj in object_types(config.custom_objects):
        describe = describes.get(obj.sf_object)
        if describe is None and obj.custom:
            warnings.append(f"custom_objects: {obj.sf_object} is not in this org or the sync "
                            "user cannot see it: not synced")
            continue
        if describe is None:
            raise ConfigError(f"{obj.sf_object}: the sync user cannot see this object (enable it "
                              "for the sync user's profile)")
        by_name = {f["name"]: f for f in describe["fields"]}
        fields = _map_fields(obj, by_name, config, problems)
        filters = [flt for flt in config.sync_filters if flt.object == obj.sf_object]
        key = _create_key(obj, by_name, config, warnings)
        objects[obj.sf_object] = ObjectCatalog(obj, fields, filters, by_name, key)
        table = tables.setdefault(obj.table, {})
        for f in fields:
            if not f.synced:
                continue
            col = table.get(f.column)
            kind = sql_type_of(f.sf_type)
            if col is None:
                table[f.column] = Column(f.column, kind, [f.key])
            else:
                if col.sql_type != kind:
                    col.sql_type = "text"  # leads and contacts disagree: keep every value
                col.sources.append(f.key)
    absent = {o.sf_object for o in object_types(config.custom_objects)} - set(objects)
    problems += _config_problems(config, objects, tables, absent)
    if problems:
        raise ConfigError("; ".join(problems))
    return Catalog(objects, tables, config, warnings)


def _create_key(obj: ObjectType, by_name: dict[str, dict], config: SyncConfig,
                warnings: list[str]) -> str | None:
    """The object's create key field, if the org has a usable one (see ``CREATE_KEY_OBJECTS``)."""
    name = config.push.create_key_field
    meta = by_name.get(name or "")
    if obj.sf_object not in CREATE_KEY_OBJECTS or meta is None:
        return None
    if not meta.get("externalId") or not meta.get("createable") or meta["type"] != "string":
        warnings.append(f"push.create_key_field: {obj.sf_object}.{name} is not a Text field marked "
                        "External ID that the sync user can edit: creates look up what a lost "
                        "call may have made instead (README: Set up the org)")
        return None
    return name


def _map_fields(obj: ObjectType, by_name: dict[str, dict], config: SyncConfig,
                problems: list[str]) -> list[FieldMap]:
    """Every field of ``obj`` with its column, or why it is not synced; mistakes in
    ``mappings`` and ``hidden_fields`` go to ``problems``."""
    hidden = set(config.hidden_fields.get(obj.sf_object, []))
    formulas = {k.split(".", 1)[1] for k in config.formula_fields.include
                if k.split(".", 1)[0] == obj.sf_object}
    needed = processing_fields(obj.sf_object)
    fields: list[FieldMap] = []
    for name, meta in by_name.items():
        key = f"{obj.sf_object}.{name}"
        sf_type = meta["type"]
        default = default_column(obj, name, sf_type)
        column = default
        synced, reason = True, "visible to the sync user"
        mapped = key in config.mappings
        if mapped:
            column = config.mappings[key] or None
            synced, reason = (True, "mapped in config") if column else \
                (False, "unmapped in config (mappings)")
        if name == config.push.create_key_field:
            synced, reason = False, ("the sync's own key for idempotent creates "
                                     "(push.create_key_field)")
        elif name in hidden:
            synced, reason = False, "hidden in config (hidden_fields)"
        elif sf_type in COMPOUND_TYPES:
            synced, reason = False, ("compound field (the Bulk API cannot read it): its "
                                     "component fields are synced instead")
        elif sf_type in UNSTORABLE_TYPES:
            synced, reason = False, f"{sf_type} fields cannot be stored"
        elif name in PERSON_COPIES.get(obj.sf_object, ()) and not mapped:
            synced, reason = False, ("copied from the lead or contact: changes without "
                                     "SystemModstamp (the person's columns hold it)")
        elif meta.get("calculated") and name not in formulas and not mapped:
            synced, reason = False, ("formula field: excluded by default because it changes "
                                     "without SystemModstamp (formula_fields.include)")
        if name in needed and name in hidden:
            problems.append(f"hidden_fields.{obj.sf_object}: {name}: the sync itself reads this "
                            f"field (into {default}): it cannot be hidden")
        elif name in needed and mapped and column != default:
            problems.append(f"mappings[{key!r}]: {column or 'null'}: the sync itself reads "
                            f"this field from column {default}: it cannot be remapped or "
                            "unmapped")
        elif mapped and column and column != default and (
                column.startswith(OWN_COLUMN_PREFIXES) or column in OWN_COLUMNS):
            problems.append(f"mappings[{key!r}]: {column}: a column name the sync keeps for "
                            "itself (sfdc_*, sfsync_*, id, person_id)")
        elif mapped and column and not synced and name not in hidden:
            problems.append(f"mappings[{key!r}]: {column}: cannot be synced: {reason}")
        fields.append(FieldMap(obj.sf_object, name, sf_type, column, synced, reason,
                               tuple(meta.get("referenceTo") or ()),
                               bool(meta.get("updateable")), bool(meta.get("createable"))))
    claims: dict[str, list[FieldMap]] = defaultdict(list)
    for f in fields:
        if f.synced:
            claims[f.column].append(f)
    for column, sharing in claims.items():
        if len(sharing) < 2:
            continue
        # Decided by the configuration, not by the order describe lists the fields in.
        mapped = [f for f in sharing if f.key in config.mappings]
        if mapped:
            other = next(f for f in sharing if f is not mapped[0])
            problems.append(f"mappings[{mapped[0].key!r}]: {column}: column {column} is "
                            f"{other.key}'s too (two fields of {obj.sf_object} cannot share a "
                            f"column: map {other.key} elsewhere as well, or choose another)")
            continue
        for f in sharing[1:]:  # two default names meet: the later fields get a longer one
            f.column = f"{column}_c" if f.sf_field.endswith("__c") else \
                f"{column}_{snake(f.sf_field)}"
    return fields


class _Names:
    """Whether the objects and fields a configuration key names are what the describes have:
    each check returns the problem in words, or None."""

    def __init__(self, objects: dict[str, ObjectCatalog], absent: set[str]):
        self.objects, self.absent = objects, absent

    def skipped(self, sf_object: str) -> bool:
        """A listed custom object this org lacks: names under it have nothing to act on (its
        own warning names it)."""
        return sf_object in self.absent

    def object(self, sf_object: str, *, two_way: bool = False, any_case: bool = False
               ) -> str | None:
        if self.skipped(sf_object):
            return None
        obj = self.objects.get(self._spelled(sf_object, self.objects, any_case))
        if obj is None:
            return (f"not an object this sync copies{self._hint(sf_object, self.objects)} "
                    f"(synced objects: {', '.join(self.objects)}; a custom object is synced "
                    "once listed under custom_objects)")
        if two_way and not obj.type.two_way:
            return ("not a two-way object (two-way: "
                    f"{', '.join(n for n, o in self.objects.items() if o.type.two_way)})")
        return None

    def field(self, sf_object: str, sf_field: str, *, two_way: bool = False,
              any_case: bool = False) -> str | None:
        problem = self.object(sf_object, two_way=two_way, any_case=any_case)
        if problem or self.skipped(sf_object):
            return problem
        sf_object = self._spelled(sf_object, self.objects, any_case)
        names = self.objects[sf_object].describe_fields
        if self._spelled(sf_field, names, any_case) in names:
            return None
        return (f"{sf_object} has no field {sf_field} the sync user can see"
                + self._hint(sf_field, names))

    @staticmethod
    def _spelled(name: str, known, any_case: bool) -> str:
        """``name`` as ``known`` spells it, where case does not matter to the key."""
        return next((k for k in known if k.lower() == name.lower()), name) if any_case else name

    @staticmethod
    def _hint(name: str, known) -> str:
        spelled = [k for k in known if k.lower() == name.lower()]
        return f" (it is spelled {spelled[0]})" if spelled else ""

    def key(self, key: str, **kwargs) -> str | None:
        """An ``Object.Field`` key (its form was checked when the configuration was loaded)."""
        sf_object, sf_field = key.split(".", 1)
        return self.field(sf_object, sf_field, **kwargs)


def _config_problems(config: SyncConfig, objects: dict[str, ObjectCatalog],
                     tables: dict[str, dict[str, Column]], absent: set[str]) -> list[str]:
    """Every name the configuration gives, checked against this org: ``key: value: problem``.

    Objects must be synced (standard, or listed under ``custom_objects``) and visible; fields
    must be in their object's describe, which lists only what the sync user can see; columns
    must be filled by a synced field. Conflicts and value maps act on two-way objects only.
    """
    names = _Names(objects, absent)
    problems: list[str] = []

    def check(where: str, value: object, problem: str | None) -> None:
        if problem:
            problems.append(f"{where}: {value}: {problem}")

    for i, flt in enumerate(config.sync_filters):
        check(f"sync_filters.{i}.object", flt.object, names.object(flt.object))
        if names.object(flt.object) or names.skipped(flt.object):
            continue
        check(f"sync_filters.{i}.field", flt.field, names.field(flt.object, flt.field))
        meta = objects[flt.object].describe_fields.get(flt.field)
        if meta is not None:
            check(f"sync_filters.{i}.skip_when", repr(flt.skip_when),
                  _skip_when_problem(meta["type"], flt.skip_when))
    for sf_object, hidden in config.hidden_fields.items():
        check("hidden_fields", sf_object, names.object(sf_object))
        if not names.object(sf_object):
            for name in hidden:
                check(f"hidden_fields.{sf_object}", name, names.field(sf_object, name))
    for key in config.mappings:
        check("mappings", key, names.key(key))
    for key in config.formula_fields.include:
        check("formula_fields.include", key, names.key(key))
    absent_tables = {custom_object_type(name).table for name in absent}
    for table, columns in config.block_updates.items():
        if table in absent_tables:
            continue
        if table not in tables:
            check("block_updates", table, f"not a synced table (tables: {', '.join(tables)})")
            continue
        for column in columns:
            check(f"block_updates.{table}", column, None if column in tables[table] else
                  f"no synced field fills a column {column} in {table}")
    for i, rule in enumerate(config.dedupe_rules):
        for column in rule.columns:
            check(f"dedupe_rules.{i}.columns", column, None if column in tables["person"] else
                  f"no synced field fills a column {column} in person")
    for sf_object in config.conflicts.objects:
        check("conflicts.objects", sf_object, names.object(sf_object, two_way=True))
    for key in config.conflicts.fields:
        check("conflicts.fields", key, names.key(key, two_way=True))
    # The default value maps name standard fields: where the sync user cannot see one, it
    # simply does not apply. Maps the configuration gives are checked (matched in any case,
    # as the push matches them).
    if "value_maps" in config.push.model_fields_set:
        for key in config.push.value_maps:
            check("push.value_maps", key, names.key(key, two_way=True, any_case=True))
    for name in config.push.lead_defaults:
        check("push.lead_defaults", name, names.field("Lead", name))
    return problems


def _skip_when_problem(sf_type: str, skip_when: object) -> str | None:
    """A filter value of another type than its field's never matches: nothing is skipped."""
    if skip_when is None:
        return None
    if sf_type == "boolean":
        return None if isinstance(skip_when, bool) else \
            "the field is a checkbox: write true or false"
    if sf_type in NUMBER_TYPES:
        return None if isinstance(skip_when, float) else f"the field is a number ({sf_type})"
    return None if isinstance(skip_when, str) else f"the field holds text ({sf_type}): quote it"

"""What is synced where: object types, their tables, and every field's mapping.

The catalog is built from the org's describe results and the configuration. Every field the
sync user can see becomes a column unless the configuration hides it, it is a formula (excluded
by default: it changes without bumping SystemModstamp) or its type cannot be stored. Leads and
contacts both land in ``person``; fields that mean the same thing share one column.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from include.sfsync.config import SyncConfig, SyncFilter
from include.sfsync.errors import ConfigError
from include.sfsync.objects import GROUP_ORDER, PEOPLE, ObjectType, object_types, snake

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
        extra = list(PROCESSING_FIELDS["*"]) + list(PROCESSING_FIELDS.get(self.sf_object, ()))
        extra += [flt.field for flt in self.filters]
        for name in extra:
            if name in self.describe_fields and name not in wanted:
                wanted.append(name)
        return wanted


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
    # Names the configuration gives that this org lacks (one line each, naming them): the
    # sync goes on without them.
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

    A custom object, field or column the configuration names but this org lacks (or hides from
    the sync user) is left out with a warning that names it (``Catalog.warnings``): orgs differ,
    and one missing name must not stop the sync. A standard object the sync user cannot see,
    or a mapping that makes two fields share a column, is a :class:`ConfigError`.
    """
    objects: dict[str, ObjectCatalog] = {}
    tables: dict[str, dict[str, Column]] = {}
    known_keys = set()
    warnings: list[str] = []
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
        hidden = set(config.hidden_fields.get(obj.sf_object, []))
        formulas = {k.split(".", 1)[1] for k in config.formula_fields.include
                    if k.split(".", 1)[0] == obj.sf_object}
        fields: list[FieldMap] = []
        used: dict[str, str] = {}
        for name, meta in by_name.items():
            key = f"{obj.sf_object}.{name}"
            known_keys.add(key)
            sf_type = meta["type"]
            column = default_column(obj, name, sf_type)
            synced, reason = True, "visible to the sync user"
            if key in config.mappings:
                column = config.mappings[key] or None
                synced, reason = (True, "mapped in config") if column else \
                    (False, "unmapped in config (mappings)")
            if name in hidden:
                synced, reason = False, "hidden in config (hidden_fields)"
            elif sf_type in COMPOUND_TYPES:
                synced, reason = False, ("compound field (the Bulk API cannot read it): its "
                                         "component fields are synced instead")
            elif sf_type in UNSTORABLE_TYPES:
                synced, reason = False, f"{sf_type} fields cannot be stored"
            elif name in PERSON_COPIES.get(obj.sf_object, ()) and key not in config.mappings:
                synced, reason = False, ("copied from the lead or contact: changes without "
                                         "SystemModstamp (the person's columns hold it)")
            elif meta.get("calculated") and name not in formulas and key not in config.mappings:
                synced, reason = False, ("formula field: excluded by default because it changes "
                                         "without SystemModstamp (formula_fields.include)")
            if synced and column in used and used[column] != name:
                if key in config.mappings:
                    raise ConfigError(f"mappings[{key!r}]: column {column!r} is already used by "
                                      f"{obj.sf_object}.{used[column]}")
                column = f"{column}_c" if name.endswith("__c") else f"{column}_{snake(name)}"
            if synced:
                used[column] = name
            fields.append(FieldMap(obj.sf_object, name, sf_type, column, synced, reason,
                                   tuple(meta.get("referenceTo") or ()),
                                   bool(meta.get("updateable")), bool(meta.get("createable"))))
        filters = []
        for flt in config.sync_filters:
            if flt.object != obj.sf_object:
                continue
            if flt.field in by_name:
                filters.append(flt)
            else:
                warnings.append(f"sync_filters: {obj.sf_object}.{flt.field} is not a field "
                                "visible to the sync user: this filter is not applied")
        for name in sorted(hidden - set(by_name)):
            warnings.append(f"hidden_fields.{obj.sf_object}: {name} is not a field visible to the "
                            "sync user (nothing to hide)")
        objects[obj.sf_object] = ObjectCatalog(obj, fields, filters, by_name)
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
    for key in config.mappings:
        if key not in known_keys:
            warnings.append(f"mappings: {key} is not a field visible to the sync user: ignored")
    for key in config.formula_fields.include:
        if key not in known_keys:
            warnings.append(f"formula_fields.include: {key} is not a field visible to the sync "
                            "user: not refreshed")
    for table_name, cols in config.block_updates.items():
        for col in cols:
            if col not in tables.get(table_name, {}):
                warnings.append(f"block_updates.{table_name}: no column {col} (no synced field "
                                "maps to it): nothing to block")
    return Catalog(objects, tables, config, warnings)

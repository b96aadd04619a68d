"""The emulated org's data model: objects, fields, the sync user's field-level security, describe.

Field flags follow the describe results recorded from real orgs (see
``shared/reference/salesforce-api.md`` §3 and §9). ``fls`` models the sync user's profile:
``"hidden"`` fields do not exist for it (describe omits them, SOQL and writes say
``INVALID_FIELD``); ``"readonly"`` fields are visible but neither createable nor updateable.

The model is data, not code: the control API may add, hide or retype fields (schema drift), and
those changes are persisted as JSON beside the org's records.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

# Storage classes used by the record store. Every type maps to one of these.
TEXT_TYPES = {"string", "textarea", "picklist", "multipicklist", "combobox", "email", "phone", "url",
              "encryptedstring"}
# Compound fields: read-only views over their component fields (``Field.compound`` names the
# compound a component belongs to). REST/SOAP return them as objects; Bulk queries refuse them.
COMPOUND_TYPES = {"address", "location"}
ID_TYPES = {"id", "reference"}
INT_TYPES = {"int"}
REAL_TYPES = {"double", "currency", "percent"}
SOAP_TYPES = {
    "id": "tns:ID", "reference": "tns:ID", "boolean": "xsd:boolean", "int": "xsd:int",
    "double": "xsd:double", "currency": "xsd:double", "percent": "xsd:double", "date": "xsd:date",
    "datetime": "xsd:dateTime", "time": "xsd:time",
}

US_STATES = (
    "Alabama", "Alaska", "Arizona", "Arkansas", "California", "Colorado", "Connecticut", "Delaware",
    "Florida", "Georgia", "Hawaii", "Idaho", "Illinois", "Indiana", "Iowa", "Kansas", "Kentucky",
    "Louisiana", "Maine", "Maryland", "Massachusetts", "Michigan", "Minnesota", "Mississippi",
    "Missouri", "Montana", "Nebraska", "Nevada", "New Hampshire", "New Jersey", "New Mexico",
    "New York", "North Carolina", "North Dakota", "Ohio", "Oklahoma", "Oregon", "Pennsylvania",
    "Rhode Island", "South Carolina", "South Dakota", "Tennessee", "Texas", "Utah", "Vermont",
    "Virginia", "Washington", "West Virginia", "Wisconsin", "Wyoming", "District of Columbia",
    # Canadian provinces share the State picklist, as in an org with state/country picklists.
    "Ontario", "Quebec", "British Columbia", "Alberta", "Manitoba", "Nova Scotia",
)
COUNTRIES = (
    "United States", "Canada", "United Kingdom", "Germany", "France", "Netherlands", "Spain",
    "Italy", "Ireland", "Sweden", "Australia", "Japan", "India", "Brazil", "Mexico", "Singapore",
)
INDUSTRIES = ("Agriculture", "Banking", "Biotechnology", "Consulting", "Education", "Electronics",
              "Energy", "Finance", "Healthcare", "Insurance", "Manufacturing", "Media", "Retail",
              "Technology", "Telecommunications", "Transportation")
LEAD_SOURCES = ("Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Trade Show",
                "Webinar", "Other")
LEAD_STATUSES = ("Open - Not Contacted", "Working - Contacted", "Closed - Converted",
                 "Closed - Not Converted")
OPPORTUNITY_STAGES = {  # stage -> (probability, closed, won, forecast category)
    "Prospecting": (10, False, False, "Pipeline"),
    "Qualification": (10, False, False, "Pipeline"),
    "Needs Analysis": (20, False, False, "Pipeline"),
    "Value Proposition": (50, False, False, "Pipeline"),
    "Proposal/Price Quote": (75, False, False, "Pipeline"),
    "Negotiation/Review": (90, False, False, "Forecast"),
    "Closed Won": (100, True, True, "Closed"),
    "Closed Lost": (0, True, False, "Omitted"),
}
TASK_STATUSES = {"Not Started": False, "In Progress": False, "Completed": True,
                 "Waiting on someone else": False, "Deferred": False}

DESCRIBE_FIELD_KEYS = (
    "aggregatable aiPredictionField autoNumber byteLength calculated calculatedFormula cascadeDelete "
    "caseSensitive compoundFieldName controllerName createable custom defaultValue "
    "defaultValueFormula defaultedOnCreate dependentPicklist deprecatedAndHidden digits "
    "displayLocationInDecimal encrypted externalId extraTypeInfo filterable filteredLookupInfo "
    "formulaTreatNullNumberAsZero groupable highScaleNumber htmlFormatted idLookup inlineHelpText "
    "label length mask maskType name nameField namePointing nillable permissionable picklistValues "
    "polymorphicForeignKey precision queryByDistance referenceTargetField referenceTo "
    "relationshipName relationshipOrder restrictedDelete restrictedPicklist scale "
    "searchPrefilterable soapType sortable type unique updateable writeRequiresMasterRead"
).split()


@dataclass
class Field:
    name: str
    type: str
    label: str = ""
    length: int = 0
    precision: int = 0
    scale: int = 0
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    defaulted_on_create: bool = False
    default_value: Any = None
    reference_to: list[str] = field(default_factory=list)
    relationship_name: str | None = None
    picklist: list[str] = field(default_factory=list)
    picklist_default: str | None = None
    restricted_picklist: bool = False
    external_id: bool = False
    unique: bool = False
    id_lookup: bool = False
    calculated: bool = False
    formula: str | None = None
    auto_number: bool = False
    name_field: bool = False
    cascade_delete: bool = False
    custom: bool = False
    # The sync user's field-level security: None (read/write as flagged), "readonly", "hidden".
    fls: str | None = None
    compound: str | None = None  # describe's compoundFieldName: the compound this is part of

    @property
    def visible(self) -> bool:
        return self.fls != "hidden"

    @property
    def polymorphic(self) -> bool:
        return len(self.reference_to) > 1

    @property
    def can_create(self) -> bool:
        return self.createable and self.fls is None

    @property
    def can_update(self) -> bool:
        return self.updateable and self.fls is None

    @property
    def storage(self) -> str:
        """SQLite column declaration for this field's values."""
        if self.type in ID_TYPES:
            return "TEXT"
        if self.type == "boolean":
            return "INTEGER NOT NULL DEFAULT 0"
        if self.type in INT_TYPES:
            return "INTEGER"
        if self.type in REAL_TYPES:
            return "REAL"
        if self.type in TEXT_TYPES:
            return "TEXT COLLATE NOCASE"
        return "TEXT"  # date, datetime, time: ISO strings compare in time order

    def describe(self) -> dict:
        length = self.length if self.type in TEXT_TYPES else (18 if self.type in ID_TYPES else 0)
        digits = 9 if self.type == "int" else 0
        values = []
        for value in self.picklist:
            values.append({"active": True, "defaultValue": value == self.picklist_default,
                           "label": value, "validFor": None, "value": value})
        entry = dict.fromkeys(DESCRIBE_FIELD_KEYS)
        entry.update({
            "aggregatable": self.type not in {"textarea"},
            "aiPredictionField": False,
            "autoNumber": self.auto_number,
            "byteLength": length * 3 if self.type in TEXT_TYPES else length,
            "calculated": self.calculated,
            "calculatedFormula": self.formula,
            "cascadeDelete": self.cascade_delete,
            "caseSensitive": False,
            "compoundFieldName": self.compound,
            "createable": self.can_create,
            "custom": self.custom,
            "defaultValue": self.default_value if self.type != "boolean" else bool(self.default_value),
            "defaultedOnCreate": self.defaulted_on_create,
            "dependentPicklist": False,
            "deprecatedAndHidden": False,
            "digits": digits,
            "displayLocationInDecimal": False,
            "encrypted": False,
            "externalId": self.external_id,
            "filterable": self.type not in {"textarea"} | COMPOUND_TYPES,
            "formulaTreatNullNumberAsZero": False,
            "groupable": self.type not in {"textarea", "double", "currency", "percent", "datetime"},
            "highScaleNumber": False,
            "htmlFormatted": False,
            "idLookup": self.id_lookup or self.type == "id",
            "label": self.label or _label(self.name),
            "length": length,
            "name": self.name,
            "nameField": self.name_field,
            "namePointing": self.polymorphic,
            "nillable": self.nillable,
            "permissionable": self.nillable and not self.calculated and self.type != "id",
            "picklistValues": values,
            "polymorphicForeignKey": self.polymorphic,
            "precision": self.precision,
            "queryByDistance": False,
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name,
            "restrictedDelete": False,
            "restrictedPicklist": self.restricted_picklist,
            "scale": self.scale,
            "searchPrefilterable": False,
            "soapType": SOAP_TYPES.get(self.type, "xsd:string"),
            "sortable": self.type not in {"textarea"} | COMPOUND_TYPES,
            "type": self.type,
            "unique": self.unique,
            "updateable": self.can_update,
            "writeRequiresMasterRead": False,
        })
        return entry


@dataclass
class SObject:
    name: str
    label: str
    label_plural: str
    key_prefix: str
    fields: dict[str, Field]
    custom: bool = False
    createable: bool = True
    updateable: bool = True
    deletable: bool = True
    undeletable: bool = True
    mergeable: bool = False
    replicateable: bool = True
    # CampaignMember: a delete removes the row at once, it never sits in the recycle bin.
    hard_delete_only: bool = False
    # Task/Event: closed activities older than a year are returned only by queryAll.
    archivable: bool = False
    # False: the sync user's profile has no access; for the API the object does not exist.
    visible: bool = True
    _lower: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.reindex()

    def reindex(self) -> None:
        self._lower = {name.lower(): name for name in self.fields}

    def field(self, name: str, *, include_hidden: bool = False) -> Field | None:
        canonical = self._lower.get(name.lower())
        if canonical is None:
            return None
        f = self.fields[canonical]
        return f if (include_hidden or f.visible) else None

    def visible_fields(self) -> list[Field]:
        return [f for f in self.fields.values() if f.visible]

    def components(self, compound: str) -> list[Field]:
        return [f for f in self.fields.values() if f.compound == compound]

    def has(self, name: str) -> bool:
        return name in self.fields

    def relationship(self, rel_name: str) -> Field | None:
        """The visible reference field whose relationshipName is ``rel_name`` (case-insensitive)."""
        low = rel_name.lower()
        for f in self.fields.values():
            if f.relationship_name and f.relationship_name.lower() == low and f.visible:
                return f
        return None

    def global_entry(self, version: str) -> dict:
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "activateable": False, "associateEntityType": None, "associateParentEntity": None,
            "createable": self.createable, "custom": self.custom, "customSetting": False,
            "deepCloneable": False, "deletable": self.deletable, "deprecatedAndHidden": False,
            "feedEnabled": not self.custom, "hasSubtypes": False, "isInterface": False,
            "isSubtype": False, "keyPrefix": self.key_prefix, "label": self.label,
            "labelPlural": self.label_plural, "layoutable": True, "mergeable": self.mergeable,
            "mruEnabled": True, "name": self.name, "queryable": True,
            "replicateable": self.replicateable, "retrieveable": True, "searchable": True,
            "triggerable": True, "undeletable": self.undeletable, "updateable": self.updateable,
            "urls": {"rowTemplate": base + "/{ID}", "describe": base + "/describe",
                     "sobject": base},
        }


class Schema:
    """All objects of the org, looked up case-insensitively as Salesforce does."""

    def __init__(self, objects: list[SObject]):
        self.objects = {o.name: o for o in objects}
        self._lower = {o.name.lower(): o.name for o in objects}
        self._by_prefix = {o.key_prefix: o.name for o in objects}

    def get(self, name: str) -> SObject | None:
        """The object as the sync user sees it: None when it does not exist for that user."""
        obj = self.get_any(name)
        return obj if obj is not None and obj.visible else None

    def get_any(self, name: str) -> SObject | None:
        """Any object of the org, visible to the sync user or not (seeding, the control API)."""
        canonical = self._lower.get((name or "").lower())
        return self.objects.get(canonical) if canonical else None

    def visible_objects(self) -> list[SObject]:
        return [o for o in self.objects.values() if o.visible]

    def object_for_id(self, record_id: str) -> SObject | None:
        name = self._by_prefix.get(record_id[:3])
        return self.objects[name] if name else None

    def child_relationships(self, parent: str) -> list[dict]:
        out = []
        for child in self.visible_objects():
            for f in child.fields.values():
                if parent in f.reference_to and f.relationship_name and f.visible:
                    out.append({
                        "cascadeDelete": f.cascade_delete, "childSObject": child.name,
                        "deprecatedAndHidden": False, "field": f.name,
                        "junctionIdListNames": [], "junctionReferenceTo": [],
                        "relationshipName": _child_relationship_name(child, f),
                        "restrictedDelete": False,
                    })
        return out

    def describe(self, name: str, version: str) -> dict:
        obj = self.objects[name]
        body = obj.global_entry(version)
        body.update({
            "actionOverrides": [], "childRelationships": self.child_relationships(name),
            "compactLayoutable": True, "defaultImplementation": None, "extendedBy": None,
            "extendsInterfaces": None, "fields": [f.describe() for f in obj.visible_fields()],
            "implementedBy": None, "implementsInterfaces": None, "listviewable": None,
            "lookupLayoutable": None, "namedLayoutInfos": [], "networkScopeFieldName": None,
            "recordTypeInfos": [{
                "active": True, "available": True, "defaultRecordTypeMapping": True,
                "developerName": "Master", "master": True, "name": "Master",
                "recordTypeId": "012000000000000AAA",
                "urls": {"layout": f"/services/data/v{version}/sobjects/{name}/describe/layouts/"
                                   "012000000000000AAA"}}],
            "searchLayoutable": True, "sobjectDescribeOption": "FULL",
            "supportedScopes": [{"label": "All " + obj.label_plural.lower(), "name": "everything"}],
        })
        body["urls"].update({
            "compactLayouts": f"/services/data/v{version}/sobjects/{name}/describe/compactLayouts",
            "layouts": f"/services/data/v{version}/sobjects/{name}/describe/layouts",
        })
        return body

    def to_json(self) -> dict:
        return {name: {**{k: v for k, v in asdict(o).items() if k not in {"fields", "_lower"}},
                       "fields": [asdict(f) for f in o.fields.values()]}
                for name, o in self.objects.items()}

    @classmethod
    def from_json(cls, data: dict) -> Schema:
        objects = []
        for spec in data.values():
            spec = dict(spec)
            fields = {f["name"]: Field(**f) for f in spec.pop("fields")}
            spec.pop("_lower", None)
            objects.append(SObject(fields=fields, **spec))
        return cls(objects)

    def copy(self) -> Schema:
        return Schema(copy.deepcopy(list(self.objects.values())))


def _label(name: str) -> str:
    base = name[:-3] if name.endswith("__c") else name
    if base.endswith("Id") and len(base) > 2:
        base = base[:-2] + " ID"
    out = ""
    for i, ch in enumerate(base.replace("_", " ")):
        if ch.isupper() and i and base[i - 1].islower():
            out += " "
        out += ch
    return out


def _child_relationship_name(child: SObject, f: Field) -> str:
    special = {("Contact", "AccountId"): "Contacts", ("Opportunity", "AccountId"): "Opportunities",
               ("OpportunityContactRole", "OpportunityId"): "OpportunityContactRoles",
               ("OpportunityContactRole", "ContactId"): "OpportunityContactRoles",
               ("CampaignMember", "CampaignId"): "CampaignMembers",
               ("CampaignMember", "LeadId"): "CampaignMembers",
               ("CampaignMember", "ContactId"): "CampaignMembers",
               ("Task", "WhoId"): "Tasks", ("Task", "WhatId"): "Tasks",
               ("Event", "WhoId"): "Events", ("Event", "WhatId"): "Events",
               ("CampaignMemberStatus", "CampaignId"): "CampaignMemberStatuses"}
    if (child.name, f.name) in special:
        return special[(child.name, f.name)]
    if child.custom:
        return child.name[:-3] + "s__r"
    return child.label_plural.replace(" ", "")


# --- the default org -------------------------------------------------------------------------

def _f(name, type_, **kw) -> Field:
    if type_ in TEXT_TYPES and "length" not in kw:
        kw["length"] = {"email": 80, "phone": 40, "url": 255, "textarea": 32000}.get(type_, 255)
    if type_ in {"currency"} and "precision" not in kw:
        kw.update(precision=18, scale=2)
    if type_ in {"double", "percent"} and "precision" not in kw:
        kw.update(precision=18, scale=0)
    if type_ == "boolean":
        kw.setdefault("nillable", False)
        kw.setdefault("defaulted_on_create", True)
        kw.setdefault("default_value", False)
    if name.endswith("__c"):
        kw.setdefault("custom", True)
    if type_ == "picklist" and kw.get("picklist") is not None:
        kw["picklist"] = list(kw["picklist"])
    return Field(name=name, type=type_, **kw)


def _ref(name, targets, rel, **kw) -> Field:
    return _f(name, "reference", reference_to=list(targets), relationship_name=rel, **kw)


def _ro(field_: Field) -> Field:
    field_.createable = False
    field_.updateable = False
    return field_


def _system(owner: list[str] | None, *, deleted: bool = True) -> list[Field]:
    out = [_ro(_f("Id", "id", label="Record ID", nillable=False, defaulted_on_create=True))]
    if owner:
        out.append(_ref("OwnerId", owner, "Owner", nillable=False, defaulted_on_create=True,
                        label="Owner ID"))
    if deleted:
        out.append(_ro(_f("IsDeleted", "boolean", label="Deleted")))
    for name in ("CreatedDate", "LastModifiedDate", "SystemModstamp"):
        out.append(_ro(_f(name, "datetime", nillable=False, defaulted_on_create=True)))
    for name, rel in (("CreatedById", "CreatedBy"), ("LastModifiedById", "LastModifiedBy")):
        out.append(_ro(_ref(name, ["User"], rel, nillable=False, defaulted_on_create=True)))
    return out


def _picklist(name, values, *, restricted=False, default=None, **kw) -> Field:
    return _f(name, "picklist", picklist=list(values), restricted_picklist=restricted,
              picklist_default=default, default_value=default,
              defaulted_on_create=default is not None, **kw)


def _person_name_fields(name_length=121) -> list[Field]:
    return [
        _picklist("Salutation", ("Mr.", "Ms.", "Mrs.", "Dr.", "Prof.")),
        _f("FirstName", "string", length=40),
        _f("LastName", "string", length=80, nillable=False),
        _ro(_f("Name", "string", length=name_length, nillable=False, name_field=True,
               label="Full Name")),
    ]


def _obj(name, label, plural, prefix, fields, **kw) -> SObject:
    return SObject(name=name, label=label, label_plural=plural, key_prefix=prefix,
                   fields={f.name: f for f in fields}, custom=name.endswith("__c"), **kw)


def demo_schema() -> Schema:
    """The demo org: standard objects plus our customisations (custom fields and objects)."""
    user = _obj("User", "User", "Users", "005", [
        *_system(None, deleted=False),
        _f("Username", "string", length=80, nillable=False, unique=True, id_lookup=True),
        *[f for f in _person_name_fields() if f.name != "Salutation"],
        _f("Alias", "string", length=8, nillable=False),
        _f("Email", "email", length=128, nillable=False),
        _f("IsActive", "boolean", default_value=True, label="Active"),
        _f("Title", "string", length=80),
        _f("Phone", "phone"),
        _f("Department", "string", length=80),
        _f("CompanyName", "string", length=80),
        _ref("ManagerId", ["User"], "Manager"),
        _ro(_picklist("UserType", ("Standard", "PowerPartner", "CsnOnly", "Guest"),
                      default="Standard")),
        _picklist("TimeZoneSidKey", ("America/Los_Angeles", "America/New_York", "Europe/London",
                                     "Europe/Berlin", "Asia/Tokyo"), restricted=True,
                  default="America/Los_Angeles", nillable=False),
    ], createable=False, deletable=False, undeletable=False)
    for f in user.fields.values():  # the sync user may read users, never write them
        f.createable = f.updateable = False

    account = _obj("Account", "Account", "Accounts", "001", [
        *_system(["User"]),
        _ro(_ref("MasterRecordId", ["Account"], "MasterRecord")),
        _f("Name", "string", length=255, nillable=False, name_field=True, label="Account Name"),
        _picklist("Type", ("Prospect", "Customer - Direct", "Customer - Channel", "Partner", "Other"),
                  label="Account Type"),
        _ref("ParentId", ["Account"], "Parent"),
        _f("BillingStreet", "textarea", length=255),
        _f("BillingCity", "string", length=40),
        _picklist("BillingState", US_STATES, restricted=True),
        _f("BillingPostalCode", "string", length=20),
        _picklist("BillingCountry", COUNTRIES, restricted=True),
        _f("Phone", "phone"),
        _f("Website", "url"),
        _picklist("Industry", INDUSTRIES),
        _f("AnnualRevenue", "currency", precision=18, scale=0),
        _f("NumberOfEmployees", "int", label="Employees"),
        _picklist("Rating", ("Hot", "Warm", "Cold"), label="Account Rating"),
        _picklist("AccountSource", LEAD_SOURCES),
        _f("Description", "textarea"),
        _picklist("Customer_Tier__c", ("Gold", "Silver", "Bronze")),
        _f("Credit_Limit__c", "currency", fls="hidden"),
        _ro(_f("LastActivityDate", "date")),
    ], mergeable=True)

    person_extras = [
        _f("Email", "email", id_lookup=True),
        _f("Phone", "phone"),
        _f("MobilePhone", "phone"),
        _f("Title", "string", length=128),
        _picklist("LeadSource", LEAD_SOURCES),
        _f("Description", "textarea"),
        _f("HasOptedOutOfEmail", "boolean", label="Email Opt Out"),
        _f("DoNotCall", "boolean"),
        _f("Do_Not_Sync_Marketing__c", "boolean", label="Do Not Sync to Marketing"),
        _f("Lead_Score__c", "double", precision=3, scale=0),
        _f("Marketing_Id__c", "string", length=36, external_id=True, unique=True,
           label="Marketing ID"),
        _picklist("Sales_Region__c", ("AMER", "EMEA", "APAC"), fls="readonly"),
        _f("Internal_Notes__c", "textarea", fls="hidden"),
        _ro(_f("LastActivityDate", "date")),
    ]

    contact = _obj("Contact", "Contact", "Contacts", "003", [
        *_system(["User"]),
        _ro(_ref("MasterRecordId", ["Contact"], "MasterRecord")),
        *_person_name_fields(),
        _ref("AccountId", ["Account"], "Account"),
        _ref("ReportsToId", ["Contact"], "ReportsTo"),
        _f("Department", "string", length=80),
        _f("Birthdate", "date"),
        _f("MailingStreet", "textarea", length=255),
        _f("MailingCity", "string", length=40),
        _picklist("MailingState", US_STATES, restricted=True),
        _f("MailingPostalCode", "string", length=20),
        _picklist("MailingCountry", COUNTRIES, restricted=True),
        *copy.deepcopy(person_extras),
        _ro(_f("Account_Rating__c", "string", length=1300, calculated=True,
               formula="TEXT(Account.Rating)", label="Account Rating")),
    ], mergeable=True)

    lead = _obj("Lead", "Lead", "Leads", "00Q", [
        *_system(["Group", "User"]),
        _ro(_ref("MasterRecordId", ["Lead"], "MasterRecord")),
        *_person_name_fields(),
        _f("Company", "string", length=255, nillable=False),
        _f("Street", "textarea", length=255),
        _f("City", "string", length=40),
        _picklist("State", US_STATES, restricted=True, label="State/Province"),
        _f("PostalCode", "string", length=20, label="Zip/Postal Code"),
        _picklist("Country", COUNTRIES, restricted=True),
        _f("Website", "url"),
        _picklist("Industry", INDUSTRIES),
        _picklist("Status", LEAD_STATUSES, restricted=True, default="Open - Not Contacted",
                  nillable=False, label="Lead Status"),
        _picklist("Rating", ("Hot", "Warm", "Cold")),
        _f("AnnualRevenue", "currency", precision=18, scale=0),
        _f("NumberOfEmployees", "int", label="Employees"),
        _f("IsUnreadByOwner", "boolean", label="Unread By Owner"),
        *copy.deepcopy(person_extras),
        _f("IsConverted", "boolean", updateable=False, label="Converted"),
        _ro(_f("ConvertedDate", "date")),
        _ro(_ref("ConvertedAccountId", ["Account"], "ConvertedAccount")),
        _ro(_ref("ConvertedContactId", ["Contact"], "ConvertedContact")),
        _ro(_ref("ConvertedOpportunityId", ["Opportunity"], "ConvertedOpportunity")),
    ], mergeable=True)

    opportunity = _obj("Opportunity", "Opportunity", "Opportunities", "006", [
        *_system(["User"]),
        _f("Name", "string", length=120, nillable=False, name_field=True),
        _ref("AccountId", ["Account"], "Account"),
        _picklist("StageName", OPPORTUNITY_STAGES, restricted=True, nillable=False, label="Stage"),
        _f("Amount", "currency"),
        _f("Probability", "percent", precision=3, scale=0, defaulted_on_create=True),
        _ro(_f("ExpectedRevenue", "currency", calculated=True,
               formula="Amount * Probability / 100")),
        _f("CloseDate", "date", nillable=False),
        _picklist("Type", ("New Business", "Existing Business"), label="Opportunity Type"),
        _picklist("LeadSource", LEAD_SOURCES),
        _f("NextStep", "string", length=255),
        _f("Description", "textarea"),
        _ref("CampaignId", ["Campaign"], "Campaign"),
        _f("IsPrivate", "boolean", label="Private"),
        _ro(_f("IsClosed", "boolean", label="Closed")),
        _ro(_f("IsWon", "boolean", label="Won")),
        _ro(_picklist("ForecastCategory", ("Omitted", "Pipeline", "BestCase", "Forecast", "Closed"),
                      nillable=False)),
        _ro(_f("LastActivityDate", "date")),
    ])

    contact_role = _obj("OpportunityContactRole", "Opportunity Contact Role",
                        "Opportunity Contact Role", "00K", [
        *_system(None),
        _ref("OpportunityId", ["Opportunity"], "Opportunity", nillable=False, updateable=False),
        _ref("ContactId", ["Contact"], "Contact", nillable=False),
        _picklist("Role", ("Business User", "Decision Maker", "Economic Buyer",
                           "Economic Decision Maker", "Evaluator", "Executive Sponsor",
                           "Influencer", "Technical Buyer", "Other")),
        _f("IsPrimary", "boolean", label="Primary"),
    ], mergeable=False)

    campaign = _obj("Campaign", "Campaign", "Campaigns", "701", [
        *_system(["User"]),
        _f("Name", "string", length=80, nillable=False, name_field=True),
        _picklist("Type", ("Advertisement", "Conference", "Direct Mail", "Email", "Webinar",
                           "Partners", "Other")),
        _picklist("Status", ("Planned", "In Progress", "Completed", "Aborted")),
        _f("IsActive", "boolean", label="Active"),
        _f("StartDate", "date"),
        _f("EndDate", "date"),
        _ref("ParentId", ["Campaign"], "Parent"),
        _f("Description", "textarea"),
        _f("BudgetedCost", "currency"),
        _f("ActualCost", "currency"),
        _f("ExpectedRevenue", "currency"),
    ])

    member_status = _obj("CampaignMemberStatus", "Campaign Member Status",
                         "Campaign Member Statuses", "01Y", [
        *_system(None),
        _ref("CampaignId", ["Campaign"], "Campaign", nillable=False, updateable=False),
        _f("Label", "string", length=765, nillable=False, label="Member Status"),
        _f("IsDefault", "boolean", label="Default"),
        _f("HasResponded", "boolean", label="Responded"),
        _f("SortOrder", "int"),
    ], undeletable=False, hard_delete_only=True)

    member = _obj("CampaignMember", "Campaign Member", "Campaign Members", "00v", [
        *_system(None),
        _ref("CampaignId", ["Campaign"], "Campaign", nillable=False, updateable=False),
        _ref("LeadId", ["Lead"], "Lead", updateable=False),
        _ref("ContactId", ["Contact"], "Contact", updateable=False),
        _f("Status", "picklist", length=40, defaulted_on_create=True),
        _ro(_f("HasResponded", "boolean", label="Responded")),
        _ro(_f("FirstRespondedDate", "date")),
        _ro(_picklist("Type", ("Lead", "Contact"))),
        _ro(_ref("LeadOrContactId", ["Contact", "Lead"], None)),
        _ro(_ref("LeadOrContactOwnerId", ["Group", "User"], None)),
        _ro(_f("FirstName", "string", length=40)),
        _ro(_f("LastName", "string", length=80)),
        _ro(_f("Email", "email")),
        _ro(_f("Title", "string", length=128)),
        _ro(_f("CompanyOrAccount", "string", length=255)),
    ], undeletable=False, hard_delete_only=True)

    what_targets = ["Account", "Opportunity", "Campaign", "Webinar_Attendance__c",
                    "Subscription__c"]
    activity_common = [
        _ref("WhoId", ["Contact", "Lead"], "Who", label="Name ID"),
        _ref("WhatId", what_targets, "What", label="Related To ID"),
        _f("Subject", "combobox", length=255),
        _f("Description", "textarea"),
        _picklist("Type", ("Call", "Email", "Meeting", "Other")),
        _ro(_ref("AccountId", ["Account"], "Account")),
        _ro(_f("IsArchived", "boolean", label="Archived")),
    ]
    task = _obj("Task", "Task", "Tasks", "00T", [
        *_system(["Group", "User"]),
        *copy.deepcopy(activity_common),
        _f("ActivityDate", "date", label="Due Date Only"),
        _picklist("Status", TASK_STATUSES, restricted=True, default="Not Started",
                  nillable=False),
        _picklist("Priority", ("High", "Normal", "Low"), restricted=True, default="Normal",
                  nillable=False),
        _picklist("TaskSubtype", ("Task", "Email", "Call", "LinkedIn", "ListEmail"),
                  updateable=False),
        _ro(_f("IsClosed", "boolean", label="Closed")),
        _ro(_f("CompletedDateTime", "datetime")),
        _f("CallDurationInSeconds", "int", label="Call Duration"),
    ], archivable=True)
    event = _obj("Event", "Event", "Events", "00U", [
        *_system(["Calendar", "User"]),
        *copy.deepcopy(activity_common),
        _f("Location", "string", length=255),
        _f("ActivityDateTime", "datetime", label="Due Date Time"),
        _ro(_f("ActivityDate", "date", label="Due Date Only")),
        _f("StartDateTime", "datetime"),
        _f("EndDateTime", "datetime"),
        _f("DurationInMinutes", "int", label="Duration"),
        _f("IsAllDayEvent", "boolean", label="All-Day Event"),
    ], archivable=True)

    webinar = _obj("Webinar_Attendance__c", "Webinar Attendance", "Webinar Attendances", "a01", [
        *_system(["User"]),
        _ro(_f("Name", "string", length=80, nillable=False, name_field=True, auto_number=True,
               defaulted_on_create=True, label="Attendance Number")),
        _ref("Contact__c", ["Contact"], "Contact__r", nillable=False),
        _f("Webinar_Name__c", "string", length=255),
        _f("Attended__c", "boolean"),
        _f("Attended_Date__c", "date"),
        _f("Duration_Minutes__c", "double", precision=5, scale=0),
        _picklist("Registration_Source__c", ("Email", "Website", "Partner", "Social")),
    ])
    subscription = _obj("Subscription__c", "Subscription", "Subscriptions", "a02", [
        *_system(None),
        _f("Name", "string", length=80, nillable=False, name_field=True,
           label="Subscription Name"),
        _ref("Account__c", ["Account"], "Account__r", nillable=False, cascade_delete=True),
        _picklist("Plan__c", ("Free", "Starter", "Pro", "Enterprise"), restricted=True),
        _f("Seats__c", "double", precision=6, scale=0),
        _f("Monthly_Value__c", "currency"),
        _f("Renewal_Date__c", "date"),
        _f("Active__c", "boolean"),
    ])
    organization = _obj("Organization", "Organization", "Organizations", "00D", [
        *_system(None, deleted=False),
        _f("Name", "string", length=80, nillable=False, name_field=True),
        _picklist("OrganizationType", ("Developer Edition", "Enterprise Edition",
                                       "Unlimited Edition", "Performance Edition"),
                  label="Edition"),
        _f("IsSandbox", "boolean"),
        _f("InstanceName", "string", length=5),
        _f("DefaultLocaleSidKey", "string", length=40, label="Locale"),
        _f("TimeZoneSidKey", "string", length=40, label="Time Zone"),
    ], createable=False, updateable=False, deletable=False, undeletable=False,
        replicateable=False)
    for f in organization.fields.values():
        f.createable = f.updateable = False
    return Schema([organization, user, account, contact, lead, opportunity, contact_role, campaign,
                   member_status, member, task, event, webinar, subscription])


# --- org profiles ------------------------------------------------------------------------------

PROFILES = ("demo", "standard", "mature")
GEOCODE_ACCURACY = ("Address", "NearAddress", "Block", "Street", "ExtendedZip", "Zip",
                    "Neighborhood", "City", "County", "State", "Unknown")
ADDRESS_PARTS = ("Street", "City", "State", "PostalCode", "Country")


def _address(obj: SObject, prefix: str, compound: str) -> None:
    """Add the compound ``compound`` (type address) over ``<prefix>Street`` ... and the geocode
    fields a real org has (``<prefix>Latitude``, ``<prefix>Longitude``,
    ``<prefix>GeocodeAccuracy``)."""
    for part in ADDRESS_PARTS:
        obj.fields[prefix + part].compound = compound
    for field_ in (_f(prefix + "Latitude", "double", precision=18, scale=15),
                   _f(prefix + "Longitude", "double", precision=18, scale=15),
                   _picklist(prefix + "GeocodeAccuracy", GEOCODE_ACCURACY, restricted=True)):
        field_.compound = compound
        obj.fields[field_.name] = field_
    obj.fields[compound] = _ro(_f(compound, "address", label=_label(compound)))


def standard_schema() -> Schema:
    """A fresh Enterprise org: standard objects and fields only (no custom field or object),
    with the compound address fields and geocodes every real org has."""
    schema = demo_schema()
    objects = [o for o in schema.objects.values() if not o.custom]
    for obj in objects:
        for name in [n for n, f in obj.fields.items() if f.custom]:
            del obj.fields[name]
        for f in obj.fields.values():
            f.reference_to = [t for t in f.reference_to if not t.endswith("__c")]
    by_name = {o.name: o for o in objects}
    _address(by_name["Account"], "Billing", "BillingAddress")
    _address(by_name["Contact"], "Mailing", "MailingAddress")
    _address(by_name["Lead"], "", "Address")
    for obj in objects:
        obj.reindex()
    return Schema(objects)


INTERESTS = ("Analytics", "Automation", "Integrations", "Mobile", "Security", "Training")


def mature_schema() -> Schema:
    """An org customised for years by someone else: record types, person accounts, a multi-select
    picklist, a long text area, a currency and a geolocation field, a custom object that is a
    child of Lead, and an object the sync user's profile cannot see."""
    schema = standard_schema()
    objects = list(schema.objects.values())
    by_name = schema.objects
    record_type = _obj("RecordType", "Record Type", "Record Types", "012", [
        *_system(None, deleted=False),
        _f("Name", "string", length=80, nillable=False, name_field=True),
        _f("DeveloperName", "string", length=80, nillable=False),
        _f("SobjectType", "picklist", length=40, nillable=False),
        _f("IsActive", "boolean", label="Active"),
        _f("Description", "string", length=255),
    ], createable=False, updateable=False, deletable=False, undeletable=False)
    for f in record_type.fields.values():
        f.createable = f.updateable = False
    for name in ("Account", "Contact", "Lead", "Opportunity"):
        by_name[name].fields["RecordTypeId"] = _ref("RecordTypeId", ["RecordType"], "RecordType",
                                                    label="Record Type ID")
    account, contact, lead = by_name["Account"], by_name["Contact"], by_name["Lead"]
    for field_ in (_ro(_f("IsPersonAccount", "boolean", label="Is Person Account")),
                   _ro(_ref("PersonContactId", ["Contact"], "PersonContact")),
                   _ro(_f("PersonEmail", "email", label="Email")),
                   _f("Contract_Value__c", "currency", label="Contract Value"),
                   _f("Headquarters__Latitude__s", "double", precision=18, scale=15,
                      compound="Headquarters__c", label="Headquarters (Latitude)"),
                   _f("Headquarters__Longitude__s", "double", precision=18, scale=15,
                      compound="Headquarters__c", label="Headquarters (Longitude)"),
                   _ro(_f("Headquarters__c", "location", custom=True))):
        account.fields[field_.name] = field_
    contact.fields["IsPersonAccount"] = _ro(_f("IsPersonAccount", "boolean",
                                               label="Is Person Account"))
    for obj in (contact, lead):
        obj.fields["Product_Interest__c"] = _f("Product_Interest__c", "multipicklist",
                                               picklist=list(INTERESTS), length=4099,
                                               label="Product Interest")
        obj.fields["Conversation_Notes__c"] = _f("Conversation_Notes__c", "textarea",
                                                 length=131072, label="Conversation Notes")
    trial = _obj("Trial_Request__c", "Trial Request", "Trial Requests", "a03", [
        *_system(["User"]),
        _ro(_f("Name", "string", length=80, nillable=False, name_field=True, auto_number=True,
               defaulted_on_create=True, label="Trial Request Number")),
        _ref("Lead__c", ["Lead"], "Lead__r", nillable=False),
        _picklist("Product__c", INTERESTS),
        _f("Seats__c", "double", precision=6, scale=0),
        _f("Requested_On__c", "date"),
    ])
    commission = _obj("Commission__c", "Commission", "Commissions", "a04", [
        *_system(["User"]),
        _f("Name", "string", length=80, nillable=False, name_field=True),
        _ref("Opportunity__c", ["Opportunity"], "Opportunity__r"),
        _f("Amount__c", "currency"),
    ], visible=False)
    for obj in objects:
        obj.reindex()
    return Schema([*objects, record_type, trial, commission])


def schema_for(profile: str) -> Schema:
    if profile not in PROFILES:
        raise ValueError(f"org profile must be one of {', '.join(PROFILES)}, not {profile!r}")
    return {"demo": demo_schema, "standard": standard_schema, "mature": mature_schema}[profile]()

"""Record writes as Salesforce performs them: validation, derived fields, cascades, recycle bin,
merge and lead conversion.

API writes (``system=False``) see the org through the sync user's permissions. System writes
(seeding, simulated sales activity, conversions) bypass field-level security but still derive
fields and bump ``SystemModstamp``, as Salesforce's own automation does.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta

from . import values as V
from .errors import ApiError, not_found
from .ids import normalize_id
from .schema import OPPORTUNITY_STAGES, TASK_STATUSES, Field, SObject
from .storage import quote
from .store import Org

AUDIT_FIELDS = ("CreatedDate", "CreatedById", "LastModifiedDate", "LastModifiedById",
                "SystemModstamp")

# parent object -> (child object, lookup field) rows deleted with the parent
CASCADES = {
    "Account": [("Contact", "AccountId"), ("Opportunity", "AccountId"),
                ("Subscription__c", "Account__c"), ("Task", "WhatId"), ("Event", "WhatId")],
    "Contact": [("OpportunityContactRole", "ContactId"), ("CampaignMember", "ContactId"),
                ("Task", "WhoId"), ("Event", "WhoId"), ("Webinar_Attendance__c", "Contact__c")],
    "Lead": [("CampaignMember", "LeadId"), ("Task", "WhoId"), ("Event", "WhoId"),
             ("Trial_Request__c", "Lead__c")],
    "Opportunity": [("OpportunityContactRole", "OpportunityId"), ("Task", "WhatId"),
                    ("Event", "WhatId"), ("Commission__c", "Opportunity__c")],
    "Campaign": [("CampaignMember", "CampaignId"), ("CampaignMemberStatus", "CampaignId")],
    "Webinar_Attendance__c": [("Task", "WhatId"), ("Event", "WhatId")],
    "Subscription__c": [("Task", "WhatId"), ("Event", "WhatId")],
}
# object merged -> (child object, lookup field) rows re-parented to the survivor
MERGE_CHILDREN = {
    "Lead": [("CampaignMember", "LeadId"), ("Task", "WhoId"), ("Event", "WhoId"),
             ("Trial_Request__c", "Lead__c")],
    "Contact": [("CampaignMember", "ContactId"), ("OpportunityContactRole", "ContactId"),
                ("Task", "WhoId"), ("Event", "WhoId"), ("Webinar_Attendance__c", "Contact__c"),
                ("Contact", "ReportsToId")],
    "Account": [("Contact", "AccountId"), ("Opportunity", "AccountId"),
                ("Subscription__c", "Account__c"), ("Task", "WhatId"), ("Event", "WhatId"),
                ("Account", "ParentId")],
}
LEAD_TO_CONTACT = {"Salutation": "Salutation", "FirstName": "FirstName", "LastName": "LastName",
                   "Email": "Email", "Phone": "Phone", "MobilePhone": "MobilePhone",
                   "Title": "Title", "LeadSource": "LeadSource", "Description": "Description",
                   "Street": "MailingStreet", "City": "MailingCity", "State": "MailingState",
                   "PostalCode": "MailingPostalCode", "Country": "MailingCountry",
                   "HasOptedOutOfEmail": "HasOptedOutOfEmail", "DoNotCall": "DoNotCall",
                   "Do_Not_Sync_Marketing__c": "Do_Not_Sync_Marketing__c",
                   "Lead_Score__c": "Lead_Score__c", "Sales_Region__c": "Sales_Region__c",
                   "Internal_Notes__c": "Internal_Notes__c"}
LEAD_TO_ACCOUNT = {"Company": "Name", "Street": "BillingStreet", "City": "BillingCity",
                   "State": "BillingState", "PostalCode": "BillingPostalCode",
                   "Country": "BillingCountry", "Website": "Website", "Industry": "Industry",
                   "AnnualRevenue": "AnnualRevenue", "NumberOfEmployees": "NumberOfEmployees",
                   "Phone": "Phone"}


def related(org: Org, table: dict, name: str) -> list[tuple[str, str]]:
    """The (child object, lookup field) pairs of CASCADES / MERGE_CHILDREN this org has (org
    profiles differ in custom objects and fields)."""
    objects = org.schema.objects
    return [(child, fk) for child, fk in table.get(name, [])
            if child in objects and fk in objects[child].fields]


def stamp_text(dt: datetime) -> str:
    return V.format_datetime(dt)


def fetch_row(org: Org, obj: SObject, record_id: str) -> dict | None:
    cur = org.db.cursor()
    cur.row_factory = sqlite3.Row
    row = cur.execute(f"SELECT * FROM {quote(obj.name)} WHERE \"Id\" = ?", (record_id,)).fetchone()
    return dict(row) if row else None


def object_of(org: Org, record_id: str) -> SObject:
    obj = org.schema.object_for_id(record_id)
    if obj is None:
        raise not_found()
    return obj


def render(org: Org, obj: SObject, row: dict, version: str, only: list[str] | None = None) -> dict:
    out = {"attributes": {"type": obj.name,
                          "url": f"/services/data/v{version}/sobjects/{obj.name}/{row['Id']}"}}
    if only:
        for name in only:
            f = obj.field(name)
            if f is None:
                raise ApiError(400, "INVALID_FIELD",
                               f"No such column '{name}' on sobject of type {obj.name}")
            out[f.name] = V.to_json(f, row.get(f.name))
    else:
        for f in obj.visible_fields():
            out[f.name] = V.to_json(f, row.get(f.name))
    return out


# --- create / update ---------------------------------------------------------------------------

def create(org: Org, sobject: str, values: dict, *, system: bool = False,
           stamp: datetime | None = None, csv: bool = False) -> str:
    obj = _object(org, sobject)
    if not system and not obj.createable:
        raise ApiError(400, "INSUFFICIENT_ACCESS_OR_READONLY",
                       "insufficient access rights on object id", [])
    with org.tx():
        row = _apply(org, obj, None, values, system=system, csv=csv)
        record_id = org.new_id(obj.key_prefix)
        row["Id"] = record_id
        stamp_s = stamp_text(stamp or org.now())
        user = org.sync_user_id()
        if not (system and row.get("CreatedDate")):
            row["CreatedDate"] = stamp_s
        row.setdefault("CreatedById", user)
        row["LastModifiedDate"] = row.get("LastModifiedDate") or stamp_s
        row["SystemModstamp"] = max(stamp_s, row["LastModifiedDate"]) if system \
            else stamp_s
        row.setdefault("LastModifiedById", user)
        if obj.has("OwnerId") and not row.get("OwnerId"):
            row["OwnerId"] = user
        _derive(org, obj, None, row)
        _check(org, obj, None, row, system=system)
        cols = list(row)
        org.db.execute(f"INSERT INTO {quote(obj.name)} ({', '.join(map(quote, cols))}) "
                       f"VALUES ({', '.join('?' * len(cols))})", [row[c] for c in cols])
        _after_write(org, obj, None, row)
        org.save_id_counters()
    return record_id


def update(org: Org, sobject: str | None, record_id: str, values: dict, *, system: bool = False,
           stamp: datetime | None = None, csv: bool = False) -> None:
    with org.tx():
        obj, existing = _target(org, sobject, record_id, deleted_ok=False)
        record_id = existing["Id"]
        if obj.name == "Lead" and existing.get("IsConverted") and not system:
            raise ApiError(400, "CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead",
                           [])
        changes = _apply(org, obj, existing, values, system=system, csv=csv)
        row = {**existing, **changes}
        stamp_s = stamp_text(stamp or org.now())
        if not (system and "LastModifiedDate" in changes):
            row["LastModifiedDate"] = stamp_s
        row["SystemModstamp"] = stamp_s
        row["LastModifiedById"] = org.sync_user_id()
        _derive(org, obj, existing, row)
        _check(org, obj, existing, row, system=system)
        _write_changes(org, obj, existing, row)
        _after_write(org, obj, existing, row)


def upsert(org: Org, sobject: str, ext_field: str, ext_value: str, values: dict) -> tuple[str, bool]:
    """Create or update by an external id (or idLookup) field. Returns (id, created)."""
    obj = _object(org, sobject)
    if ext_field.lower() == "id":
        if not ext_value:
            return create(org, obj.name, values), True
        update(org, obj.name, ext_value, values)
        return normalize_id(ext_value), False
    f = obj.field(ext_field)
    if f is None or not (f.external_id or f.id_lookup):
        raise ApiError(404, "NOT_FOUND",
                       f"Provided external ID field does not exist or is not accessible: "
                       f"{ext_field}")
    matches = find_by(org, obj, f, ext_value)
    body = {k: v for k, v in values.items() if k.lower() != f.name.lower()}
    if len(matches) > 1:
        raise ApiError(300, "MULTIPLE_RECORDS", "More than one record found for external id",
                       extra={"matches": matches})
    if matches:
        update(org, obj.name, matches[0], body)
        return matches[0], False
    return create(org, obj.name, {**body, f.name: ext_value}), True


def find_by(org: Org, obj: SObject, f: Field, value) -> list[str]:
    stored = V.from_api(f, value)
    rows = org.db.execute(f'SELECT "Id" FROM {quote(obj.name)} WHERE {quote(f.name)} = ? '
                          f'AND "IsDeleted" = 0 ORDER BY rowid', (stored,)).fetchall()
    return [r[0] for r in rows]


def _target(org: Org, sobject: str | None, record_id: str, *,
            deleted_ok: bool) -> tuple[SObject, dict]:
    """The object and current row a write by id addresses, or Salesforce's error for it."""
    record_id = normalize_id(record_id)
    obj = _object(org, sobject) if sobject else object_of(org, record_id)
    row = fetch_row(org, obj, record_id) if record_id[:3] == obj.key_prefix else None
    if row is None:
        raise not_found()
    if row["IsDeleted"] and not deleted_ok:
        raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted", [])
    return obj, row


def _object(org: Org, sobject: str) -> SObject:
    obj = org.schema.get(sobject)
    if obj is None:
        raise not_found()
    return obj


def _apply(org: Org, obj: SObject, existing: dict | None, values: dict, *, system: bool,
           csv: bool) -> dict:
    """Validate the caller's values and convert them to stored form."""
    if not isinstance(values, dict):
        raise ApiError(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject")
    out: dict = {}
    readonly: list[str] = []
    for key, value in values.items():
        if key == "attributes":
            continue
        if existing is not None and key.lower() == "id":
            continue
        rel = obj.relationship(key) if isinstance(value, dict) else None
        if rel is not None:  # nested lookup by external id: {"Account": {"Ext__c": "A-1"}}
            out[rel.name] = _resolve_external_reference(org, rel, value)
            continue
        f = obj.field(key, include_hidden=system)
        if f is None:
            raise ApiError(400, "INVALID_FIELD",
                           f"No such column '{key}' on sobject of type {obj.name}")
        writable = (f.can_create if existing is None else f.can_update) if not system else True
        if not writable:
            readonly.append(f.name)
            continue
        if csv and value == "#N/A":
            value = None
        stored = V.from_api(f, value, csv=csv)
        if f.type == "picklist" and stored is not None and f.restricted_picklist:
            stored = _picklist_value(f, stored)
        if f.type == "reference" and stored is not None:
            _check_reference(org, f, stored)
        out[f.name] = stored
    if readonly:
        raise ApiError(400, "INVALID_FIELD_FOR_INSERT_UPDATE",
                       f"Unable to create/update fields: {', '.join(readonly)}. Please check the "
                       "security settings of this field and verify that it is read/write for "
                       "your profile or permission set.", readonly)
    if existing is None:
        for f in obj.fields.values():
            if f.name not in out and f.default_value is not None and not f.calculated:
                out[f.name] = int(f.default_value) if f.type == "boolean" else f.default_value
    return out


def _picklist_value(f: Field, value: str) -> str:
    for allowed in f.picklist:
        if allowed.lower() == value.lower():
            return allowed
    raise ApiError(400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                   f"{f.label or f.name}: bad value for restricted picklist field: {value}",
                   [f.name])


def _check_reference(org: Org, f: Field, ref_id: str) -> None:
    target = org.schema.object_for_id(ref_id)
    label = f.label or f.name
    if target is None or target.name not in f.reference_to:
        raise ApiError(400, "FIELD_INTEGRITY_EXCEPTION",
                       f"{label}: id value of incorrect type: {ref_id}", [f.name])
    row = org.db.execute(f'SELECT "IsDeleted" FROM {quote(target.name)} WHERE "Id" = ?',
                         (ref_id,)).fetchone()
    if row is None or row[0]:
        raise ApiError(400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id",
                       [f.name])
    if target.name == "User" and f.name == "OwnerId":
        active = org.db.execute('SELECT "IsActive" FROM "User" WHERE "Id" = ?',
                                (ref_id,)).fetchone()[0]
        if not active:
            raise ApiError(400, "INACTIVE_OWNER_OR_USER", "owner or user is inactive", [f.name])


def _resolve_external_reference(org: Org, rel: Field, spec: dict) -> str:
    target = org.schema.get(rel.reference_to[0])
    keys = [k for k in spec if k != "attributes"]
    if len(keys) != 1 or target is None:
        raise ApiError(400, "INVALID_FIELD", f"Foreign key external ID: {rel.relationship_name} "
                       "must name exactly one external id field")
    f = target.field(keys[0])
    if f is None or not (f.external_id or f.id_lookup or f.name == "Id"):
        raise ApiError(400, "INVALID_FIELD", f"Foreign key external ID: {keys[0]} not found for "
                       f"field {rel.relationship_name} in entity {target.name}")
    matches = [normalize_id(spec[keys[0]])] if f.name == "Id" else find_by(org, target, f,
                                                                         spec[keys[0]])
    if not matches:
        raise ApiError(400, "INVALID_FIELD", f"Foreign key external ID: {spec[keys[0]]} not found "
                       f"for field {f.name} in entity {target.name}", [rel.name])
    if len(matches) > 1:
        raise ApiError(400, "DUPLICATE_EXTERNAL_ID", f"Foreign key external ID: {spec[keys[0]]} "
                       f"matched more than one record for field {f.name}", [rel.name])
    return matches[0]


def _derive(org: Org, obj: SObject, existing: dict | None, row: dict) -> None:
    """Fields Salesforce computes on save."""
    name = obj.name
    if name in {"Lead", "Contact", "User"}:
        row["Name"] = " ".join(p for p in (row.get("FirstName"), row.get("LastName")) if p) or None
    if name == "Contact":
        if obj.has("Account_Rating__c"):
            row["Account_Rating__c"] = _lookup(org, "Account", row.get("AccountId"), "Rating")
    elif name == "Opportunity":
        stage = OPPORTUNITY_STAGES.get(row.get("StageName") or "")
        if stage:
            stage_changed = existing is None or existing.get("StageName") != row.get("StageName")
            if row.get("Probability") is None or (stage_changed and existing is not None
                                                  and row.get("Probability") ==
                                                  existing.get("Probability")):
                row["Probability"] = float(stage[0])
            row["IsClosed"], row["IsWon"], row["ForecastCategory"] = int(stage[1]), \
                int(stage[2]), stage[3]
        amount, prob = row.get("Amount"), row.get("Probability")
        row["ExpectedRevenue"] = None if amount is None or prob is None else amount * prob / 100
    elif name in {"Task", "Event"}:
        if name == "Task":
            closed = TASK_STATUSES.get(row.get("Status") or "", False)
            row["IsClosed"] = int(closed)
            if closed and not row.get("CompletedDateTime"):
                row["CompletedDateTime"] = row["LastModifiedDate"]
            if not closed:
                row["CompletedDateTime"] = None
        else:
            start = row.get("ActivityDateTime") or row.get("StartDateTime")
            row["ActivityDateTime"] = row["StartDateTime"] = start
            if start and row.get("DurationInMinutes") is not None:
                end = V.parse_datetime(start) + timedelta(minutes=row["DurationInMinutes"])
                row["EndDateTime"] = V.format_datetime(end)
            row["ActivityDate"] = start[:10] if start else None
        row["AccountId"] = _activity_account(org, row)
    elif name == "CampaignMember":
        _derive_member(org, existing, row)
    if existing is None and obj.has("Name") and obj.fields["Name"].auto_number:
        initials = "".join(word[0] for word in obj.label.split())  # Webinar Attendance: WA
        row["Name"] = f"{initials}-{org.id_counters.get(obj.key_prefix, 0):06d}"


def _lookup(org: Org, table: str, record_id: str | None, column: str):
    if not record_id:
        return None
    row = org.db.execute(f'SELECT {quote(column)} FROM {quote(table)} WHERE "Id" = ?',
                         (record_id,)).fetchone()
    return row[0] if row else None


def _activity_account(org: Org, row: dict) -> str | None:
    who, what = row.get("WhoId"), row.get("WhatId")
    if who and who.startswith("003"):
        acct = _lookup(org, "Contact", who, "AccountId")
        if acct:
            return acct
    if what and what.startswith("001"):
        return what
    if what and what.startswith("006"):
        return _lookup(org, "Opportunity", what, "AccountId")
    return None


def _derive_member(org: Org, existing: dict | None, row: dict) -> None:
    campaign = row.get("CampaignId")
    statuses = org.db.execute('SELECT "Label", "IsDefault", "HasResponded" FROM '
                              '"CampaignMemberStatus" WHERE "CampaignId" = ? AND "IsDeleted" = 0',
                              (campaign,)).fetchall()
    if row.get("Status") is None:
        row["Status"] = next((s[0] for s in statuses if s[1]), statuses[0][0] if statuses else None)
    status = next((s for s in statuses if s[0].lower() == (row["Status"] or "").lower()), None)
    if status is None:
        raise ApiError(400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                       f"Status: bad value for restricted picklist field: {row['Status']}",
                       ["Status"])
    row["Status"] = status[0]
    row["HasResponded"] = int(bool(status[2]))
    if status[2] and not row.get("FirstRespondedDate"):
        row["FirstRespondedDate"] = row["SystemModstamp"][:10]
    person_id = row.get("ContactId") or row.get("LeadId")
    row["Type"] = "Contact" if row.get("ContactId") else ("Lead" if row.get("LeadId") else None)
    row["LeadOrContactId"] = person_id
    _copy_person_fields(org, row)


def _copy_person_fields(org: Org, row: dict) -> None:
    person_id = row.get("LeadOrContactId")
    if not person_id:
        return
    table = "Contact" if person_id.startswith("003") else "Lead"
    company = '(SELECT "Name" FROM "Account" a WHERE a."Id" = p."AccountId")' \
        if table == "Contact" else 'p."Company"'
    person = org.db.execute(f'SELECT "FirstName", "LastName", "Email", "Title", "OwnerId", '
                            f'{company} FROM {quote(table)} p WHERE "Id" = ?',
                            (person_id,)).fetchone()
    if person:
        (row["FirstName"], row["LastName"], row["Email"], row["Title"],
         row["LeadOrContactOwnerId"], row["CompanyOrAccount"]) = person


def _check(org: Org, obj: SObject, existing: dict | None, row: dict, *, system: bool) -> None:
    """Required fields, uniqueness, validation rules, duplicate rules."""
    missing = [f.name for f in obj.fields.values()
               if not f.nillable and f.createable and not f.defaulted_on_create
               and not f.calculated and f.type != "boolean" and row.get(f.name) is None]
    if obj.name == "CampaignMember" and not (row.get("LeadId") or row.get("ContactId")):
        missing += ["LeadId", "ContactId"]
    if missing:
        raise ApiError(400, "REQUIRED_FIELD_MISSING",
                       f"Required fields are missing: [{', '.join(missing)}]", missing)
    for f in obj.fields.values():
        if f.unique and row.get(f.name) is not None and (
                existing is None or existing.get(f.name) != row.get(f.name)):
            other = org.db.execute(
                f'SELECT "Id" FROM {quote(obj.name)} WHERE {quote(f.name)} = ? AND "Id" != ? '
                f'AND "IsDeleted" = 0 LIMIT 1', (row[f.name], row.get("Id") or "")).fetchone()
            if other:
                raise ApiError(400, "DUPLICATE_VALUE", f"duplicate value found: {f.name} "
                               f"duplicates value on record with id: {other[0]}", [f.name])
    if obj.name in {"Lead", "Contact"}:
        score = row.get("Lead_Score__c")
        if score is not None and not 0 <= score <= 100:
            raise ApiError(400, "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                           "Lead Score must be between 0 and 100.", ["Lead_Score__c"])
        if existing is None and org.settings.block_duplicates and row.get("Email") and not system:
            _check_duplicate_rule(org, obj, row)
    if obj.name == "Opportunity" and (row.get("Amount") or 0) < 0:
        raise ApiError(400, "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                       "Amount cannot be negative.", ["Amount"])
    if obj.name == "CampaignMember" and existing is None:
        person_col = "ContactId" if row.get("ContactId") else "LeadId"
        dup = org.db.execute(f'SELECT "Id" FROM "CampaignMember" WHERE "CampaignId" = ? AND '
                             f'{quote(person_col)} = ? LIMIT 1',
                             (row["CampaignId"], row[person_col])).fetchone()
        if dup:
            raise ApiError(400, "DUPLICATE_VALUE", "Already a campaign member.", [])


def _check_duplicate_rule(org: Org, obj: SObject, row: dict) -> None:
    for table in ("Lead", "Contact"):
        match = org.db.execute(f'SELECT "Id" FROM {quote(table)} WHERE "Email" = ? AND '
                               f'"IsDeleted" = 0 LIMIT 1', (row["Email"],)).fetchone()
        if match:
            url = f"/services/data/v59.0/sobjects/{table}/{match[0]}"
            raise ApiError(400, "DUPLICATES_DETECTED", "Use one of these records?", [], extra={
                "duplicateResult": {
                    "allowSave": False, "duplicateRule": f"Standard_{obj.name}_Duplicate_Rule",
                    "duplicateRuleEntityType": obj.name,
                    "errorMessage": "You're creating a duplicate record. We recommend you use "
                                    "an existing record instead.",
                    "matchResults": [{"entityType": table, "errors": [],
                                      "matchEngine": "FuzzyMatchEngine",
                                      "matchRecords": [{"additionalInformation": [],
                                                        "fieldDiffs": [], "matchConfidence": 100.0,
                                                        "record": {"attributes": {
                                                            "type": table, "url": url},
                                                            "Id": match[0]}}],
                                      "rule": f"Standard_{table}_Match_Rule_v1_1", "size": 1,
                                      "success": True}]}})


def _refresh_member_copies(org: Org, where: str, value: str) -> None:
    """Campaign members' copies of their person's fields, refreshed as Salesforce does: without
    moving the members' SystemModstamp."""
    cur = org.db.cursor()
    cur.row_factory = sqlite3.Row
    for member in cur.execute(f'SELECT * FROM "CampaignMember" WHERE {where}',
                              (value,)).fetchall():
        member = dict(member)
        before = dict(member)
        _copy_person_fields(org, member)
        _write_changes(org, org.schema.get("CampaignMember"), before, member)


def _write_changes(org: Org, obj: SObject, existing: dict, row: dict) -> None:
    changed = [c for c in row if row[c] != existing.get(c)]
    if changed:
        org.db.execute(f"UPDATE {quote(obj.name)} SET {', '.join(quote(c) + ' = ?' for c in changed)}"
                       f" WHERE \"Id\" = ?", [row[c] for c in changed] + [row["Id"]])


def _after_write(org: Org, obj: SObject, existing: dict | None, row: dict) -> None:
    """Side effects that do NOT bump the related records' SystemModstamp (formulas, copies)."""
    if obj.name == "Account" and existing and existing.get("Rating") != row.get("Rating") \
            and org.schema.objects["Contact"].has("Account_Rating__c"):
        org.db.execute('UPDATE "Contact" SET "Account_Rating__c" = ? WHERE "AccountId" = ?',
                       (row.get("Rating"), row["Id"]))
    if obj.name in {"Lead", "Contact"} and existing:
        watched = ("FirstName", "LastName", "Email", "Title", "OwnerId", "Company", "AccountId")
        if any(existing.get(c) != row.get(c) for c in watched):
            _refresh_member_copies(org, '"LeadOrContactId" = ?', row["Id"])
    if obj.name == "Account" and existing and existing.get("Name") != row.get("Name"):
        # a contact member's CompanyOrAccount is its account's name
        _refresh_member_copies(org, '"LeadOrContactId" IN (SELECT "Id" FROM "Contact" WHERE '
                                    '"AccountId" = ?)', row["Id"])
    if obj.name == "Campaign" and existing is None:
        for order, (label, default, responded) in enumerate(
                (("Sent", True, False), ("Responded", False, True)), start=1):
            create(org, "CampaignMemberStatus", {"CampaignId": row["Id"], "Label": label,
                                                 "IsDefault": default, "HasResponded": responded,
                                                 "SortOrder": order}, system=True,
                   stamp=V.parse_datetime(row["SystemModstamp"]))


# --- delete / undelete -------------------------------------------------------------------------

def delete(org: Org, record_id: str, *, sobject: str | None = None, hard: bool = False,
           stamp: datetime | None = None) -> None:
    with org.tx():
        obj, row = _target(org, sobject, record_id, deleted_ok=hard)
        record_id = row["Id"]
        if not obj.deletable:
            raise ApiError(400, "INSUFFICIENT_ACCESS_OR_READONLY",
                           "insufficient access rights on object id", [])
        _delete_tree(org, obj, record_id, stamp_text(stamp or org.now()), root=record_id, hard=hard)


def _delete_tree(org: Org, obj: SObject, record_id: str, stamp: str, *, root: str,
                 hard: bool) -> None:
    for child_name, fk in related(org, CASCADES, obj.name):
        child = org.schema.get_any(child_name)
        for (child_id,) in org.db.execute(
                f'SELECT "Id" FROM {quote(child_name)} WHERE {quote(fk)} = ? AND "IsDeleted" = 0',
                (record_id,)).fetchall():
            _delete_tree(org, child, child_id, stamp, root=root, hard=hard)
    if hard or obj.hard_delete_only:
        org.db.execute(f'DELETE FROM {quote(obj.name)} WHERE "Id" = ?', (record_id,))
    else:
        org.db.execute(f'UPDATE {quote(obj.name)} SET "IsDeleted" = 1, "SystemModstamp" = ?, '
                       f'"LastModifiedDate" = ? WHERE "Id" = ?', (stamp, stamp, record_id))
    org.db.execute("INSERT INTO _deleted_log (sobject, id, deleted_date, cascade_root, hard) "
                   "VALUES (?, ?, ?, ?, ?)",
                   (obj.name, record_id, stamp, root if root != record_id else None,
                    int(hard or obj.hard_delete_only)))


def undelete(org: Org, record_id: str, *, stamp: datetime | None = None) -> None:
    record_id = normalize_id(record_id)
    obj = object_of(org, record_id)
    with org.tx():
        row = fetch_row(org, obj, record_id)
        if row is None or not row["IsDeleted"]:
            raise ApiError(400, "UNDELETE_FAILED", "Entity is not in the recycle bin", [])
        stamp_s = stamp_text(stamp or org.now())
        restored = [(obj.name, record_id)] + [
            (r[0], r[1]) for r in org.db.execute(
                "SELECT sobject, id FROM _deleted_log WHERE cascade_root = ? AND hard = 0",
                (record_id,)).fetchall()]
        for name, rid in restored:
            org.db.execute(f'UPDATE {quote(name)} SET "IsDeleted" = 0, "SystemModstamp" = ? '
                           f'WHERE "Id" = ? AND "IsDeleted" = 1', (stamp_s, rid))
            org.db.execute("DELETE FROM _deleted_log WHERE id = ?", (rid,))


# --- merge and conversion ----------------------------------------------------------------------

def merge(org: Org, sobject: str, master_id: str, loser_ids: list[str], *,
          stamp: datetime | None = None) -> None:
    obj = _object(org, sobject)
    if obj.name not in MERGE_CHILDREN:
        raise ApiError(400, "INVALID_TYPE", f"Merge is not supported for {obj.name}")
    master_id = normalize_id(master_id)
    stamp_s = stamp_text(stamp or org.now())
    with org.tx():
        master = fetch_row(org, obj, master_id)
        if master is None or master["IsDeleted"]:
            raise ApiError(400, "ENTITY_IS_DELETED", "master record is deleted or missing", [])
        fills: dict = {}
        for loser_id in map(normalize_id, loser_ids):
            loser = fetch_row(org, obj, loser_id)
            if loser is None or loser["IsDeleted"] or loser_id == master_id:
                raise ApiError(400, "INVALID_ID_FIELD", f"invalid record to merge: {loser_id}", [])
            for f in obj.fields.values():
                if (f.can_update and not f.unique and master.get(f.name) is None
                        and fills.get(f.name) is None and loser.get(f.name) is not None):
                    fills[f.name] = loser[f.name]
            for child_name, fk in related(org, MERGE_CHILDREN, obj.name):
                _reparent(org, child_name, fk, loser_id, master_id, stamp_s)
            org.db.execute(f'UPDATE {quote(obj.name)} SET "IsDeleted" = 1, "MasterRecordId" = ?, '
                           f'"SystemModstamp" = ?, "LastModifiedDate" = ? WHERE "Id" = ?',
                           (master_id, stamp_s, stamp_s, loser_id))
            org.db.execute("INSERT INTO _deleted_log (sobject, id, deleted_date) VALUES (?, ?, ?)",
                           (obj.name, loser_id, stamp_s))
        row = {**master, **fills, "SystemModstamp": stamp_s, "LastModifiedDate": stamp_s}
        _derive(org, obj, master, row)
        _write_changes(org, obj, master, row)
        _after_write(org, obj, master, row)


def _reparent(org: Org, child_name: str, fk: str, old: str, new: str, stamp: str) -> None:
    child = org.schema.get(child_name)
    if child_name == "CampaignMember":
        # the survivor is already a member of the campaign: the loser's membership goes away
        for (member_id,) in org.db.execute(
                f'SELECT m."Id" FROM "CampaignMember" m WHERE m.{quote(fk)} = ? AND EXISTS '
                f'(SELECT 1 FROM "CampaignMember" s WHERE s."CampaignId" = m."CampaignId" AND '
                f's.{quote(fk)} = ?)', (old, new)).fetchall():
            _delete_tree(org, child, member_id, stamp, root=member_id, hard=True)
    cur = org.db.cursor()
    cur.row_factory = sqlite3.Row
    for row in cur.execute(f'SELECT * FROM {quote(child_name)} WHERE {quote(fk)} = ?',
                           (old,)).fetchall():
        before = dict(row)
        after = {**before, fk: new, "SystemModstamp": stamp}
        if child_name == "CampaignMember":
            after["LeadOrContactId"] = after.get("ContactId") or after.get("LeadId")
            _copy_person_fields(org, after)
        if child_name in {"Task", "Event"}:
            after["AccountId"] = _activity_account(org, after)
        _write_changes(org, child, before, after)


def convert_lead(org: Org, lead_id: str, *, account_id: str | None = None,
                 contact_id: str | None = None, create_opportunity: bool = False,
                 opportunity_name: str | None = None, stamp: datetime | None = None) -> dict:
    """Convert a lead as Salesforce's convertLead does; returns the ids involved."""
    lead_id = normalize_id(lead_id)
    lead_obj = org.schema.get("Lead")
    when = stamp or org.now()
    contact_obj = org.schema.objects["Contact"]
    with org.tx():
        lead = fetch_row(org, lead_obj, lead_id)
        if lead is None or lead["IsDeleted"]:
            raise ApiError(400, "ENTITY_IS_DELETED", "entity is deleted", [])
        if lead["IsConverted"]:
            raise ApiError(400, "CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead",
                           [])
        if account_id is None:
            account_id = create(org, "Account", {
                a: _api_value(org, "Lead", lf, lead[lf]) for lf, a in LEAD_TO_ACCOUNT.items()
                if lead.get(lf) is not None} | {"OwnerId": lead["OwnerId"]}, system=True,
                stamp=when)
        if contact_id is None:
            contact_id = create(org, "Contact", {
                c: _api_value(org, "Lead", lf, lead[lf]) for lf, c in LEAD_TO_CONTACT.items()
                if lead.get(lf) is not None and contact_obj.has(c)} | {"AccountId": account_id,
                                                "OwnerId": lead["OwnerId"]},
                system=True, stamp=when)
        else:
            contact_id = normalize_id(contact_id)
            contact = fetch_row(org, org.schema.get("Contact"), contact_id)
            blanks = {c: _api_value(org, "Lead", lf, lead[lf]) for lf, c in LEAD_TO_CONTACT.items()
                      if lead.get(lf) is not None and contact_obj.has(c)
                      and contact.get(c) is None}
            if not contact.get("AccountId"):
                blanks["AccountId"] = account_id
            update(org, "Contact", contact_id, blanks, system=True, stamp=when)
        opportunity_id = None
        if create_opportunity:
            opportunity_id = create(org, "Opportunity", {
                "Name": opportunity_name or f"{lead['Company']}-",
                "AccountId": account_id, "StageName": "Prospecting",
                "CloseDate": (when + timedelta(days=30)).date().isoformat(),
                "OwnerId": lead["OwnerId"], "LeadSource": lead.get("LeadSource")},
                system=True, stamp=when)
        stamp_s = stamp_text(when)
        org.db.execute('UPDATE "Lead" SET "IsConverted" = 1, "ConvertedDate" = ?, '
                       '"ConvertedAccountId" = ?, "ConvertedContactId" = ?, '
                       '"ConvertedOpportunityId" = ?, "Status" = ?, "SystemModstamp" = ?, '
                       '"LastModifiedDate" = ? WHERE "Id" = ?',
                       (stamp_s[:10], account_id, contact_id, opportunity_id,
                        "Closed - Converted", stamp_s, stamp_s, lead_id))
        cur = org.db.cursor()
        cur.row_factory = sqlite3.Row
        member_obj = org.schema.get("CampaignMember")
        for member in cur.execute('SELECT * FROM "CampaignMember" WHERE "LeadId" = ?',
                                  (lead_id,)).fetchall():
            before = dict(member)
            after = {**before, "ContactId": contact_id, "Type": "Contact",
                     "LeadOrContactId": contact_id, "SystemModstamp": stamp_s}
            _copy_person_fields(org, after)
            _write_changes(org, member_obj, before, after)
        for table in ("Task", "Event"):
            _reparent(org, table, "WhoId", lead_id, contact_id, stamp_s)
    return {"leadId": lead_id, "accountId": account_id, "contactId": contact_id,
            "opportunityId": opportunity_id}


def _api_value(org: Org, sobject: str, field_name: str, raw):
    return V.to_json(org.schema.get(sobject).fields[field_name], raw)

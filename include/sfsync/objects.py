"""The synced object types, their tables and their groups (standard library only: the DAG
files read it at parse time, and so do the catalog and the org summary)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectType:
    sf_object: str
    table: str
    group: str  # task group, in dependency order (GROUP_ORDER)
    two_way: bool = False
    custom: bool = False

    @property
    def direction(self) -> str:
        return "two-way" if self.two_way else "salesforce-to-marketing"


STANDARD_OBJECTS = (
    ObjectType("User", "sales_user", "users"),
    ObjectType("Account", "company", "accounts"),
    ObjectType("Lead", "person", "people", two_way=True),
    ObjectType("Contact", "person", "people", two_way=True),
    ObjectType("Campaign", "campaign", "campaigns", two_way=True),
    ObjectType("CampaignMember", "campaign_member", "campaign_members", two_way=True),
    ObjectType("Opportunity", "opportunity", "opportunities"),
    ObjectType("OpportunityContactRole", "opportunity_contact_role", "contact_roles"),
    ObjectType("Task", "activity", "activities"),
    ObjectType("Event", "activity", "activities"),
)
GROUP_ORDER = ("users", "accounts", "people", "campaigns", "campaign_members", "opportunities",
               "contact_roles", "activities", "custom_objects")
CUSTOM_GROUP = "custom_objects"
PEOPLE = ("Lead", "Contact")
# What a run asks for to copy every object the configuration syncs (read at run time).
ALL_OBJECTS = "all"


def standard_groups() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(group, its standard objects) in dependency order: the incremental DAG's task groups."""
    return tuple((group, tuple(o.sf_object for o in STANDARD_OBJECTS if o.group == group))
                 for group in GROUP_ORDER if group != CUSTOM_GROUP)


def snake(name: str) -> str:
    """``Webinar_Attendance__c`` -> ``webinar_attendance``, ``LeadSource`` -> ``lead_source``."""
    base = name[:-3] if name.endswith("__c") else name
    base = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", base)
    return re.sub(r"_+", "_", base).lower().strip("_")


def custom_object_type(name: str) -> ObjectType:
    return ObjectType(name, snake(name), CUSTOM_GROUP, custom=True)


def object_types(custom_objects: Iterable[str] = ()) -> list[ObjectType]:
    """Every synced object type: the standard ones, then the custom objects named."""
    return list(STANDARD_OBJECTS) + [custom_object_type(n) for n in custom_objects]


def object_names(custom_objects: Iterable[str] = ()) -> list[str]:
    return [o.sf_object for o in object_types(custom_objects)]

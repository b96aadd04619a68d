"""Record counts and API usage of a Salesforce org, read through an Airflow connection.

Cheap to import: the Salesforce provider (and with it simple-salesforce and requests) is imported
inside :func:`summarize`, so DAG files can import this module at parse time.
"""

from __future__ import annotations

from typing import Any

from tabulate import SEPARATING_LINE, tabulate

# The standard objects the sync cares about, in display order (the configured custom objects
# follow them).
SUMMARY_OBJECTS: tuple[str, ...] = (
    "Lead", "Contact", "Account", "User", "Opportunity", "OpportunityContactRole", "Campaign",
    "CampaignMember", "Task", "Event",
)

# errorCodes meaning "the sync user cannot see this object" rather than "something is broken".
_NOT_VISIBLE_CODES = {"INVALID_TYPE", "NOT_FOUND"}


def _error_code(exc: Exception) -> str | None:
    content = getattr(exc, "content", None)
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return content[0].get("errorCode")
    return None


def summarize(conn_id: str = "salesforce_default",
              objects: tuple[str, ...] = SUMMARY_OBJECTS) -> dict[str, Any]:
    """Count the records of each object and read the org's daily API usage.

    Returns ``{"objects": {name: count or None}, "api_usage": {"used": int|None, "max": int|None}}``.
    A count is ``None`` when the sync user cannot see the object (``INVALID_TYPE``); a refused
    login raises ``LoginFailed``; any other Salesforce error propagates so the task fails and
    retries.
    """
    from simple_salesforce.exceptions import SalesforceError

    from include.sfsync.salesforce.client import SalesforceClient, daily_api_usage
    from include.sfsync.salesforce.soql import count as count_soql

    sf = SalesforceClient.from_connection(conn_id).sf
    counts: dict[str, int | None] = {}
    for name in objects:
        try:
            counts[name] = int(sf.query(count_soql(name))["totalSize"])
        except SalesforceError as exc:
            if _error_code(exc) not in _NOT_VISIBLE_CODES:
                raise
            counts[name] = None

    used, maximum = daily_api_usage(sf)
    return {"objects": counts, "api_usage": {"used": used, "max": maximum}}


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of :func:`summarize`'s result."""
    objects: dict[str, int | None] = summary.get("objects", {})
    rows = [[name, "not visible" if count is None else f"{count:,}"]
            for name, count in objects.items()]
    total = sum(count for count in objects.values() if count is not None)
    lines = [tabulate([*rows, SEPARATING_LINE, ["Total", f"{total:,}"]],
                      headers=["Object", "Records"], colalign=("left", "right"),
                      disable_numparse=True)]

    usage = summary.get("api_usage") or {}
    used, maximum = usage.get("used"), usage.get("max")
    if used is None or maximum is None:
        lines.append("API requests (24 h): unknown")
    else:
        share = f" ({used / maximum:.1%})" if maximum else ""
        lines.append(f"API requests (24 h): {used:,} of {maximum:,}{share}")
    return "\n".join(lines)

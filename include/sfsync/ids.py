"""Salesforce ids as the sync sees them (15 case-sensitive characters + 3 checksum)."""

from __future__ import annotations

import re

_ORG_ID = re.compile(r"^00D[a-zA-Z0-9]{12}(?:[a-zA-Z0-9]{3})?$")


def looks_like_org_id(value: str) -> bool:
    return bool(_ORG_ID.match(value or ""))

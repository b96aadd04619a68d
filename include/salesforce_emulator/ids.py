"""Salesforce record ids: 15-char case-sensitive ids plus the 3-char checksum suffix."""

from __future__ import annotations

import re

from .errors import ApiError

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[A-Z0-5]{3})?$")
# Pod / instance part of every id this emulator makes (chars 4-5 of a real id).
POD = "5e"


def checksum(id15: str) -> str:
    suffix = ""
    for start in (0, 5, 10):
        chunk = id15[start:start + 5]
        bits = sum(1 << i for i, ch in enumerate(chunk) if "A" <= ch <= "Z")
        suffix += _ALPHABET[bits]
    return suffix


def to18(id15: str) -> str:
    return id15 + checksum(id15)


def make_id(prefix: str, counter: int) -> str:
    """A valid 18-char id for the ``counter``-th record with key prefix ``prefix``."""
    digits = []
    n = counter
    for _ in range(10):
        n, r = divmod(n, 62)
        digits.append(_BASE62[r])
    return to18(prefix + POD + "".join(reversed(digits)))


def looks_like_id(value: str) -> bool:
    return bool(_ID_RE.match(value or ""))


def normalize_id(value: str, *, field: str = "Id") -> str:
    """Accept a 15- or 18-char id and return the canonical 18-char form.

    An 18-char id whose suffix does not match its first 15 chars is rejected the way Salesforce
    does (``MALFORMED_ID``).
    """
    if not isinstance(value, str) or not _ID_RE.match(value.strip() if isinstance(value, str) else ""):
        raise ApiError(400, "MALFORMED_ID", f"{_label(field)}: id value of incorrect type: {value}", [field])
    value = value.strip()
    if len(value) == 18:
        if value[15:].upper() != checksum(value[:15]):
            raise ApiError(400, "MALFORMED_ID",
                           f"{_label(field)}: id value of incorrect type: {value}", [field])
        return value[:15] + value[15:].upper()
    return to18(value)


def try_normalize_id(value) -> str | None:
    try:
        return normalize_id(value)
    except ApiError:
        return None


def _label(field: str) -> str:
    return "Record ID" if field == "Id" else field

"""Value formats: API input -> stored value -> REST JSON / Bulk CSV output.

Stored values (SQLite): datetime ``YYYY-MM-DDTHH:MM:SS`` (UTC, whole seconds), date
``YYYY-MM-DD``, time ``HH:MM:SS``, boolean 0/1, numbers as numbers, ids as 18-char text.
ISO strings sort in time order, so SOQL comparisons translate directly into SQL.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from .errors import ApiError
from .ids import normalize_id
from .schema import ID_TYPES, INT_TYPES, REAL_TYPES, TEXT_TYPES, Field

_DATETIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?$")
_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def format_datetime(dt: datetime) -> str:
    """Stored form of a datetime (UTC, whole seconds)."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S")


def parse_datetime(text: str) -> datetime | None:
    """ISO 8601 as Salesforce accepts it: any fractional digits, ``Z``, ``±hh:mm`` or ``±hhmm``.

    A missing offset means UTC. Returns an aware UTC datetime truncated to whole seconds.
    """
    m = _DATETIME_RE.match(text.strip()) if isinstance(text, str) else None
    if not m:
        return None
    y, mo, d, h, mi, s, _frac, tz = m.groups()
    try:
        dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=UTC)
    except ValueError:
        return None
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        dt -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return dt


def parse_date(text: str) -> date | None:
    m = _DATE_RE.match(text.strip()) if isinstance(text, str) else None
    if not m:
        return None
    try:
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


def to_json(f: Field, raw):
    """REST JSON value of a stored value."""
    if raw is None:
        return False if f.type == "boolean" else None
    t = f.type
    if t == "boolean":
        return bool(raw)
    if t == "datetime":
        return raw + ".000+0000"
    if t == "time":
        return raw + ".000Z"
    if t in INT_TYPES:
        return int(raw)
    if t in REAL_TYPES:
        return float(raw)
    return raw


def to_csv(f: Field, raw) -> str:
    """Bulk API 2.0 CSV cell (before quoting). Null and empty string are both empty."""
    if raw is None:
        return "false" if f.type == "boolean" else ""
    t = f.type
    if t == "boolean":
        return "true" if raw else "false"
    if t == "datetime":
        return raw + ".000Z"
    if t == "time":
        return raw + ".000Z"
    if t in INT_TYPES:
        return str(int(raw))
    if t in REAL_TYPES:
        return repr(float(raw))
    return str(raw)


def from_api(f: Field, value, *, csv: bool = False):
    """Validate and convert an API value for ``f`` into its stored form.

    ``csv`` applies Bulk's text rules (booleans as true/false/1/0, numbers as text). Raises
    ApiError with the code Salesforce uses for the mistake.
    """
    if value is None:
        return None
    t = f.type
    label = f.label or f.name
    if t in ID_TYPES:
        if value == "":
            return None
        return normalize_id(value, field=f.name)
    if t == "boolean":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0"}:
            return int(value.lower() in {"true", "1"})
        raise _bad_type(f, value, "boolean")
    if t in INT_TYPES or t in REAL_TYPES:
        if isinstance(value, bool):
            raise _bad_type(f, value, "number")
        if isinstance(value, str):
            if value.strip() == "":
                return None
            try:
                value = float(value) if (t in REAL_TYPES or "." in value) else int(value)
            except ValueError:
                raise _bad_type(f, value, "number") from None
        if not isinstance(value, (int, float)):
            raise _bad_type(f, value, "number")
        if t in INT_TYPES:
            if isinstance(value, float) and not value.is_integer():
                raise _bad_type(f, value, "int")
            return int(value)
        limit = 10 ** (f.precision - f.scale) if f.precision else None
        if limit and abs(value) >= limit:
            raise ApiError(400, "NUMBER_OUTSIDE_VALID_RANGE",
                           f"{label}: value outside of valid range on numeric field: {value}",
                           [f.name])
        return round(float(value), f.scale) if f.scale else float(value)
    if t == "datetime":
        dt = parse_datetime(value) if isinstance(value, str) else None
        if dt is None:
            raise _bad_type(f, value, "datetime")
        return format_datetime(dt)
    if t == "date":
        if isinstance(value, str) and "T" in value and csv:
            value = value.split("T", 1)[0]
        d = parse_date(value) if isinstance(value, str) else None
        if d is None:
            raise _bad_type(f, value, "date")
        return d.isoformat()
    if t == "time":
        if not isinstance(value, str) or not re.match(r"^\d{2}:\d{2}(:\d{2})?", value):
            raise _bad_type(f, value, "time")
        return (value + ":00")[:8] if len(value) == 5 else value[:8]
    if t in TEXT_TYPES:
        if not isinstance(value, str):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            else:
                raise _bad_type(f, value, "string")
        if value == "":
            return None
        if f.length and len(value) > f.length:
            raise ApiError(400, "STRING_TOO_LONG",
                           f"{label}: data value too large: {value[:40]} (max length={f.length})",
                           [f.name])
        if t == "email" and not _EMAIL_RE.match(value):
            raise ApiError(400, "INVALID_EMAIL_ADDRESS", f"{label}: invalid email address: {value}",
                           [f.name])
        return value
    return value


def _bad_type(f: Field, value, expected: str) -> ApiError:
    return ApiError(400, "INVALID_TYPE_ON_FIELD_IN_RECORD",
                    f"{f.label or f.name}: value not of required type: {value}", [f.name])

"""Every conversion between Salesforce's values (REST JSON, Bulk CSV) and Python's."""

from __future__ import annotations

from datetime import date, datetime


def parse_sf_datetime(value: str) -> datetime:
    """``2026-11-23T05:00:00.000+0000`` (REST) or ``...000Z`` (Bulk) -> aware datetime."""
    return datetime.fromisoformat(value)


def parse_value(sf_type: str, value):
    """REST JSON value -> Python value for the marketing database."""
    if value is None:
        return None
    if sf_type == "datetime":
        return parse_sf_datetime(value)
    if sf_type == "date":
        return date.fromisoformat(value[:10])
    if sf_type == "int":
        return int(value)
    if sf_type in {"double", "currency", "percent"}:
        return float(value)
    if sf_type == "boolean":
        return bool(value)
    return value


# The types whose Bulk CSV cells csv_value converts; any other cell is its text ("" is None).
CSV_TYPED = frozenset({"boolean", "int", "double", "currency", "percent"})


def csv_value(sf_type: str, text: str):
    """A Bulk CSV cell as REST JSON would carry it."""
    if sf_type == "boolean":
        return text.lower() == "true"
    if text == "":
        return None
    if sf_type == "int":
        return int(float(text))
    if sf_type in {"double", "currency", "percent"}:
        return float(text)
    return text


def sf_value(sf_type: str, value):
    """A marketing-database value as Salesforce's JSON takes it (raises ValueError if the
    stored value cannot be one of this type: a column widened to text may hold anything)."""
    if value is None or value == "":
        return None
    if sf_type == "datetime":
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if sf_type == "date":
        if isinstance(value, datetime):
            value = value.date()
        return value.isoformat() if isinstance(value, date) else date.fromisoformat(
            str(value)[:10]).isoformat()
    if sf_type == "boolean":
        if isinstance(value, str):
            if value.strip().lower() not in {"true", "false", "1", "0"}:
                raise ValueError(f"{value!r} is not a boolean")
            return value.strip().lower() in {"true", "1"}
        return bool(value)
    if sf_type == "int":
        return int(value)
    if sf_type in {"double", "currency", "percent"}:
        return float(value)
    return value if isinstance(value, str) else str(value)


def same(a, b) -> bool:
    """Equal as synced values (floats within rounding, numbers stored as text)."""
    if a is None or b is None:
        return a is None and b is None or a == "" or b == ""
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))
        except (TypeError, ValueError):
            return False
    if type(a) is not type(b) and not (isinstance(a, datetime) and isinstance(b, datetime)):
        return str(a) == str(b)
    return a == b


def jsonable(value):
    """A value as JSON keeps it (dates and datetimes as ISO text)."""
    return value.isoformat() if isinstance(value, (datetime, date)) else value


def as_text(value) -> str | None:
    return None if value is None else str(jsonable(value))

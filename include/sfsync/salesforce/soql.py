"""The one SOQL builder: every query the sync sends is put together here.

Values are quoted with simple-salesforce's ``quote_soql_value`` (``\\``, ``'``, ``"``, newline,
carriage return, tab, backspace and form feed escaped as Salesforce documents), datetimes as
``YYYY-MM-DDThh:mm:ssZ``. Object and field names must be API names: anything else raises
``ValueError`` before a query is sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from urllib.parse import quote as url_quote

from simple_salesforce.format import quote_soql_value

IN_LIST_BUDGET = 10_000  # URL-encoded characters of one IN list: queries go in GET URLs (16 KB)
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*")


def name(value: str) -> str:
    """An object or field API name (``Owner.Name`` too), checked."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a Salesforce API name")
    return value


def soql_datetime(value: datetime) -> str:
    """A datetime literal in UTC (naive values are taken as UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def quote(value) -> str:
    """A value as a SOQL literal (a list, set or tuple as ``('a','b')``)."""
    if isinstance(value, datetime):
        return soql_datetime(value)
    return quote_soql_value(value)


def where(field: str, op: str, value) -> str:
    """``Field op literal``; ``op`` is one of SOQL's comparison operators."""
    if op not in {"=", "!=", "<", "<=", ">", ">=", "IN", "NOT IN"}:
        raise ValueError(f"{op!r} is not a SOQL comparison operator")
    return f"{name(field)} {op} {quote(value)}"


def one_of(field: str, quoted_list: str) -> str:
    """``Field IN (...)`` with a list from :func:`in_lists`."""
    return f"{name(field)} IN ({quoted_list})"


def any_of(*conditions: str) -> str:
    return "(" + " OR ".join(conditions) + ")"


def all_of(*conditions: str) -> str:
    return "(" + " AND ".join(conditions) + ")"


def select(sobject: str, fields: Sequence[str], *, conditions: Iterable[str] = (),
           order_by: Sequence[str] = (), limit: int | None = None) -> str:
    """``SELECT fields FROM sobject [WHERE c1 AND c2 ...] [ORDER BY ...] [LIMIT n]``;
    ``conditions`` come from :func:`where`, :func:`one_of`, :func:`any_of`, :func:`all_of`."""
    soql = f"SELECT {', '.join(name(f) for f in fields)} FROM {name(sobject)}"
    conditions = list(conditions)
    if conditions:
        soql += " WHERE " + " AND ".join(conditions)
    if order_by:
        soql += " ORDER BY " + ", ".join(_order(o) for o in order_by)
    if limit is not None:
        soql += f" LIMIT {int(limit)}"
    return soql


def count(sobject: str, *, conditions: Iterable[str] = ()) -> str:
    """``SELECT COUNT() FROM sobject [WHERE ...]``."""
    soql = f"SELECT COUNT() FROM {name(sobject)}"
    conditions = list(conditions)
    return soql + (" WHERE " + " AND ".join(conditions) if conditions else "")


def _order(term: str) -> str:
    field, _, direction = term.partition(" ")
    if direction and direction.upper() not in {"ASC", "DESC"}:
        raise ValueError(f"ORDER BY {term!r}: expected 'Field', 'Field ASC' or 'Field DESC'")
    return name(field) + (f" {direction.upper()}" if direction else "")


def in_lists(values: Iterable, budget: int = IN_LIST_BUDGET) -> list[str]:
    """``values`` as quoted SOQL IN lists (``'a','b'``), each short enough for a query URL."""
    # Hand-written, not more_itertools.chunked: the lists are sized by encoded length, not count.
    lists, current, size = [], [], 0
    for value in values:
        quoted = quote(value)
        cost = len(url_quote(quoted, safe="")) + 3  # and the encoded comma
        if current and size + cost > budget:
            lists.append(",".join(current))
            current, size = [], 0
        current.append(quoted)
        size += cost
    if current:
        lists.append(",".join(current))
    return lists

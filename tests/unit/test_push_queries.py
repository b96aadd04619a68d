"""The push's lookups: SOQL IN lists sized for query URLs."""

from __future__ import annotations


def test_in_lists_keep_query_urls_short():
    from urllib.parse import quote

    from include.sfsync.salesforce.soql import IN_LIST_BUDGET
    from include.sfsync.salesforce.soql import in_lists as _in_lists

    emails = [f"o'neil.{i}.{'x' * 60}@example.org" for i in range(600)]
    lists = _in_lists(emails)
    assert len(lists) > 1
    assert all(len(quote(part, safe="")) <= IN_LIST_BUDGET + 200 for part in lists)
    rebuilt = [v for part in lists for v in part.split("','")]
    assert len(rebuilt) == 600 and "o\\'neil.0." in lists[0]


def test_datetime_literals_are_utc():
    from datetime import UTC, datetime, timedelta, timezone

    from include.sfsync.salesforce.soql import quote, where

    paris = datetime(2026, 3, 1, 9, 30, 15, 999, tzinfo=timezone(timedelta(hours=2)))
    assert quote(paris) == "2026-03-01T07:30:15Z"
    assert where("CreatedDate", ">=", paris.astimezone(UTC)) == "CreatedDate >= 2026-03-01T07:30:15Z"
    assert quote(datetime(2026, 3, 1, 9, 30)) == "2026-03-01T09:30:00Z"  # naive: taken as UTC

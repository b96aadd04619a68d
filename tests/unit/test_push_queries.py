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

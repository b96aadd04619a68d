"""The one read loop: every record of a query, through REST pages (queryMore) or, above the
Bulk threshold, a Bulk API 2.0 query job; and the small lookups that share /composite calls."""

from __future__ import annotations

from collections.abc import Iterator

from include.sfsync.errors import RequestLimitExceeded, SalesforceCallError
from include.sfsync.salesforce.client import SalesforceClient, limit_hit, soql_object


def count(client: SalesforceClient, soql: str, *, include_deleted: bool = False) -> int:
    """The ``totalSize`` of a ``SELECT COUNT()`` query."""
    return client.sf.query(soql, include_deleted=include_deleted)["totalSize"]


def counts(client: SalesforceClient, soqls: list[str], *, include_deleted: bool = False
           ) -> list[int]:
    """The ``totalSize`` of several ``SELECT COUNT()`` queries, five per /composite call."""
    results = client.composite([{"url": client.query_url(q, include_deleted=include_deleted)}
                                for q in soqls])
    out = []
    for soql, result in zip(soqls, results, strict=True):
        if result["status"] != 200:
            raise SalesforceCallError(f"count {soql_object(soql)}", result)
        out.append(result["body"]["totalSize"])
    return out


def follow(client: SalesforceClient, page: dict) -> Iterator[dict]:
    """The records of a query page and of every page after it (``attributes`` dropped)."""
    while True:
        for rec in page["records"]:
            rec.pop("attributes", None)
            yield rec
        if page.get("done", True):
            return
        page = client.query_more(page["nextRecordsUrl"])


def records(client: SalesforceClient, sobject: str, soql: str, *, total: int,
            bulk_threshold: int, include_deleted: bool, describe_fields: dict[str, dict],
            bulk_job: str | None = None) -> Iterator[dict]:
    """Every record of ``soql`` (``total`` of them, from :func:`count`): Bulk API 2.0 above
    ``bulk_threshold`` (the job ``bulk_job`` when one was started for it), REST pages below,
    nothing (and no call) when there are none."""
    if total > bulk_threshold:
        yield from client.bulk_query(sobject, soql, include_deleted=include_deleted,
                                     describe_fields=describe_fields, job_id=bulk_job)
    elif total:
        yield from follow(client, client.sf.query(soql, include_deleted=include_deleted))


def query_all(client: SalesforceClient, soqls: list[str]) -> list[list[dict]]:
    """Run small queries five per /composite call; every page of each, in order.
    Salesforce's request limit raises :class:`RequestLimitExceeded`."""
    try:
        results = client.composite([{"url": client.query_url(q, include_deleted=False)}
                                    for q in soqls])
    except Exception as exc:  # simple-salesforce raises one class per HTTP status
        if limit_hit(exc):
            raise RequestLimitExceeded(str(exc)) from exc
        raise
    out = []
    for soql, result in zip(soqls, results, strict=True):
        if result["status"] != 200:
            # the object, never the SOQL's values (e-mail addresses and other personal data)
            raise SalesforceCallError(f"query {soql_object(soql)}", result)
        out.append(list(follow(client, result["body"])))
    return out

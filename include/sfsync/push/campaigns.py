"""The push of campaigns and campaign members.

Campaigns: creates and updates (deleting a campaign row locally does not delete it in
Salesforce). Members: adds, status changes and removals (CampaignMember has no recycle bin, as
in Salesforce); a member's status must be one of its campaign's member statuses; a membership
that already exists in Salesforce is linked, not created twice.
"""

from __future__ import annotations

import sqlalchemy as sa
from more_itertools import chunked

from include.sfsync.context import SyncContext
from include.sfsync.errors import RequestLimitExceeded
from include.sfsync.push.base import Push, apply, create, start
from include.sfsync.salesforce import soql
from include.sfsync.salesforce.reads import query_all
from include.sfsync.salesforce.writes import Outcome
from include.sfsync.store import outbox
from include.sfsync.store.outbox import PENDING, OutboxEntry


def push_campaigns(run_key: str, ctx: SyncContext) -> dict:
    push, entries, rows = start(ctx, run_key, "campaign")
    obj = ctx.catalog.object("Campaign")
    creates, updates, prepared = [], [], {}
    with ctx.engine.begin() as conn:
        for entry in entries:
            row = rows.get(entry.row_id)
            if entry.op == "delete" or row is None:
                outbox.drop_entry(conn, entry)  # campaign deletes stay local
                push.count("Campaign", "skipped")
                continue
            new = not row.sfdc_id
            columns = sorted(push.fields_by_column(obj, create=True)) if new else entry.columns
            try:
                body, rewrite = push.payload(obj, row, columns, entry.base, create=new)
            except ValueError as exc:
                push.fail(conn, entry, "Campaign", Outcome.failed("INVALID_VALUE", str(exc)),
                          sfdc_id=row.sfdc_id, record=None)
                continue
            if not body and not new:
                outbox.drop_entry(conn, entry)
                continue
            (creates if new else updates).append(
                (entry.row_id, body if new else {"Id": row.sfdc_id, **body}))
            prepared[entry.row_id] = (entry, rewrite)
    create(push, "Campaign", creates, prepared, rows)
    apply(push, "Campaign", "PATCH", updates, prepared, rows)
    return push.finish()


def push_campaign_members(run_key: str, ctx: SyncContext, *, person_ids: set[int] | None = None) -> dict:
    """Adds, status changes and removals of campaign members (of ``person_ids`` only, for
    "sync now"). A member's status must be one of its campaign's member statuses."""
    push, entries, rows = start(ctx, run_key, "campaign_member")
    if person_ids is not None:
        entries = [e for e in entries if e.op == "delete" or
                   getattr(rows.get(e.row_id), "person_id", None) in person_ids]
    if not entries:
        return push.finish()
    ctx = push.ctx
    obj = ctx.catalog.object("CampaignMember")
    person = ctx.tables["person"]
    person_rows = {}
    wanted = sorted({r.person_id for r in rows.values() if r.person_id is not None})
    pending_people = set()
    with ctx.engine.connect() as conn:
        for part in chunked(wanted, 500):
            for p in conn.execute(sa.select(person).where(person.c.id.in_(part))):
                person_rows[p.id] = p
        pending_people = set(outbox.outbox_entries(conn, "person", wanted, status=PENDING))

    def who(row) -> tuple[str, str] | None:
        """(LeadId or ContactId, id) of the member's person: a contact if it has one."""
        for source in (person_rows.get(row.person_id), row):
            if source is not None and source.sfdc_contact_id:
                return "ContactId", source.sfdc_contact_id
            if source is not None and source.sfdc_lead_id:
                return "LeadId", source.sfdc_lead_id
        return None

    live = [e for e in entries if e.op == "upsert" and e.row_id in rows]
    try:
        statuses, existing = _member_lookups(push, live, rows, who)
    except RequestLimitExceeded:  # the lookups were refused: all stays queued
        push.stopped = "REQUEST_LIMIT_EXCEEDED"
        return push.finish()
    creates, updates, deletes, prepared = [], [], [], {}
    with ctx.engine.begin() as conn:
        for entry in entries:
            row = rows.get(entry.row_id)
            if entry.op == "delete":
                if entry.sfdc_id:
                    deletes.append((entry.row_id, entry.sfdc_id))
                    prepared[entry.row_id] = (entry, {})
                else:
                    outbox.drop_entry(conn, entry)
                continue
            if row is None:
                outbox.drop_entry(conn, entry)
                continue
            if row.sfdc_is_deleted:
                outbox.drop_entry(conn, entry)  # removed in Salesforce: the pull decided
                push.count("CampaignMember", "skipped")
                continue
            campaign = row.sfdc_campaign_id
            target = who(row)
            status = row._mapping.get("status")
            problem = None
            if not campaign:
                problem = ("REQUIRED_FIELD_MISSING", "sfdc_campaign_id is empty: set it to the "
                           "Salesforce id of the member's campaign", ["CampaignId"])
            elif _looked_up(entry, row) and campaign[:15] not in statuses:
                problem = ("INVALID_CROSS_REFERENCE_KEY", f"campaign {campaign} does not exist "
                           "in Salesforce (deleted, or never created there): set "
                           "sfdc_campaign_id to the Salesforce id of an existing campaign",
                           ["CampaignId"])
            elif target is None:
                if row.person_id in pending_people:
                    push.wait(conn, entry, f"waiting for person {row.person_id} to reach "
                              "Salesforce")
                    continue
                problem = ("REQUIRED_FIELD_MISSING", f"person {row.person_id} is not in "
                           "Salesforce (see its outbox entry and sfsync_error)",
                           ["LeadId", "ContactId"])
            elif status and "status" in entry.columns + (["status"] if not row.sfdc_id else []):
                valid = statuses.get(campaign[:15], [])
                match = next((s for s in valid if s.lower() == status.strip().lower()), None)
                if match is None:
                    problem = ("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                               f"status {status!r} is not a member status of campaign "
                               f"{campaign}; valid: {', '.join(valid) or '(none)'}", ["Status"])
                else:
                    status = match
            if problem:
                push.fail(conn, entry, "CampaignMember", Outcome.failed(*problem),
                          sfdc_id=row.sfdc_id, record={"status": status, "campaign": campaign})
                continue
            rewrite = {"status": status} if status != row._mapping.get("status") else {}
            sfdc_id = row.sfdc_id or existing.get((campaign[:15], target[1][:15]), (None,))[0]
            if not row.sfdc_id and sfdc_id:  # already a member in Salesforce: link
                have = existing[(campaign[:15], target[1][:15])][1]
                t = ctx.tables["campaign_member"]
                twin = conn.execute(sa.select(t.c.id).where(t.c.sfdc_id == sfdc_id)).scalar()
                if twin is not None:  # ... and in this database, as another row
                    push.fail(conn, entry, "CampaignMember", Outcome.failed(
                        "DUPLICATE_VALUE", f"already a member of campaign {campaign}: row "
                        f"{twin} (CampaignMember {sfdc_id}); change that row or delete this one"),
                        sfdc_id=sfdc_id, record={"status": status, "campaign": campaign})
                    continue
                push.write_back(conn, row.id, {"sfdc_id": sfdc_id, **_who_columns(target),
                                               **rewrite})
                outbox.settle_creates(conn, push.table, [row.id])  # a lost create's, maybe
                push.count("CampaignMember", "linked")
                if not status or status == have:
                    outbox.drop_entry(conn, entry)
                    continue
                updates.append((row.id, {"Id": sfdc_id, "Status": status}))
                prepared[row.id] = (entry, {})
                continue
            if not row.sfdc_id:
                body = {"CampaignId": campaign, target[0]: target[1]}
                if status:
                    body["Status"] = status
                creates.append((row.id, body))
                prepared[row.id] = (entry, {**rewrite, **_who_columns(target)})
                continue
            body, _rw = push.payload(obj, row, entry.columns, entry.base, create=False)
            if "Status" in body:
                body["Status"] = status
            if not body:
                outbox.drop_entry(conn, entry)
                continue
            updates.append((row.id, {"Id": row.sfdc_id, **body}))
            prepared[row.id] = (entry, rewrite)
    create(push, "CampaignMember", creates, prepared, rows)
    apply(push, "CampaignMember", "PATCH", updates, prepared, rows)
    apply(push, "CampaignMember", "DELETE", deletes, prepared, rows)
    return push.finish()


def _who_columns(target: tuple[str, str]) -> dict:
    return {"sfdc_contact_id" if target[0] == "ContactId" else "sfdc_lead_id": target[1]}


def _looked_up(entry: OutboxEntry, row) -> bool:
    """Whether :func:`_member_lookups` asks Salesforce about this member's campaign: for a new
    member or a status change."""
    return bool(row.sfdc_campaign_id) and ("status" in entry.columns or not row.sfdc_id)


def _member_lookups(push: Push, entries: list[OutboxEntry], rows: dict, who
                    ) -> tuple[dict[str, list[str]], dict[tuple[str, str], tuple[str, str]]]:
    """The member statuses of the campaigns involved (a campaign that does not exist in
    Salesforce has none, not even an empty list), and the memberships that already exist in
    Salesforce for members created locally (keys: 15-character ids)."""
    campaigns, people = set(), set()
    for entry in entries:
        row = rows[entry.row_id]
        if _looked_up(entry, row):
            campaigns.add(row.sfdc_campaign_id)
            target = who(row)
            if target and not row.sfdc_id:
                people.add(target[1])
    if not campaigns:
        return {}, {}
    campaign_lists = list(soql.in_lists(sorted(campaigns)))
    # the campaigns that exist, in the same /composite call as their statuses
    campaign_queries = [soql.select("Campaign", ["Id"], conditions=[soql.one_of("Id", ids)])
                        for ids in campaign_lists]
    status_queries = [soql.select("CampaignMemberStatus", ["CampaignId", "Label"],
                                  conditions=[soql.one_of("CampaignId", ids)],
                                  order_by=["SortOrder"])
                      for ids in campaign_lists]
    member_queries = [soql.select("CampaignMember", ["Id", "CampaignId", "LeadId", "ContactId",
                                                     "Status"],
                                  conditions=[soql.any_of(soql.one_of("LeadId", ids),
                                                          soql.one_of("ContactId", ids))])
                      for ids in soql.in_lists(sorted(people))]
    results = query_all(push.client, campaign_queries + status_queries + member_queries)
    n = len(campaign_lists)  # one campaign query and one status query per list
    statuses: dict[str, list[str]] = {}
    existing: dict[tuple[str, str], tuple[str, str]] = {}
    for records in results[:n]:
        for rec in records:
            statuses[rec["Id"][:15]] = []
    for records in results[n:2 * n]:
        for rec in records:
            if rec["CampaignId"][:15] in statuses:
                statuses[rec["CampaignId"][:15]].append(rec["Label"])
    for records in results[2 * n:]:
        for rec in records:
            for ref in (rec.get("LeadId"), rec.get("ContactId")):
                if ref:
                    existing[(rec["CampaignId"][:15], ref[:15])] = (rec["Id"], rec["Status"])
    return statuses, existing

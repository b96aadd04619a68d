"""The control plane under ``/__emulator__/`` (not Salesforce): seeding, simulated sales
activity, late commits, merges, conversions, recycle bin, clock, settings, faults, sessions,
counters, schema drift and export of the org's true state.

It is unauthenticated and never counted against the API allowance; it listens on 127.0.0.1 only.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from datetime import timedelta

from . import records as R
from . import values as V
from .errors import ApiError, not_found
from .http import Request, Response, json_response
from .ids import normalize_id
from .schema import COMPOUND_TYPES, TEXT_TYPES, Field
from .storage import index_ddl, quote
from .store import Fault, Org, Settings


def _body(req: Request) -> dict:
    payload = req.json() if req.body else {}
    if not isinstance(payload, dict):
        raise ApiError(400, "INVALID_REQUEST", "expected a JSON object")
    return payload


def info(org: Org, req: Request) -> Response:
    return json_response(200, org.info())


def seed(org: Org, req: Request) -> Response:
    from .seed import parse_spec, seed_org

    body = _body(req)
    try:  # size: demo, empty, a record count, or a profile with an optional ":size"
        profile, size = parse_spec(body.get("size", "demo"))
    except ValueError as exc:
        raise ApiError(400, "INVALID_REQUEST", str(exc)) from None
    counts = seed_org(org, f"{profile}:{size}", rng_seed=int(body.get("seed", 42)))
    return json_response(200, {"counts": counts})


def simulate(org: Org, req: Request) -> Response:
    from .seed import simulate_activity

    body = _body(req)
    allowed = {"creates", "updates", "deletes", "undeletes", "merges", "conversions", "objects",
               "rng_seed"}
    unknown = set(body) - allowed
    if unknown:
        raise ApiError(400, "INVALID_REQUEST", f"unknown keys {sorted(unknown)}; "
                       f"allowed: {sorted(allowed)}")
    return json_response(200, simulate_activity(org, **body))


def records(org: Org, req: Request) -> Response:
    """System-mode writes: create many (POST), update one (PATCH), delete one (DELETE)."""
    body = _body(req)
    stamp = V.parse_datetime(body["stamp"]) if body.get("stamp") else None
    if req.method == "POST":
        sobject = req.params["o"]
        ids = [R.create(org, sobject, rec, system=True, stamp=stamp)
               for rec in body.get("records", [])]
        return json_response(201, {"ids": ids})
    record_id = req.params["id"]
    if req.method == "PATCH":
        R.update(org, None, record_id, body.get("values", {}), system=True, stamp=stamp)
        return json_response(200, {"id": normalize_id(record_id)})
    R.delete(org, record_id, hard=req.query.get("hard", "").lower() == "true", stamp=stamp)
    return json_response(200, {"id": normalize_id(record_id)})


def late_commit(org: Org, req: Request) -> Response:
    """A write whose SystemModstamp lies in the past, as a long-running transaction commits."""
    body = _body(req)
    seconds_ago = int(body.get("seconds_ago", 60))
    stamp = org.now() - timedelta(seconds=seconds_ago)
    values = body.get("values", {})
    if body.get("id"):
        R.update(org, None, body["id"], values, system=True, stamp=stamp)
        record_id = normalize_id(body["id"])
    else:
        record_id = R.create(org, body["sobject"], values, system=True, stamp=stamp)
    return json_response(200, {"id": record_id, "SystemModstamp": V.format_datetime(stamp)})


def undelete(org: Org, req: Request) -> Response:
    ids = _body(req).get("ids", [])
    for record_id in ids:
        R.undelete(org, record_id)
    return json_response(200, {"undeleted": [normalize_id(i) for i in ids]})


def merge(org: Org, req: Request) -> Response:
    body = _body(req)
    R.merge(org, body["sobject"], body["master_id"], body.get("loser_ids", []))
    return json_response(200, {"master": normalize_id(body["master_id"])})


def convert_lead(org: Org, req: Request) -> Response:
    body = _body(req)
    result = R.convert_lead(org, body["lead_id"], account_id=body.get("account_id"),
                            contact_id=body.get("contact_id"),
                            create_opportunity=bool(body.get("create_opportunity")),
                            opportunity_name=body.get("opportunity_name"))
    return json_response(200, result)


def purge(org: Org, req: Request) -> Response:
    """Empty the recycle bin now: the given ids, or every deleted row (``{"all": true}``), or
    only rows past retention (no body)."""
    body = _body(req)
    if body.get("ids") or body.get("all"):
        purged = 0
        with org.tx():
            for obj in org.schema.objects.values():
                if body.get("all"):
                    purged += org.db.execute(f'DELETE FROM {quote(obj.name)} WHERE '
                                             f'"IsDeleted" = 1').rowcount
                else:
                    for record_id in body["ids"]:
                        purged += org.db.execute(
                            f'DELETE FROM {quote(obj.name)} WHERE "Id" = ? AND "IsDeleted" = 1',
                            (normalize_id(record_id),)).rowcount
        return json_response(200, {"purged": purged})
    return json_response(200, {"purged": org.purge_expired(force=True)})


def clock(org: Org, req: Request) -> Response:
    if req.method == "POST":
        body = _body(req)
        to = V.parse_datetime(body["set"]) if body.get("set") else None
        if body.get("set") and to is None:
            raise ApiError(400, "INVALID_REQUEST", f"set: not a datetime: {body['set']!r}")
        org.set_clock(advance_seconds=body.get("advance_seconds"), to=to,
                      frozen=body.get("frozen"))
        org.purge_expired(force=True)
    return json_response(200, {"now": V.format_datetime(org.now()) + "Z",
                               "frozen": org.clock_frozen is not None})


def settings(org: Org, req: Request) -> Response:
    if req.method == "PATCH":
        body = _body(req)
        known = {f.name: f for f in fields(Settings)}
        unknown = set(body) - set(known)
        if unknown:
            raise ApiError(400, "INVALID_REQUEST", f"unknown settings {sorted(unknown)}; known: "
                           f"{sorted(known)}")
        for key, value in body.items():
            expected = type(getattr(org.settings, key))
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ApiError(400, "INVALID_REQUEST", f"setting {key} must be {expected.__name__}")
            setattr(org.settings, key, value)
        if "org_id" in body:  # another org: its Organization row changes with it
            normalize_id(body["org_id"], field="org_id")
            org.db.execute('DELETE FROM "Organization"')
            org.ensure_organization()
        if "sandbox" in body:
            org.ensure_organization()
        org.save_settings()
    return json_response(200, asdict(org.settings))


def faults(org: Org, req: Request) -> Response:
    if req.method == "POST":
        body = _body(req)
        allowed = {"endpoint", "kind", "count", "delay_seconds", "after", "probability", "seed",
                   "creates_only"}
        unknown = set(body) - allowed
        if unknown or "kind" not in body:
            raise ApiError(400, "INVALID_REQUEST", f"a fault needs 'kind' and may have "
                           f"{sorted(allowed)}; unknown: {sorted(unknown)}")
        fault = org.add_fault(Fault(**{"endpoint": "*", **body}))
        return json_response(201, asdict(fault))
    if req.method == "DELETE":
        org.clear_faults()
    return json_response(200, [asdict(f) for f in org.faults])


def expire_sessions(org: Org, req: Request) -> Response:
    return json_response(200, {"expired": org.expire_sessions(_body(req).get("token"))})


def counters(org: Org, req: Request) -> Response:
    if req.method == "DELETE":
        org.calls.clear()
        if req.query.get("usage", "").lower() == "true":
            org.api_used = 0
        org.save_usage()
    return json_response(200, {"calls": dict(sorted(org.calls.items())),
                               # API calls only: logins and refused calls are not billed
                               "total": sum(v for k, v in org.calls.items()
                                            if k != "REQUEST_LIMIT_EXCEEDED"
                                            and not k.startswith("login.")),
                               "api_usage": {"used": org.api_used, "max": org.settings.api_max}})


def export(org: Org, req: Request) -> Response:
    """The org's true state: every row (deleted ones with ``include_deleted=true``), all fields
    the sync user can see (or all fields with ``hidden=true``), in REST JSON value formats."""
    q = req.query
    names = [n for n in (q.get("objects") or "").split(",") if n] or list(org.schema.objects)
    include_deleted = q.get("include_deleted", "").lower() == "true"
    hidden = q.get("hidden", "").lower() == "true"
    out = {}
    for name in names:
        obj = org.schema.get_any(name)
        if obj is None:
            raise ApiError(400, "INVALID_TYPE", f"unknown object {name}")
        # compound fields are views over their components, not stored values
        cols = [f for f in obj.fields.values() if (hidden or f.visible)
                and f.type not in COMPOUND_TYPES]
        where = "" if include_deleted else ' WHERE "IsDeleted" = 0'
        rows = org.db.execute(f'SELECT {", ".join(quote(f.name) for f in cols)} FROM '
                              f'{quote(obj.name)}{where} ORDER BY "Id"').fetchall()
        out[obj.name] = [{f.name: V.to_json(f, v) for f, v in zip(cols, row, strict=True)}
                         for row in rows]
    return json_response(200, out)


def deleted_log(org: Org, req: Request) -> Response:
    rows = org.db.execute("SELECT sobject, id, deleted_date, hard FROM _deleted_log ORDER BY "
                          "deleted_date, id").fetchall()
    return json_response(200, [{"sobject": r[0], "id": r[1], "deletedDate": r[2],
                                "hard": bool(r[3])} for r in rows])


def schema_field(org: Org, req: Request) -> Response:
    """Schema drift: add (POST), change (PATCH: fls/type/length/...) or remove (DELETE) a field."""
    obj = org.schema.get(req.params["o"])
    if obj is None:
        raise not_found()
    if req.method == "POST":
        spec = _body(req)
        known = {f.name for f in fields(Field)}
        unknown = set(spec) - known
        if unknown or not spec.get("name") or not spec.get("type"):
            raise ApiError(400, "INVALID_REQUEST", f"a field needs name and type; unknown keys: "
                           f"{sorted(unknown)}")
        if obj.field(spec["name"], include_hidden=True):
            raise ApiError(400, "DUPLICATE_DEVELOPER_NAME", f"{spec['name']} already exists")
        if spec["type"] in TEXT_TYPES:
            spec.setdefault("length", 255)
        spec.setdefault("custom", spec["name"].endswith("__c"))
        new = Field(**spec)
        existing_cols = {r[1] for r in org.db.execute(f"PRAGMA table_info({quote(obj.name)})")}
        if new.name not in existing_cols:
            org.db.execute(f"ALTER TABLE {quote(obj.name)} ADD COLUMN {quote(new.name)} "
                           f"{new.storage}")
            if new.type == "reference" or new.external_id:
                org.db.execute(index_ddl(obj.name, new.name))
        obj.fields[new.name] = new
    else:
        name = req.params.get("f", "")
        current = obj.field(name, include_hidden=True)
        if current is None:
            raise not_found()
        if req.method == "DELETE":
            del obj.fields[current.name]  # the column stays: Salesforce keeps deleted data 15 days
        else:
            changes = _body(req)
            known = {f.name for f in fields(Field)} - {"name"}
            unknown = set(changes) - known
            if unknown:
                raise ApiError(400, "INVALID_REQUEST", f"unknown field attributes "
                               f"{sorted(unknown)}")
            for key, value in changes.items():
                setattr(current, key, value)
    obj.reindex()
    org.save_schema()
    return json_response(200, org.schema.describe(obj.name, "59.0"))

"""Benchmark the push sync: 10,000 person updates and 1,000 new people, SQLite or PostgreSQL.

    .venv/bin/python scripts/bench_push.py [--records 50000] [--backends sqlite,postgres]
                                           [--updates 10000] [--creates 1000]
                                           [--push-bulk-threshold N]

Starts the emulator as its own process with a generated org of ``--records`` records, then for
each backend, on a fresh marketing database (a SQLite file in the temporary directory, or a
throwaway PostgreSQL database created and dropped on ``--postgres-url``):

1. the initial copy (``pipeline.run_cycle`` on the empty database), then a settling cycle;
2. (a) ``--updates`` person rows get a new title and phone through plain SQL (half leads, half
   contacts), then one incremental cycle: API calls of the push steps (the cycle summary) and
   of the whole cycle (the emulator's ``/counters``, logins excluded), wall time of the push
   steps and of the cycle; every change is checked in the emulator (``/export``);
3. (b) ``--creates`` new people (unique e-mails, last name, company) are inserted with plain
   SQL, then one cycle: the same figures, for the ``create_people`` step above all; every new
   person must have its lead, and the org must hold exactly one lead per new e-mail;
4. after (a) and after (b), an echo cycle (the pull reads our own writes back, so that each
   measured cycle pushes only its own changes), then (c) one more cycle after convergence,
   which should be idle: zero push calls.

The emulator clock moves past the 300 s overlap window before each cycle. Prints a table;
writes nothing outside its temporary directory (the org, the SQLite file, AIRFLOW_HOME).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


sys.path.insert(0, str(ROOT / "scripts"))
from bench_pull import Postgres, bench_org  # noqa: E402  (shared with bench-pull)

POSTGRES_URL = os.environ.get("SFSYNC_BENCH_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/postgres")
SETTLE_SECONDS = 600  # past the 300 s overlap: earlier changes leave the probe's window


def control(method: str, path: str, body: dict | None = None, **params) -> dict:
    resp = requests.request(method, os.environ["SFSYNC_BENCH_CONTROL_URL"] + path, json=body,
                            params=params or None, timeout=600)
    resp.raise_for_status()
    return resp.json()


class Bench:
    """One backend's run: cycles with the emulator's counters reset before each."""

    def __init__(self, backend: str, engine, config):
        from include.sfsync import pipeline

        self.backend, self.engine, self.config = backend, engine, config
        self.pipeline = pipeline
        self.step_seconds: dict[str, float] = {}
        original = pipeline.push

        def timed_push(run_key, step, ctx=None):  # run_cycle looks push up at call time
            t0 = time.perf_counter()
            try:
                return original(run_key, step, ctx)
            finally:
                self.step_seconds[step] = time.perf_counter() - t0

        pipeline.push = timed_push

    def sql(self, statement: str, rows: list[dict] | None = None) -> float:
        import sqlalchemy as sa

        t0 = time.perf_counter()
        with self.engine.begin() as conn:
            conn.execute(sa.text(statement), rows or {})
        return time.perf_counter() - t0

    def query(self, statement: str, **params) -> list:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return conn.execute(sa.text(statement), params).all()

    def cycle(self, label: str) -> dict:
        control("POST", "/clock", {"advance_seconds": SETTLE_SECONDS})
        control("DELETE", "/counters", usage="true")
        self.step_seconds = {}
        t0 = time.perf_counter()
        summary = self.pipeline.run_cycle(f"bench:{self.backend}:{label}", config=self.config,
                                          engine=self.engine)
        seconds = time.perf_counter() - t0
        counters = control("GET", "/counters")
        push = summary["push"]
        return {
            "label": label, "seconds": round(seconds, 2), "api_calls": counters["total"],
            "calls_by_endpoint": {k: v for k, v in counters["calls"].items()
                                  if v and not k.startswith("login.")},
            "push_api_calls": sum(s.get("api_calls", 0) for s in push.values()),
            "push_seconds": round(sum(self.step_seconds.values()), 2),
            "push_steps": {step: {"seconds": round(self.step_seconds.get(step, 0.0), 2),
                                  "api_calls": result.get("api_calls", 0),
                                  "counts": {o: {k: v for k, v in c.items() if v}
                                             for o, c in (result.get("counts") or {}).items()},
                                  "pending": result.get("pending"),
                                  "stopped": result.get("stopped")}
                           for step, result in push.items()}}


def people_to_update(bench: Bench, n: int) -> list[tuple[int, str, str]]:
    """(row id, Salesforce object, record id): half unconverted leads, half contacts."""
    leads = bench.query(
        "SELECT id, sfdc_lead_id FROM person WHERE sfdc_lead_id IS NOT NULL AND "
        "sfdc_contact_id IS NULL AND sfdc_is_deleted = :f ORDER BY id LIMIT :n",
        f=False, n=n - n // 2)
    contacts = bench.query(
        "SELECT id, sfdc_contact_id FROM person WHERE sfdc_contact_id IS NOT NULL AND "
        "sfdc_is_deleted = :f ORDER BY id LIMIT :n", f=False, n=n // 2)
    if len(leads) + len(contacts) < n:
        raise SystemExit(f"the org has only {len(leads)} leads and {len(contacts)} contacts to "
                         f"update; raise --records")
    return [(r[0], "Lead", r[1]) for r in leads] + [(r[0], "Contact", r[1]) for r in contacts]


def verify_updates(targets: list[tuple[int, str, str]]) -> int:
    """How many of the updated records hold the new title and phone in the org."""
    truth = control("GET", "/export", objects="Lead,Contact")
    records = {(name, r["Id"]): r for name in ("Lead", "Contact") for r in truth[name]}
    ok = 0
    for row_id, sobject, sf_id in targets:
        rec = records.get((sobject, sf_id)) or {}
        ok += (rec.get("Title"), rec.get("Phone")) == (f"Bench title {row_id}",
                                                        f"+1 555 {row_id:07d}")
    return ok


def bench_backend(backend: str, tmp: Path, args) -> dict:
    from include.sfsync.config import load_config
    from include.sfsync.store.engine import engine_for

    scope = None
    if backend == "sqlite":
        conn = {"conn_type": "sqlite", "host": str(tmp / f"marketing-{uuid.uuid4().hex[:6]}.db")}
    else:
        scope = Postgres(args.postgres_url)
        conn = scope.__enter__()
    from include.salesforce_emulator.demo import demo_sync_settings

    overrides: dict = {**demo_sync_settings(), "bulk_poll_seconds": 0}
    if args.push_bulk_threshold:
        overrides["push"] = {"bulk_threshold": args.push_bulk_threshold}
    try:
        os.environ["AIRFLOW_CONN_MARKETING_DB"] = json.dumps(conn)
        engine = engine_for("marketing_db")
        bench = Bench(backend, engine, load_config(overrides=overrides))
        out: dict = {"push_bulk_threshold": bench.config.push.bulk_threshold}
        print(f"\n== {backend}: initial copy", flush=True)
        out["initial"] = bench.cycle("initial")
        out["settle"] = bench.cycle("settle")

        print(f"== {backend}: (a) {args.updates:,} person updates", flush=True)
        targets = people_to_update(bench, args.updates)
        ids = [t[0] for t in targets]
        seconds = 0.0
        for i in range(0, len(ids), 1000):  # plain SQL, as any client would write
            chunk = ",".join(map(str, ids[i:i + 1000]))
            seconds += bench.sql(
                f"UPDATE person SET title = 'Bench title ' || CAST(id AS TEXT), phone = "
                f"'+1 555 ' || SUBSTR('0000000' || CAST(id AS TEXT), -7, 7) "
                f"WHERE id IN ({chunk})" if backend == "sqlite" else
                f"UPDATE person SET title = 'Bench title ' || id::text, "
                f"phone = '+1 555 ' || lpad(id::text, 7, '0') WHERE id IN ({chunk})")
        out["updates"] = bench.cycle("updates")
        out["updates"]["sql_seconds"] = round(seconds, 2)
        out["updates"]["verified"] = verify_updates(targets)
        out["updates"]["expected"] = len(targets)
        out["echo_updates"] = bench.cycle("echo-updates")

        print(f"== {backend}: (b) {args.creates:,} new people", flush=True)
        tag = uuid.uuid4().hex[:8]
        emails = [f"bench.new.{tag}.{i}@example.net" for i in range(args.creates)]
        seconds = bench.sql("INSERT INTO person (email, first_name, last_name, company, "
                            "sync_to_salesforce) VALUES (:email, 'Bench', :last, :company, true)",
                            [{"email": e, "last": f"New{i:05d}", "company": f"Bench Co {i % 97}"}
                             for i, e in enumerate(emails)])
        out["creates"] = bench.cycle("creates")
        out["creates"]["sql_seconds"] = round(seconds, 2)
        linked = bench.query("SELECT count(*) FROM person WHERE email LIKE :p AND "
                             "sfdc_lead_id IS NOT NULL", p=f"bench.new.{tag}.%")[0][0]
        in_org = [r for r in control("GET", "/export", objects="Lead")["Lead"]
                  if (r.get("Email") or "").startswith(f"bench.new.{tag}.")]
        out["creates"]["verified"] = min(linked, len({r["Email"] for r in in_org}))
        out["creates"]["expected"] = len(emails)
        out["creates"]["leads_in_org"] = len(in_org)

        print(f"== {backend}: (c) echo and idle cycles", flush=True)
        out["echo_creates"] = bench.cycle("echo-creates")
        out["idle"] = bench.cycle("idle")
        out["outbox_left"] = bench.query("SELECT count(*) FROM sfsync_outbox")[0][0]
        engine.dispose()
        return out
    finally:
        if scope is not None:
            scope.__exit__(None, None, None)


def _step_note(cycle: dict, step: str) -> str:
    s = cycle["push_steps"].get(step) or {}
    counts = "; ".join(f"{o} " + ", ".join(f"{v:,} {k}" for k, v in c.items())
                       for o, c in s.get("counts", {}).items() if c)
    return counts or "nothing to do"


def print_report(results: dict) -> None:
    print()
    print(f"push sync benchmark: org of {results['org_records']:,} records "
          f"(seed + start {results['seed_and_start_s']} s)")
    print(f"  {results['command']}")
    for backend, r in results["backends"].items():
        print()
        print(f"  {backend} (push.bulk_threshold {r['push_bulk_threshold']:,})")
        print(f"  {'':<34}{'wall':>9}{'API calls':>11}   notes")

        def line(label: str, seconds: float | None, calls, note: str = "") -> None:
            wall = f"{seconds:>8.2f}s" if seconds is not None else f"{'':>9}"
            calls = f"{calls:>11,}" if calls is not None else f"{'':>11}"
            print(f"  {label:<34}{wall}{calls}   {note}")

        line("initial copy (cycle)", r["initial"]["seconds"], r["initial"]["api_calls"])
        line("settling cycle", r["settle"]["seconds"], r["settle"]["api_calls"])
        u, c = r["updates"], r["creates"]
        line(f"(a) {u['expected']:,} person updates: SQL", u["sql_seconds"], None)
        line("    whole cycle", u["seconds"], u["api_calls"])
        line("    push steps", u["push_seconds"], u["push_api_calls"],
             "people step: " + _step_note(u, "people"))
        people = u["push_steps"]["people"]
        line("      of which 'people'", people["seconds"], people["api_calls"],
             "Bulk ingest calls: " + (", ".join(f"{k.split('.')[-1]} {v}" for k, v in
                                                u["calls_by_endpoint"].items()
                                                if k.startswith("bulk2.ingest")) or "none"))
        line("    in Salesforce", None, None, f"{u['verified']:,} / {u['expected']:,} records "
             "hold the new title and phone")
        echo(line, r["echo_updates"], "(a)")
        line(f"(b) {c['expected']:,} new people: SQL", c["sql_seconds"], None)
        line("    whole cycle", c["seconds"], c["api_calls"])
        line("    push steps", c["push_seconds"], c["push_api_calls"])
        cp = c["push_steps"]["create_people"]
        line("      of which 'create_people'", cp["seconds"], cp["api_calls"],
             _step_note(c, "create_people"))
        line("    in Salesforce", None, None, f"{c['verified']:,} / {c['expected']:,} people "
             f"linked to a new lead ({c['leads_in_org']:,} leads with their e-mails)")
        echo(line, r["echo_creates"], "(b)")
        i = r["idle"]
        line("(c) cycle after convergence", i["seconds"], i["api_calls"],
             f"push calls {i['push_api_calls']}; outbox rows left {r['outbox_left']}")


def echo(line, cycle: dict, what: str) -> None:
    line(f"echo cycle after {what}", cycle["seconds"], cycle["api_calls"],
         f"the pull reads our writes back; push calls {cycle['push_api_calls']}")

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--backends", default="sqlite",
                        type=lambda s: [b.strip() for b in s.split(",") if b.strip()])
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--creates", type=int, default=1_000)
    parser.add_argument("--push-bulk-threshold", type=int, default=None,
                        help="override push.bulk_threshold (default: the configured 2,000)")
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()
    unknown = set(args.backends) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"--backends: unknown {sorted(unknown)}; choose from sqlite, postgres")
    logging.basicConfig(level=logging.WARNING, format="  %(asctime)s %(message)s",
                        datefmt="%H:%M:%S")

    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp_name:
        tmp = Path(tmp_name)
        # Airflow writes airflow.cfg into AIRFLOW_HOME on import: keep it in the temp dir
        os.environ["AIRFLOW_HOME"] = str(tmp / "airflow")
        os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        with bench_org(tmp, args.records, "bench_push.py") as (_emu, results):
            for backend in args.backends:
                if backend != args.backends[0]:  # a fresh org: the first backend changed it
                    control("POST", "/seed", {"size": args.records})
                results["backends"][backend] = bench_backend(backend, tmp, args)
    print_report(results)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Benchmark the pull sync: initial copy and incremental cycles, on SQLite and PostgreSQL.

    .venv/bin/python scripts/bench_pull.py [--records 200000,1000000] [--backends sqlite,postgres]
                                           [--changes 0,1000,10000] [--profile]
                                           [--org demo|standard|mature]

For each size in ``--records`` (default: 200,000, then 1,000,000), starts the emulator as its
own process with a generated org of that many records (shaped
like ``--org``, an emulator profile: the demo org with its custom objects and settings, or a
standard / mature org synced with the default settings), then for
each backend, on a fresh marketing database (a SQLite file, or a throwaway PostgreSQL database
created and dropped on ``--postgres-url``):

1. the initial copy (the ``salesforce_initial_sync`` DAG's steps, in-process): wall time,
   records/s, API calls per 1,000 records (the emulator's ``/counters`` total, logins excluded),
   the peak RSS of the process that ran it (a fresh child process per backend, so the peak is
   that backend's) and the emulator's peak RSS during the copy (``VmHWM``, reset through
   ``/proc/PID/clear_refs``);
2. incremental cycles (``pipeline.run_cycle``) after ``--changes`` simulated changes each
   (updates mostly, 2% creates, 1% deletes, through the emulator's ``/simulate``): API calls and
   wall time per cycle. A settling cycle runs first, and the emulator clock moves past the
   overlap window before each cycle and past the probe's minute boundary after the changes, so
   the 0-change cycle measures a truly idle cycle.

After each copy, the same machine's limits for the same rows, measured in the same run (the
machine is shared and noisy: compare ratios, not rates, across runs): the emulator's Bulk CSV
serving rate (every copied object's query as one Bulk 2.0 job, its pages downloaded and
nothing else), SQLite ``executemany`` of the copied rows as tuples into empty tables of the
same definition, PostgreSQL ``COPY`` of the same rows likewise. The last line,
``copy/serving: sqlite=0.NN postgres=0.NN``, is each copy's rate over its serving rate (the
lower of the org sizes', each size's own ratios printed above it).

``--profile`` runs the copy under cProfile (slower) and writes ``.bench/pull-copy-BACKEND.prof``
and a text summary beside it. Prints a table per org size and writes ``.bench/pull.json``
(``.bench/pull-RECORDS.json`` per size).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from include.salesforce_emulator.demo import demo_sync_settings  # noqa: E402
from include.salesforce_emulator.process import start_emulator  # noqa: E402

OUT = ROOT / ".bench"
RUN_KEY = "bench:initial"
POSTGRES_URL = os.environ.get("SFSYNC_BENCH_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/postgres")
SETTLE_SECONDS = 600  # past the 300 s overlap: earlier changes leave the probe's window
COMMIT_SECONDS = 120  # past the minute the changes were stamped in: latestDateCovered holds them


# --- helpers shared by the parent and the workers ------------------------------------------------

def bench_settings() -> dict:
    """The sync settings for the org profile benchmarked (``--org``): the demo org's own, else
    the defaults, as a new user's."""
    org = os.environ.get("SFSYNC_BENCH_ORG", "demo")
    return {**(demo_sync_settings() if org == "demo" else {}), "bulk_poll_seconds": 0}


def control(method: str, path: str, body: dict | None = None, **params) -> dict:
    resp = requests.request(method, os.environ["SFSYNC_BENCH_CONTROL_URL"] + path, json=body,
                            params=params or None, timeout=600)
    resp.raise_for_status()
    return resp.json()


def reset_counters() -> None:
    control("DELETE", "/counters", usage="true")  # usage too: the daily allowance never runs out


def api_calls() -> dict:
    return control("GET", "/counters")


def peak_rss_mb() -> float:
    """This process's RSS high-water mark (Linux reports kilobytes)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def mb(n: float) -> str:
    return f"{n:,.0f} MB"


# --- workers (fresh child processes) -------------------------------------------------------------

def worker_copy(result_path: Path, backend: str, profile: bool) -> None:
    import sqlalchemy as sa

    from include.sfsync import pipeline
    from include.sfsync.config import load_config
    from include.sfsync.context import open_context
    from include.sfsync.objects import object_names

    config = load_config(overrides=bench_settings())
    warm_imports()  # a task's process has Airflow loaded before its step starts
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    objects = pipeline.prepare_copy(RUN_KEY, object_names(config.custom_objects), config=config)
    ctx = open_context(config)
    per_object = {}
    for name in objects:
        t0 = time.perf_counter()
        pipeline.copy_object(RUN_KEY, name, None, None, ctx)
        per_object[name] = round(time.perf_counter() - t0, 2)
    summary = pipeline.finish_copy(RUN_KEY, objects, ctx)
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    window_t = ctx.books["copy_window"]
    with ctx.engine.connect() as conn:
        read = {r.sf_object: r.copied for r in conn.execute(
            sa.select(window_t.c.sf_object, window_t.c.copied))}
    if profiler:
        _write_profile(profiler, OUT / f"pull-copy-{backend}")
    result_path.write_text(json.dumps({
        "seconds": round(seconds, 2), "records_read": sum(read.values()),
        "records_read_per_object": read, "seconds_per_object": per_object,
        "sync_api_calls": summary["api_calls"], "counts": summary["counts"],
        "cursor_started": summary["cursor_started"], "peak_rss_mb": peak_rss_mb(),
        "profiled": profile}))


def warm_imports() -> None:
    """What an Airflow task's process has imported before the step runs (the hooks, the
    configuration with its secrets masked): not part of the copy's time."""
    from airflow.configuration import conf  # noqa: F401
    from airflow.providers.salesforce.hooks.salesforce import SalesforceHook  # noqa: F401
    from airflow.sdk import BaseHook  # noqa: F401


def worker_serving(result_path: Path, backend: str) -> None:
    """The emulator's Bulk CSV serving rate for the rows the copy read: each copied object's
    copy query as one Bulk 2.0 queryAll job, every page downloaded (50,000 records each, as
    the copy's), nothing parsed or stored."""
    from include.sfsync.config import load_config
    from include.sfsync.context import open_context
    from include.sfsync.objects import object_names
    from include.sfsync.pull.extract import changes_soql

    config = load_config(overrides=bench_settings())
    ctx = open_context(config)
    client = ctx.salesforce()
    queries = [(name, changes_soql(ctx.catalog.object(name), None,
                                   live_only="IsDeleted" in ctx.catalog.object(name).describe_fields))
               for name in object_names(config.custom_objects) if name in ctx.catalog.objects]
    records, started = 0, time.perf_counter()
    for name, query in queries:
        for _page in getattr(client.sf.bulk2, name).query_all(query, max_records=50_000,
                                                               wait=0):
            records += int(client.session.page_records or 0)
    seconds = time.perf_counter() - started
    result_path.write_text(json.dumps({"records": records, "seconds": round(seconds, 2),
                                       "records_per_s": round(records / seconds)}))


def worker_limits(result_path: Path, backend: str) -> None:
    """The database's own rate for the copied rows: SQLite ``executemany`` of tuples, or
    PostgreSQL ``COPY``, into empty tables of the same definition (indexes too, no triggers);
    only the writes are timed."""
    conn = json.loads(os.environ["AIRFLOW_CONN_MARKETING_DB"])
    out = _limit_sqlite(Path(conn["host"])) if backend == "sqlite" else _limit_postgres(conn)
    out["rows_per_s"] = round(out["rows"] / out["seconds"]) if out["seconds"] else None
    result_path.write_text(json.dumps(out))


def _synced_tables(names) -> list[str]:
    return sorted(n for n in names if not n.startswith(("sfsync_", "sqlite_"))
                  and n != "marketing_activity")


def _limit_sqlite(source: Path) -> dict:
    import sqlite3

    target = source.with_name("limits.db")
    target.unlink(missing_ok=True)
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target, isolation_level=None)
    dst.execute("PRAGMA journal_mode=WAL")  # as the sync's engine has it
    dst.execute("PRAGMA synchronous=NORMAL")
    tables = _synced_tables(n for (n,) in src.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'"))
    rows = seconds = 0
    for table in tables:
        for (sql,) in src.execute("SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN "
                                  "('table', 'index') AND sql IS NOT NULL ORDER BY type DESC",
                                  (table,)):
            dst.execute(sql)
        cols = [r[1] for r in src.execute(f'PRAGMA table_info("{table}")') if r[1] != "id"]
        names = ", ".join(f'"{c}"' for c in cols)
        insert = f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" for _ in cols)})'
        cursor = src.execute(f'SELECT {names} FROM "{table}" ORDER BY id')
        while batch := cursor.fetchmany(2000):  # the copy's chunk
            t0 = time.perf_counter()
            dst.execute("BEGIN IMMEDIATE")
            dst.executemany(insert, batch)
            dst.execute("COMMIT")
            seconds += time.perf_counter() - t0
            rows += len(batch)
    dst.close()
    target.unlink(missing_ok=True)
    return {"method": "executemany", "rows": rows, "seconds": round(seconds, 2)}


def _limit_postgres(conn: dict) -> dict:
    import psycopg
    from psycopg import sql

    url = (f"postgresql://{conn['login']}:{conn.get('password') or ''}@{conn['host']}:"
           f"{conn['port']}/{conn['schema']}")
    rows = seconds = 0
    with psycopg.connect(url, autocommit=True) as pg, tempfile.TemporaryFile() as dump:
        tables = _synced_tables(r[0] for r in pg.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
        pg.execute("CREATE SCHEMA sfsync_limits")
        for table in tables:
            name = sql.Identifier(table)
            target = sql.Identifier("sfsync_limits", table)
            cols = [r[0] for r in pg.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                "'public' AND table_name = %s AND column_name <> 'id' ORDER BY ordinal_position",
                (table,))]
            names = sql.SQL(", ").join(map(sql.Identifier, cols))
            pg.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(target, name))
            dump.seek(0)
            dump.truncate()
            with pg.cursor().copy(sql.SQL("COPY (SELECT {} FROM {} ORDER BY id) TO STDOUT")
                                  .format(names, name)) as out:
                for block in out:
                    dump.write(block)
            dump.seek(0)
            t0 = time.perf_counter()
            with pg.transaction(), pg.cursor().copy(
                    sql.SQL("COPY {} ({}) FROM STDIN").format(target, names)) as into:
                while block := dump.read(1 << 20):
                    into.write(block)
            seconds += time.perf_counter() - t0
            rows += pg.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()[0]
        pg.execute("DROP SCHEMA sfsync_limits CASCADE")
    return {"method": "COPY", "rows": rows, "seconds": round(seconds, 2)}


def _write_profile(profiler, stem: Path) -> None:
    import io
    import pstats

    profiler.dump_stats(str(stem) + ".prof")
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(60)
    (Path(str(stem) + ".txt")).write_text(text.getvalue())


def worker_cycles(result_path: Path, backend: str, changes: list[int]) -> None:
    from include.sfsync import pipeline
    from include.sfsync.config import load_config

    config = load_config(overrides=bench_settings())

    def cycle(label: str, n: int | None, advance: int = SETTLE_SECONDS) -> dict:
        control("POST", "/clock", {"advance_seconds": advance})
        touched = {}
        if n:
            creates, deletes = n // 50, n // 100
            made = control("POST", "/simulate", {"updates": n - creates - deletes,
                                                 "creates": creates, "deletes": deletes,
                                                 "rng_seed": n})
            touched = {k: sum(len(v) for v in made[k].values()) for k in
                       ("created", "updated", "deleted")}
            touched["distinct_updated"] = sum(len(set(v)) for v in made["updated"].values())
            control("POST", "/clock", {"advance_seconds": COMMIT_SECONDS})
        reset_counters()
        t0 = time.perf_counter()
        result = pipeline.run_cycle(f"bench:{backend}:{label}", config=config)
        seconds = time.perf_counter() - t0
        counters = api_calls()
        totals = {k: sum(c[k] for c in result["counts"].values())
                  for k in ("new", "updated", "deleted", "skipped")}
        busy = sorted(name for name, c in result["counts"].items() if any(c.values()))
        return {"label": label, "changes": n, "seconds": round(seconds, 2),
                "api_calls": counters["total"], "sync_api_calls": result["api_calls"],
                "calls_by_endpoint": counters["calls"], "simulated": touched,
                "loaded": totals, "objects_with_changes": busy}

    out = {"settle": cycle("settle", None), "cycles": []}
    for n in changes:
        out["cycles"].append(cycle(f"{n}-changes", n))
        if n == 1000:  # the next cycles, the changes still inside the overlap window: 2 calls
            out["after_1000"] = [out["cycles"][-1], cycle("1000-changes +60s", None, 60),
                                 cycle("1000-changes +120s", None, 60)]
    out["peak_rss_mb"] = peak_rss_mb()
    result_path.write_text(json.dumps(out))


# --- the parent ----------------------------------------------------------------------------------

def emulator_peak_reset(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak RSS (VmHWM)
        return True
    except OSError:
        return False


def emulator_peak_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def run_worker(kind: str, backend: str, tmp: Path, extra: list[str]) -> dict:
    result = tmp / f"{kind}-{backend}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--backend", backend,
           "--result", str(result), *extra]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return json.loads(result.read_text())


@contextmanager
def bench_org(tmp: Path, records: int, script: str, org: str = "demo"):
    """An emulator process with a seeded ``org`` (profile) of ``records``, the environment
    pointing at it; yields (emulator, results dict to fill)."""
    print(f"Seeding a {org} org of {records:,} records ...", flush=True)
    started = time.perf_counter()
    os.environ["SFSYNC_BENCH_ORG"] = org  # the workers' settings follow the profile
    with start_emulator(data_dir=tmp / "org", seed=f"{org}:{records}", timeout=600) as emu:
        info = emu.info
        results = {"org_records": records, "org_profile": org,
                   "seed_and_start_s": round(time.perf_counter() - started, 1),
                   "command": " ".join([f".venv/bin/python scripts/{script}", *sys.argv[1:]]),
                   "backends": {}}
        # requests lets an inherited REQUESTS_CA_BUNDLE override session.verify: set it
        os.environ["REQUESTS_CA_BUNDLE"] = info["ca_bundle"]
        os.environ["SFSYNC_BENCH_CONTROL_URL"] = info["control_url"]
        os.environ["AIRFLOW_CONN_SALESFORCE_DEFAULT"] = json.dumps({
            "conn_type": "salesforce", "login": info["username"], "password": info["password"],
            "extra": {"security_token": info["security_token"], "domain": info["login_domain"],
                      "version": "59.0"}})
        yield emu, results


class Postgres:
    """A throwaway database on the server at ``POSTGRES_URL``."""

    def __init__(self, admin_url: str):
        import psycopg

        self.admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
        self.parts = urlsplit(admin_url)
        self.name = f"sfsync_bench_{uuid.uuid4().hex[:12]}"

    def __enter__(self) -> dict:
        from psycopg import sql

        self.admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        return {"conn_type": "postgres", "host": self.parts.hostname or "127.0.0.1",
                "port": self.parts.port or 5432, "login": self.parts.username or "postgres",
                "password": self.parts.password or "", "schema": self.name}

    def __exit__(self, *exc) -> None:
        from psycopg import sql

        self.admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(self.name)))
        self.admin.close()


def bench_backend(backend: str, tmp: Path, emu, args) -> dict:
    if backend == "sqlite":
        database = tmp / "marketing.db"
        conn = {"conn_type": "sqlite", "host": str(database)}
        scope = None
    else:
        scope = Postgres(args.postgres_url)
        conn = scope.__enter__()
    try:
        os.environ["AIRFLOW_CONN_MARKETING_DB"] = json.dumps(conn)
        print(f"\n== {backend}: initial copy of the org", flush=True)
        reset_counters()
        tracked = emulator_peak_reset(emu.pid)
        copy = run_worker("copy", backend, tmp, ["--profile"] if args.profile else [])
        counters = api_calls()
        copy["api_calls"] = counters["total"]
        copy["calls_by_endpoint"] = counters["calls"]
        copy["records_per_s"] = round(copy["records_read"] / copy["seconds"])
        copy["api_calls_per_1000_records"] = round(
            1000 * copy["api_calls"] / max(copy["records_read"], 1), 3)
        copy["emulator_peak_rss_mb"] = emulator_peak_mb(emu.pid) if tracked else None
        print(f"== {backend}: the machine's limits for the same rows", flush=True)
        limits = {"serving": run_worker("serving", backend, tmp, []),
                  "database": run_worker("limits", backend, tmp, [])}
        copy["copy_over_serving"] = round(
            copy["records_per_s"] / limits["serving"]["records_per_s"], 2)
        print(f"== {backend}: incremental cycles", flush=True)
        cycles = run_worker("cycles", backend, tmp,
                            ["--changes", ",".join(map(str, args.changes))])
        return {"initial_copy": copy, "limits": limits, **cycles}
    finally:
        if scope is not None:
            scope.__exit__(None, None, None)


def print_report(results: dict) -> None:
    print()
    print(f"pull sync benchmark: org of {results['org_records']:,} records "
          f"(seed + start {results['seed_and_start_s']} s)")
    print()
    print(f"  {'initial copy':<14}{'wall':>10}{'records':>12}{'records/s':>11}"
          f"{'API calls':>11}{'/1k rec':>9}{'peak RSS':>11}{'emulator':>11}")
    for backend, r in results["backends"].items():
        c = r["initial_copy"]
        emu = mb(c["emulator_peak_rss_mb"]) if c.get("emulator_peak_rss_mb") else "-"
        note = " (cProfile on)" if c.get("profiled") else ""
        print(f"  {backend:<14}{c['seconds']:>9.1f}s{c['records_read']:>12,}"
              f"{c['records_per_s']:>11,}{c['api_calls']:>11,}"
              f"{c['api_calls_per_1000_records']:>9.3f}{mb(c['peak_rss_mb']):>11}{emu:>11}{note}")
    print()
    print(f"  {'cycle':<24}{'wall':>9}{'API calls':>11}   loaded new / updated / deleted")
    for backend, r in results["backends"].items():
        for cyc in [r["settle"], *r["cycles"]]:
            loaded = cyc["loaded"]
            print(f"  {backend + ' ' + cyc['label']:<24}{cyc['seconds']:>8.2f}s"
                  f"{cyc['api_calls']:>11,}   {loaded['new']:,} / {loaded['updated']:,} / "
                  f"{loaded['deleted']:,}")
        print(f"  {backend + ' peak RSS':<24}{mb(r['peak_rss_mb']):>9}  (the cycles' process)")
    for backend, r in results["backends"].items():
        if r.get("after_1000"):
            print(f"  {backend}: API calls of the three cycles (1,000 changes, then nothing new "
                  f"+60 s and +120 s, inside the overlap window): "
                  + " / ".join(str(c["api_calls"]) for c in r["after_1000"]))
    print()
    print("  the same rows, same run: the emulator's Bulk CSV serving, the database's own write")
    for backend, r in results["backends"].items():
        limits, c = r["limits"], r["initial_copy"]
        db = limits["database"]
        print(f"  {backend:<10} serving {limits['serving']['records_per_s']:>8,} records/s   "
              f"{db['method']:<11} {db['rows_per_s']:>8,} rows/s   copy {c['records_per_s']:>8,}"
              f" records/s = {c['copy_over_serving']:.2f} of serving")
    ratios = " ".join(f"{b}={r['initial_copy']['copy_over_serving']:.2f}"
                      for b, r in results["backends"].items())
    print(f"  copy/serving at {results['org_records']:,} records: {ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="200000,1000000",
                        type=lambda s: [int(n) for n in s.split(",") if n.strip()],
                        help="org sizes, one org each (default 200000,1000000)")
    parser.add_argument("--backends", default="sqlite,postgres",
                        type=lambda s: [b.strip() for b in s.split(",") if b.strip()])
    parser.add_argument("--changes", default="0,1000,10000",
                        type=lambda s: [int(n) for n in s.split(",") if n.strip()])
    parser.add_argument("--profile", action="store_true",
                        help="run the initial copy under cProfile (slower; .bench/pull-copy-*)")
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--org", default="demo", choices=["demo", "standard", "mature"],
                        help="the emulator org profile (default demo)")
    parser.add_argument("--worker", choices=["copy", "cycles", "serving", "limits"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    if args.worker:
        logging.basicConfig(level=logging.INFO, format="  %(asctime)s %(message)s",
                            datefmt="%H:%M:%S")
        logging.getLogger("include.sfsync.initial").setLevel(logging.INFO)
        if args.worker == "copy":
            worker_copy(args.result, args.backend, args.profile)
        elif args.worker == "serving":
            worker_serving(args.result, args.backend)
        elif args.worker == "limits":
            worker_limits(args.result, args.backend)
        else:
            worker_cycles(args.result, args.backend, args.changes)
        return
    unknown = set(args.backends) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"--backends: unknown {sorted(unknown)}; choose from sqlite, postgres")

    # Airflow writes airflow.cfg into AIRFLOW_HOME on import; keep it inside the project.
    os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                             os.environ.get("PYTHONPATH")]))
    runs = []
    for records in args.records:
        with tempfile.TemporaryDirectory(prefix="bench-pull-") as tmp_name:
            tmp = Path(tmp_name)
            with bench_org(tmp, records, "bench_pull.py", args.org) as (emu, results):
                for backend in args.backends:
                    try:
                        results["backends"][backend] = bench_backend(backend, tmp, emu, args)
                    except ImportError as exc:
                        print(f"skipping {backend}: {exc}", file=sys.stderr)
                    except Exception as exc:  # PostgreSQL unreachable: keep SQLite's figures
                        if backend != "postgres" or "connect" not in str(exc).lower():
                            raise
                        print(f"skipping postgres: {exc}", file=sys.stderr)
        (OUT / f"pull-{records}.json").write_text(json.dumps(results, indent=2))
        runs.append(results)
    (OUT / "pull.json").write_text(json.dumps(runs, indent=2))
    for results in runs:
        print_report(results)
    print()
    print(f"written to {OUT / 'pull.json'}")
    worst = {}
    for results in runs:
        for backend, r in results["backends"].items():
            ratio = r["initial_copy"]["copy_over_serving"]
            worst[backend] = min(worst.get(backend, ratio), ratio)
    print("copy/serving: " + " ".join(f"{b}={v:.2f}" for b, v in worst.items()))


if __name__ == "__main__":
    main()

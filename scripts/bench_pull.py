"""Benchmark the pull sync: initial copy and incremental cycles, on SQLite and PostgreSQL.

    .venv/bin/python scripts/bench_pull.py [--records 1000000] [--backends sqlite,postgres]
                                           [--changes 0,1000,10000] [--profile]
                                           [--org demo|standard|mature]

Starts the emulator as its own process with a generated org of ``--records`` records (shaped
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

``--profile`` runs the copy under cProfile (slower) and writes ``.bench/pull-copy-BACKEND.prof``
and a text summary beside it. Prints a table and writes ``.bench/pull.json``.
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

    def cycle(label: str, n: int | None) -> dict:
        control("POST", "/clock", {"advance_seconds": SETTLE_SECONDS})
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
        print(f"== {backend}: incremental cycles", flush=True)
        cycles = run_worker("cycles", backend, tmp,
                            ["--changes", ",".join(map(str, args.changes))])
        return {"initial_copy": copy, **cycles}
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
    print()
    print(f"written to {OUT / 'pull.json'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgres",
                        type=lambda s: [b.strip() for b in s.split(",") if b.strip()])
    parser.add_argument("--changes", default="0,1000,10000",
                        type=lambda s: [int(n) for n in s.split(",") if n.strip()])
    parser.add_argument("--profile", action="store_true",
                        help="run the initial copy under cProfile (slower; .bench/pull-copy-*)")
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--org", default="demo", choices=["demo", "standard", "mature"],
                        help="the emulator org profile (default demo)")
    parser.add_argument("--worker", choices=["copy", "cycles"], help=argparse.SUPPRESS)
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
    with tempfile.TemporaryDirectory(prefix="bench-pull-") as tmp_name:
        tmp = Path(tmp_name)
        with bench_org(tmp, args.records, "bench_pull.py", args.org) as (emu, results):
            for backend in args.backends:
                try:
                    results["backends"][backend] = bench_backend(backend, tmp, emu, args)
                except ImportError as exc:
                    print(f"skipping {backend}: {exc}", file=sys.stderr)
                except Exception as exc:  # PostgreSQL unreachable: keep the SQLite figures
                    if backend != "postgres" or "connect" not in str(exc).lower():
                        raise
                    print(f"skipping postgres: {exc}", file=sys.stderr)
    (OUT / "pull.json").write_text(json.dumps(results, indent=2))
    print_report(results)


if __name__ == "__main__":
    main()

"""Benchmark the Salesforce emulator: seeding, REST query pages and Bulk 2.0 CSV pages.

    .venv/bin/python scripts/bench_emulator.py [--records 1000000] [--object Lead]

Starts the emulator as its own process (so client and server do not share a GIL), seeds a fresh
org of ``--records`` records, then reads every row of ``--object`` three ways:
raw REST pages (requests + JSON decode, 2,000 per page), simple-salesforce ``query_all_iter``,
and Bulk API 2.0 CSV pages (50,000 per page). Prints records/s and writes
``.bench/emulator.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from include.salesforce_emulator.process import start_emulator  # noqa: E402

FIELDS = ("Id, FirstName, LastName, Email, Company, Title, Phone, City, State, Country, Status, "
          "LeadSource, Industry, OwnerId, IsConverted, CreatedDate, SystemModstamp")


def _token(info: dict, session: requests.Session) -> str:
    resp = session.post(info["instance_url"] + "/services/oauth2/token", data={
        "grant_type": "password", "client_id": info["consumer_key"],
        "client_secret": info["consumer_secret"], "username": info["username"],
        "password": info["password"] + info["security_token"]}, timeout=30)
    resp.raise_for_status()
    return resp.json()["access_token"]


def bench_rest(info: dict, sobject: str) -> dict:
    session = requests.Session()
    session.verify = info["ca_bundle"]
    session.headers["Authorization"] = "Bearer " + _token(info, session)
    base = info["instance_url"]
    started = time.perf_counter()
    resp = session.get(base + "/services/data/v59.0/query/",
                       params={"q": f"SELECT {FIELDS} FROM {sobject}"}, timeout=300)
    first = time.perf_counter() - started
    body = resp.json()
    records, pages, size = len(body["records"]), 1, len(resp.content)
    while not body["done"]:
        resp = session.get(base + body["nextRecordsUrl"], timeout=300)
        body = resp.json()
        records += len(body["records"])
        pages += 1
        size += len(resp.content)
    elapsed = time.perf_counter() - started
    return {"records": records, "pages": pages, "seconds": round(elapsed, 2),
            "records_per_s": round(records / elapsed), "first_page_s": round(first, 3),
            "mb": round(size / 1e6, 1)}


def bench_simple_salesforce(info: dict, sobject: str) -> dict:
    from simple_salesforce import Salesforce

    sf = Salesforce(username=info["username"], password=info["password"],
                    security_token=info["security_token"], domain=info["login_domain"],
                    session=_verified_session(info))
    started = time.perf_counter()
    records = sum(1 for _ in sf.query_all_iter(f"SELECT {FIELDS} FROM {sobject}"))
    elapsed = time.perf_counter() - started
    return {"records": records, "seconds": round(elapsed, 2),
            "records_per_s": round(records / elapsed)}


def _verified_session(info: dict) -> requests.Session:
    session = requests.Session()
    session.verify = info["ca_bundle"]
    return session


def bench_bulk(info: dict, sobject: str) -> dict:
    session = _verified_session(info)
    session.headers["Authorization"] = "Bearer " + _token(info, session)
    base = info["instance_url"] + "/services/data/v59.0/jobs/query"
    started = time.perf_counter()
    job = session.post(base, json={"operation": "query", "query": f"SELECT {FIELDS} FROM {sobject}"},
                       timeout=300).json()
    while session.get(f"{base}/{job['id']}", timeout=60).json()["state"] != "JobComplete":
        time.sleep(0.1)
    records, pages, size, locator = 0, 0, 0, None
    while locator != "null":
        params = {"maxRecords": 50000, **({"locator": locator} if locator else {})}
        resp = session.get(f"{base}/{job['id']}/results", params=params, timeout=300)
        records += int(resp.headers["Sforce-NumberOfRecords"])
        locator = resp.headers["Sforce-Locator"]
        pages += 1
        size += len(resp.content)
    elapsed = time.perf_counter() - started
    return {"records": records, "pages": pages, "seconds": round(elapsed, 2),
            "records_per_s": round(records / elapsed), "mb": round(size / 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--object", default="Lead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-emulator-") as tmp:
        started = time.perf_counter()
        with start_emulator(data_dir=Path(tmp) / "org", seed=str(args.records),
                            timeout=600) as emu:
            seeded = time.perf_counter() - started
            info = emu.info
            # requests lets an inherited REQUESTS_CA_BUNDLE override session.verify: set it
            os.environ["REQUESTS_CA_BUNDLE"] = info["ca_bundle"]
            results = {"org_records": args.records,
                       "seed_and_start_s": round(seeded, 1),
                       "seed_records_per_s": round(args.records / seeded),
                       "rest_raw": bench_rest(info, args.object),
                       "rest_simple_salesforce": bench_simple_salesforce(info, args.object),
                       "bulk2_csv": bench_bulk(info, args.object)}
    out = ROOT / ".bench"
    out.mkdir(exist_ok=True)
    (out / "emulator.json").write_text(json.dumps(results, indent=2))
    print(f"emulator benchmark: org of {args.records:,} records, reading every {args.object}")
    print(f"  seed + start        {results['seed_and_start_s']:>8} s   "
          f"{results['seed_records_per_s']:>10,} records/s")
    for key, label in (("rest_raw", "REST pages (raw)"),
                       ("rest_simple_salesforce", "REST simple-salesforce"),
                       ("bulk2_csv", "Bulk 2.0 CSV")):
        r = results[key]
        print(f"  {label:<22}{r['seconds']:>6} s   {r['records_per_s']:>10,} records/s   "
              f"({r['records']:,} records)")


if __name__ == "__main__":
    main()

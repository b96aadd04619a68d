"""Seed N records (default 1,000,000) into a throwaway org and report the speed.

    .venv/bin/python scripts/bench_seed.py [N] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from include.salesforce_emulator.seed import seed_org  # noqa: E402
from include.salesforce_emulator.store import Org  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42, help="rng seed")
    parser.add_argument("--keep", action="store_true", help="keep the org directory")
    args = parser.parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-seed-"))
    try:
        org = Org(data_dir)
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.perf_counter()
            if now - last[0] >= 5:
                last[0] = now
                print(f"  {done:>10,} / {total:,}", flush=True)

        start = time.perf_counter()
        counts = seed_org(org, args.n, rng_seed=args.seed, progress=progress)
        wall = time.perf_counter() - start
        total = sum(counts.values())
        for name, count in counts.items():
            print(f"  {name:<26} {count:>10,}")
        size = sum(p.stat().st_size for p in data_dir.iterdir() if p.is_file())
        print(f"seeded {total:,} records in {wall:.1f} s wall = {total / wall:,.0f} records/s "
              f"(org.db + wal {size / 1e6:,.0f} MB, {data_dir})")
        org.db.close()
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

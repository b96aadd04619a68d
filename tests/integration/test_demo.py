"""`make demo` end to end: scripts/demo.py against the real emulator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from include.sfsync.org_summary import SUMMARY_OBJECTS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_demo_prints_org_summary():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Emulator ready: https://127.0.0.1:" in proc.stdout
    for name in SUMMARY_OBJECTS:
        assert name in proc.stdout
    assert "API requests (24 h):" in proc.stdout
    assert "Initial copy into .data/demo-marketing.db" in proc.stdout
    for cycle in ("Incremental cycle 1", "Incremental cycle 2"):
        section = proc.stdout.split(cycle, 1)[1].split("Salesforce API calls:", 1)[0]
        total = next(line for line in section.splitlines() if line.startswith("Total")).split()
        new, updated = int(total[1]), int(total[2])
        assert new + updated > 0, section  # the simulated activity arrived
    push = proc.stdout.split("Push (marketing database -> Salesforce", 1)[1]
    assert "Title='VP Marketing Ops', State='California'" in push, push
    assert "new Lead 00Q" in push and "Company='[not provided]'" in push, push

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

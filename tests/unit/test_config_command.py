"""``python -m include.sfsync.config`` checks the configuration file: a mistake is one line
naming it and a non-zero exit status, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "include.sfsync.config"], cwd=ROOT,
                          env={**os.environ, "SFSYNC_CONFIG": str(path)},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("text, culprit", [
    ("overlap_seconds: 5\n", "overlap_seconds: Input should be greater than or equal to 60"),
    ("sync_filters:\n  - {object: Lead, field: DoNotCall, skip_if: true}\n",
     "sync_filters.0.skip_if: unknown key"),
    ("mappings: {Lead.Email: [title\nhidden_fields: {}\n", "not valid YAML: line 2, column 14"),
])
def test_a_bad_file_is_one_line_naming_the_culprit(tmp_path, text, culprit):
    path = tmp_path / "sfsync.yaml"
    path.write_text(text)
    done = check(path)
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"error: {path}: ") and culprit in done.stderr, done.stderr


def test_a_good_file_is_valid(tmp_path):
    path = tmp_path / "sfsync.yaml"
    path.write_text("hidden_fields: {Lead: [Description]}\n")
    done = check(path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{path}: valid\n")

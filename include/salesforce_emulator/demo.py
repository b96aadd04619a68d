"""The sync settings the demo org was designed for (``demo_sync.yaml``): its custom objects and
its "do not sync to marketing" checkbox, which sfsync's defaults do not name."""

from __future__ import annotations

from pathlib import Path

import yaml

DEMO_SYNC_FILE = Path(__file__).with_name("demo_sync.yaml")


def demo_sync_settings() -> dict:
    """``demo_sync.yaml`` as configuration overrides (``load_config(overrides=...)``)."""
    return yaml.safe_load(DEMO_SYNC_FILE.read_text())

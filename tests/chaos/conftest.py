"""The emulator fixtures (tests/fixtures_emulator.py) for the fault-control tests."""

from tests.fixtures_emulator import fresh_emulator  # noqa: F401 - fixture re-exported

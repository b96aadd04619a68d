"""Fixtures that run the Salesforce emulator in-process on a free port (see
tests/fixtures_emulator.py, shared with tests/sync/)."""

from tests.fixtures_emulator import (  # noqa: F401 - fixtures and helpers re-exported
    _SHARED_TLS,
    Emulator,
    _start,
    emulator,
    fresh_emulator,
    sf,
    start_emulator_server,
)

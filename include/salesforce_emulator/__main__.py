"""``python -m include.salesforce_emulator``: run the emulator in the foreground.

Environment: ``EMULATOR_PORT`` (default 8443), ``EMULATOR_DATA`` (default ``.emulator/``),
``EMULATOR_SEED`` (used only when the org is new): ``demo`` (the showcase org, default), ``empty``,
a record count (the demo org's shape), or an org profile with an optional size:
``standard`` (a fresh Enterprise org: standard objects and fields only), ``mature`` (standard plus
record types, person accounts, long text, multi-select, geolocation, a custom child of Lead and
an object the sync user cannot see), e.g. ``standard:50000``.
Once it accepts connections it prints one line: ``SALESFORCE_EMULATOR {json}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from .server import EmulatorServer


def _seed_from_env(value: str) -> str:
    from .seed import parse_spec

    try:
        profile, size = parse_spec(value)
    except ValueError as exc:
        sys.exit(f"EMULATOR_SEED: {exc}")
    return f"{profile}:{size}"


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    port_text = os.environ.get("EMULATOR_PORT", "8443")
    if not port_text.isdigit():
        sys.exit(f"EMULATOR_PORT must be a port number, not {port_text!r}")
    server = EmulatorServer(Path(os.environ.get("EMULATOR_DATA", ".emulator")),
                            port=int(port_text),
                            seed=_seed_from_env(os.environ.get("EMULATOR_SEED", "demo")))

    def ready(info: dict) -> None:
        print("SALESFORCE_EMULATOR " + json.dumps(info), flush=True)

    try:
        asyncio.run(server.serve_forever(ready))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

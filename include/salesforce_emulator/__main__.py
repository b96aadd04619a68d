"""``python -m include.salesforce_emulator``: run the emulator in the foreground.

Environment: ``EMULATOR_PORT`` (default 8443), ``EMULATOR_DATA`` (default ``.emulator/``),
``EMULATOR_SEED`` (``demo``, ``empty`` or a record count; used only when the org is new).
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


def _seed_from_env(value: str) -> str | int:
    value = value.strip()
    if value in {"demo", "empty"}:
        return value
    if value.isdigit():
        return int(value)
    sys.exit(f"EMULATOR_SEED must be 'demo', 'empty' or a record count, not {value!r}")


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

#!/usr/bin/env python
"""Load ``airflow_settings.yaml`` (Astro CLI format) into a plain Airflow installation.

Usage::

    python scripts/load_airflow_settings.py [FILE]            # 3 CLI calls: connections, variables, pools
    python scripts/load_airflow_settings.py --env [FILE]      # print `export AIRFLOW_CONN_...` lines
    python scripts/load_airflow_settings.py --dry-run [FILE]  # print the import payloads, change nothing

The import mode runs, in the environment it was started in (``AIRFLOW_HOME`` etc.):

* ``airflow connections import --overwrite <json>``
* ``airflow variables import -a overwrite <json>``
* ``airflow pools import <json>``

Each ``airflow`` command costs ~6 s of start-up, so everything is batched into these three calls.

``--env`` prints ``export AIRFLOW_CONN_<ID>='<json>'`` and ``export AIRFLOW_VAR_<NAME>='<value>'``
lines; ``eval "$(python scripts/load_airflow_settings.py --env)"`` applies them. Pools have no
env-var form and are printed as ``# airflow pools set ...`` comments.

The file is validated first; a bad file fails with a message naming the bad key, e.g.
``airflow.connections[0].host: unknown key (known: conn_extra, conn_host, ...)``.

Conventions on top of the Astro schema:

* ``conn_extra`` is a mapping of strings (Astro CLI drops non-string values silently, so they are an error
  here) or a JSON object string.
* For ``conn_type: sqlite`` a relative ``conn_host`` is a path relative to the directory holding the
  settings file (the project root); it is resolved to an absolute path and its folder is created.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILE = ROOT / "airflow_settings.yaml"

SECTIONS = ("connections", "pools", "variables")
CONNECTION_KEYS = ("conn_id", "conn_type", "conn_host", "conn_schema", "conn_login", "conn_password",
                   "conn_port", "conn_uri", "conn_extra")
# conn_<field> -> the field name Airflow's connection JSON uses.
CONNECTION_FIELDS = {"conn_type": "conn_type", "conn_host": "host", "conn_schema": "schema",
                     "conn_login": "login", "conn_password": "password", "conn_port": "port"}
POOL_KEYS = ("pool_name", "pool_slot", "pool_description")
VARIABLE_KEYS = ("variable_name", "variable_value")
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SettingsError(ValueError):
    """The settings file is invalid; the message names the offending key."""


@dataclass
class Settings:
    # conn_id -> connection JSON (dict) or URI (str), in Airflow's `connections import` format
    connections: dict[str, dict[str, Any] | str] = field(default_factory=dict)
    # pool name -> {"slots", "description", "include_deferred"}, in `pools import` format
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)
    # variable name -> value, in `variables import` format
    variables: dict[str, str] = field(default_factory=dict)


def _check_keys(item: Any, where: str, known: tuple[str, ...]) -> dict:
    if not isinstance(item, dict):
        raise SettingsError(f"{where}: expected a mapping, got {type(item).__name__}")
    for key in item:
        if key not in known:
            raise SettingsError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")
    return item


def _required_str(item: dict, key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SettingsError(f"{where}.{key}: required, must be a non-empty string")
    return value


def _parse_connection(item: dict, where: str, base_dir: Path) -> tuple[str, dict[str, Any] | str]:
    conn_id = _required_str(item, "conn_id", where)
    if not _ID_RE.match(conn_id):
        raise SettingsError(f"{where}.conn_id: {conn_id!r} may only contain letters, digits, '_', '.', '-'")

    conn: dict[str, Any] = {}
    for key, target in CONNECTION_FIELDS.items():
        value = item.get(key)
        if value is None or value == "":
            continue
        if key == "conn_port":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
                raise SettingsError(f"{where}.conn_port: must be an integer port number, got {value!r}")
        elif not isinstance(value, str):
            raise SettingsError(f"{where}.{key}: must be a string, got {type(value).__name__} "
                                f"(quote it in YAML)")
        conn[target] = value

    extra = item.get("conn_extra")
    if extra not in (None, "", {}):
        if isinstance(extra, str):
            try:
                extra = json.loads(extra)
            except json.JSONDecodeError as exc:
                raise SettingsError(f"{where}.conn_extra: not a mapping and not valid JSON ({exc})") from None
            if not isinstance(extra, dict):
                raise SettingsError(f"{where}.conn_extra: JSON must be an object")
        elif not isinstance(extra, dict):
            raise SettingsError(f"{where}.conn_extra: must be a mapping of strings")
        else:
            for key, value in extra.items():
                if not isinstance(value, str):
                    raise SettingsError(
                        f"{where}.conn_extra.{key}: must be a string, got {type(value).__name__} "
                        f"{value!r} (Astro CLI drops non-string extras; quote it)")
        conn["extra"] = extra

    uri = item.get("conn_uri")
    if uri not in (None, ""):
        if not isinstance(uri, str):
            raise SettingsError(f"{where}.conn_uri: must be a string")
        fields = sorted(k for k in item if k in CONNECTION_KEYS and k not in ("conn_id", "conn_uri")
                        and item[k] not in (None, "", {}))
        if fields:
            raise SettingsError(f"{where}.conn_uri: cannot be combined with {', '.join(fields)} "
                                f"(Astro CLI would ignore the URI)")
        return conn_id, uri

    if "conn_type" not in conn:
        raise SettingsError(f"{where}.conn_type: required (or give conn_uri)")

    if conn["conn_type"] == "sqlite" and "host" in conn:
        path = Path(conn["host"]).expanduser()
        if not path.is_absolute():
            path = (base_dir / path).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        conn["host"] = str(path)
    return conn_id, conn


def parse_settings(data: Any, base_dir: Path = ROOT) -> Settings:
    """Validate the parsed YAML document and convert it to Airflow's import formats."""
    if data is None:
        data = {"airflow": {}}
    _check_keys(data, "<top level>", ("airflow",))
    section_map = data.get("airflow") or {}
    _check_keys(section_map, "airflow", SECTIONS)
    settings = Settings()

    for name in SECTIONS:
        items = section_map.get(name) or []
        if not isinstance(items, list):
            raise SettingsError(f"airflow.{name}: expected a list, got {type(items).__name__}")
        for index, item in enumerate(items):
            where = f"airflow.{name}[{index}]"
            if name == "connections":
                _check_keys(item, where, CONNECTION_KEYS)
                conn_id, conn = _parse_connection(item, where, base_dir)
                if conn_id in settings.connections:
                    raise SettingsError(f"{where}.conn_id: duplicate connection {conn_id!r}")
                settings.connections[conn_id] = conn
            elif name == "pools":
                _check_keys(item, where, POOL_KEYS)
                pool = _required_str(item, "pool_name", where)
                slots = item.get("pool_slot")
                if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
                    raise SettingsError(f"{where}.pool_slot: must be a positive integer, got {slots!r} "
                                        f"(Astro CLI skips pools with 0/empty slots)")
                description = item.get("pool_description") or ""
                if not isinstance(description, str):
                    raise SettingsError(f"{where}.pool_description: must be a string")
                if pool in settings.pools:
                    raise SettingsError(f"{where}.pool_name: duplicate pool {pool!r}")
                settings.pools[pool] = {"slots": slots, "description": description,
                                        "include_deferred": False}
            else:
                _check_keys(item, where, VARIABLE_KEYS)
                var = _required_str(item, "variable_name", where)
                value = item.get("variable_value")
                if not isinstance(value, str) or value == "":
                    raise SettingsError(f"{where}.variable_value: must be a non-empty string, got {value!r} "
                                        f"(quote numbers; Astro CLI skips empty values)")
                if var in settings.variables:
                    raise SettingsError(f"{where}.variable_name: duplicate variable {var!r}")
                settings.variables[var] = value
    return settings


def load_settings(path: Path | str = DEFAULT_FILE) -> Settings:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SettingsError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: invalid YAML: {exc}") from None
    try:
        return parse_settings(data, base_dir=path.resolve().parent)
    except SettingsError as exc:
        raise SettingsError(f"{path}: {exc}") from None


def env_lines(settings: Settings) -> list[str]:
    """`export` lines for AIRFLOW_CONN_* / AIRFLOW_VAR_*, and comments for pools."""
    lines = []
    for conn_id, conn in settings.connections.items():
        name = f"AIRFLOW_CONN_{conn_id.upper()}"
        if not _ENV_NAME_RE.match(name):
            raise SettingsError(f"connection {conn_id!r}: cannot be an environment variable name ({name})")
        value = conn if isinstance(conn, str) else json.dumps(conn, separators=(",", ":"))
        lines.append(f"export {name}={shlex.quote(value)}")
    for var, value in settings.variables.items():
        name = f"AIRFLOW_VAR_{var.upper()}"
        if not _ENV_NAME_RE.match(name):
            raise SettingsError(f"variable {var!r}: cannot be an environment variable name ({name})")
        lines.append(f"export {name}={shlex.quote(value)}")
    for pool, spec in settings.pools.items():
        lines.append(f"# pools have no env-var form: airflow pools set {shlex.quote(pool)} {spec['slots']} "
                     f"{shlex.quote(spec['description'])}")
    return lines


def airflow_executable() -> str:
    candidate = Path(sys.executable).parent / "airflow"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("airflow")
    if not found:
        raise SystemExit("error: the `airflow` command was not found (run `make venv`)")
    return found


def import_commands(settings: Settings, workdir: Path) -> list[list[str]]:
    """Write the JSON payloads into ``workdir`` and return the airflow CLI calls that import them."""
    airflow = airflow_executable()
    commands = []
    if settings.connections:
        path = workdir / "connections.json"
        path.write_text(json.dumps(settings.connections, indent=2))
        commands.append([airflow, "connections", "import", "--overwrite", str(path)])
    if settings.variables:
        path = workdir / "variables.json"
        path.write_text(json.dumps(settings.variables, indent=2))
        commands.append([airflow, "variables", "import", "-a", "overwrite", str(path)])
    if settings.pools:
        path = workdir / "pools.json"
        path.write_text(json.dumps(settings.pools, indent=2))
        commands.append([airflow, "pools", "import", str(path)])
    return commands


def run_imports(settings: Settings) -> None:
    with tempfile.TemporaryDirectory(prefix="sfsync-settings-") as tmp:
        for cmd in import_commands(settings, Path(tmp)):
            label = " ".join(cmd[1:3])
            print(f"+ airflow {' '.join(cmd[1:-1])} <{Path(cmd[-1]).name}>", flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True)
            output = (proc.stdout + proc.stderr).strip()
            # `connections import` reports per-connection failures but still exits 0.
            if proc.returncode != 0 or "Could not import" in output:
                sys.stderr.write(output + "\n")
                raise SystemExit(f"error: `airflow {label}` failed (exit {proc.returncode})")
            for line in proc.stdout.splitlines():
                if line.startswith(("Imported", "Uploaded", "Successfully", "All ")):
                    print(f"  {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", default=str(DEFAULT_FILE), help="default: %(default)s")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--env", action="store_true", help="print export lines instead of importing")
    mode.add_argument("--dry-run", action="store_true", help="print the import payloads, change nothing")
    args = parser.parse_args(argv)

    try:
        settings = load_settings(args.file)
        if args.env:
            print("\n".join(env_lines(settings)))
            return 0
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps({"connections": settings.connections, "variables": settings.variables,
                          "pools": settings.pools}, indent=2))
        return 0
    run_imports(settings)
    print(f"Loaded {len(settings.connections)} connection(s), {len(settings.variables)} variable(s), "
          f"{len(settings.pools)} pool(s) from {args.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

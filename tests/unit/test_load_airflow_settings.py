from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts import load_airflow_settings as loader
from scripts.load_airflow_settings import SettingsError, env_lines, load_settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]


def settings_with(section: str, item: dict) -> dict:
    return {"airflow": {section: [item]}}


def test_project_settings_file_is_valid():
    settings = load_settings(ROOT / "airflow_settings.yaml")
    sf = settings.connections["salesforce_default"]
    assert sf == {
        "conn_type": "salesforce",
        "login": "sync.user@sfsync-demo.example",
        "password": "sfsync-demo-pw",
        "extra": {"security_token": "DEMOTOKEN0123456789", "domain": "127.0.0.1:8443/emu", "version": "59.0"},
    }
    # relative sqlite host -> <project root>/.data/marketing.db
    assert settings.connections["marketing_db"] == {"conn_type": "sqlite",
                                                    "host": str(ROOT / ".data" / "marketing.db")}
    assert settings.pools["salesforce_api"]["slots"] == 2
    assert settings.pools["salesforce_api"]["description"]
    assert settings.variables["sfsync_incremental_interval_minutes"] == "5"


def test_sqlite_host_resolved_against_settings_dir(tmp_path):
    settings = parse_settings(settings_with("connections", {
        "conn_id": "db", "conn_type": "sqlite", "conn_host": "sub/x.db"}), base_dir=tmp_path)
    assert settings.connections["db"]["host"] == str(tmp_path / "sub" / "x.db")
    assert (tmp_path / "sub").is_dir()


def test_conn_uri_and_json_string_extra():
    settings = parse_settings({"airflow": {"connections": [
        {"conn_id": "by_uri", "conn_uri": "salesforce://u:p@/?domain=login"},
        {"conn_id": "json_extra", "conn_type": "http", "conn_port": 8080, "conn_extra": '{"a": "b"}'},
    ]}})
    assert settings.connections["by_uri"] == "salesforce://u:p@/?domain=login"
    assert settings.connections["json_extra"] == {"conn_type": "http", "port": 8080, "extra": {"a": "b"}}


@pytest.mark.parametrize(("document", "bad_key"), [
    ({"airflow": {"conections": []}}, "airflow.conections"),
    ({"astro": {}}, "<top level>.astro"),
    (settings_with("connections", {"conn_id": "x", "conn_type": "http", "host": "h"}),
     "airflow.connections[0].host"),
    (settings_with("connections", {"conn_type": "http"}), "airflow.connections[0].conn_id"),
    (settings_with("connections", {"conn_id": "x"}), "airflow.connections[0].conn_type"),
    (settings_with("connections", {"conn_id": "x", "conn_type": "http", "conn_extra": {"version": 59.0}}),
     "airflow.connections[0].conn_extra.version"),
    (settings_with("connections", {"conn_id": "x", "conn_type": "http", "conn_port": "80"}),
     "airflow.connections[0].conn_port"),
    (settings_with("connections", {"conn_id": "x", "conn_uri": "http://h", "conn_login": "u"}),
     "airflow.connections[0].conn_uri"),
    (settings_with("connections", {"conn_id": "bad id", "conn_type": "http"}),
     "airflow.connections[0].conn_id"),
    (settings_with("pools", {"pool_name": "p", "pool_slot": 0}), "airflow.pools[0].pool_slot"),
    (settings_with("pools", {"pool_name": "p", "pool_slots": 2}), "airflow.pools[0].pool_slots"),
    (settings_with("variables", {"variable_name": "v", "variable_value": 5}),
     "airflow.variables[0].variable_value"),
    ({"airflow": {"variables": [{"variable_name": "v", "variable_value": "1"},
                                {"variable_name": "v", "variable_value": "2"}]}},
     "airflow.variables[1].variable_name"),
])
def test_invalid_settings_name_the_bad_key(document, bad_key):
    with pytest.raises(SettingsError) as excinfo:
        parse_settings(document)
    assert str(excinfo.value).startswith((bad_key + ":", bad_key + " ")), str(excinfo.value)


def test_env_lines_are_shell_safe_and_round_trip():
    settings = parse_settings({"airflow": {
        "connections": [{"conn_id": "salesforce_default", "conn_type": "salesforce", "conn_login": "u",
                         "conn_password": "it's secret", "conn_extra": {"domain": "127.0.0.1:8443/emu"}}],
        "variables": [{"variable_name": "sfsync_x", "variable_value": "a b"}],
        "pools": [{"pool_name": "salesforce_api", "pool_slot": 2, "pool_description": "SF API"}],
    }})
    lines = env_lines(settings)
    assert lines[0].startswith("export AIRFLOW_CONN_SALESFORCE_DEFAULT=")
    conn = json.loads(shlex.split(lines[0])[1].split("=", 1)[1])
    assert conn == {"conn_type": "salesforce", "login": "u", "password": "it's secret",
                    "extra": {"domain": "127.0.0.1:8443/emu"}}
    assert lines[1] == "export AIRFLOW_VAR_SFSYNC_X='a b'"
    assert lines[2].startswith("# ")  # pools: comment only, so `eval` ignores them
    env = subprocess.run(["bash", "-c", "\n".join(lines) + "\nprintf %s \"$AIRFLOW_VAR_SFSYNC_X\""],
                         capture_output=True, text=True, check=True)
    assert env.stdout == "a b"


def test_import_commands_batch_three_cli_calls(tmp_path):
    settings = load_settings(ROOT / "airflow_settings.yaml")
    commands = loader.import_commands(settings, tmp_path)
    assert [cmd[1:-1] for cmd in commands] == [
        ["connections", "import", "--overwrite"],
        ["variables", "import", "-a", "overwrite"],
        ["pools", "import"],
    ]
    assert json.loads(Path(commands[0][-1]).read_text()) == settings.connections
    assert json.loads(Path(commands[1][-1]).read_text()) == settings.variables
    assert json.loads(Path(commands[2][-1]).read_text()) == {
        "salesforce_api": {"slots": 2, "description": settings.pools["salesforce_api"]["description"],
                           "include_deferred": False},
        "salesforce_push": {"slots": 1, "description": settings.pools["salesforce_push"]["description"],
                            "include_deferred": False}}


def test_cli_reports_bad_key_and_exit_code(tmp_path):
    bad = tmp_path / "airflow_settings.yaml"
    bad.write_text(yaml.safe_dump(settings_with("pools", {"pool_name": "p", "pool_slot": -1})))
    script = ROOT / "scripts" / "load_airflow_settings.py"
    proc = subprocess.run([sys.executable, str(script), "--env", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "airflow.pools[0].pool_slot" in proc.stderr

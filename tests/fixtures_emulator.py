"""The Salesforce emulator run in-process on a free port: the ``Emulator`` handle and fixtures.

Shared by ``tests/emulator/`` and ``tests/sync/`` (their conftest modules import the fixtures).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from include.salesforce_emulator.server import EmulatorServer
from include.salesforce_emulator.tls import ensure_certificates

# Run a tests/sync test on the demo org and on a fresh Enterprise org's shape (no custom object
# or field of ours): what must work on orgs we did not design.
on_demo_and_standard_orgs = pytest.mark.parametrize("org", ["demo", "standard"], indirect=True)


@dataclass
class Emulator:
    server: EmulatorServer
    info: dict

    @property
    def org(self):
        return self.server.org

    @property
    def profile(self) -> str:
        return self.server.org.profile

    def control(self, method: str, path: str, **kwargs):
        resp = requests.request(method, self.info["control_url"] + path,
                                verify=self.info["ca_bundle"], timeout=120, **kwargs)
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json()

    def counters(self) -> dict:
        return self.control("GET", "/counters")["calls"]

    def salesforce(self, **kwargs):
        from simple_salesforce import Salesforce

        return Salesforce(username=self.info["username"], password=self.info["password"],
                          security_token=self.info["security_token"],
                          domain=self.info["login_domain"], **kwargs)

    def airflow_connection(self, conn_id: str = "salesforce_default") -> str:
        """Export an Airflow connection for the emulator (password + token through `domain`)."""
        env = "AIRFLOW_CONN_" + conn_id.upper()
        os.environ[env] = json.dumps({
            "conn_type": "salesforce", "login": self.info["username"],
            "password": self.info["password"],
            "extra": {"security_token": self.info["security_token"],
                      "domain": self.info["login_domain"], "version": "59.0"}})
        return conn_id


_SHARED_TLS: list[Path] = []


def start_emulator_server(path: Path, seed="demo") -> tuple[EmulatorServer, dict]:
    """Start an org in ``path`` (``seed``: demo, empty or a record count) on a free port."""
    # Every org of the session reuses one CA, so one REQUESTS_CA_BUNDLE trusts them all.
    if not _SHARED_TLS:
        _SHARED_TLS.append(ensure_certificates(path.parent / "shared-ca")["ca"].parent)
    shutil.copytree(_SHARED_TLS[0], path / "tls", dirs_exist_ok=True)
    server = EmulatorServer(path, port=0, seed=seed)
    info = server.start()
    # requests (and so simple-salesforce and the SalesforceHook) trust the emulator's CA this way
    os.environ["REQUESTS_CA_BUNDLE"] = info["ca_bundle"]
    return server, info


_start = start_emulator_server  # the name tests/emulator used before the move


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    """One demo org shared by the session: tests create their own records and don't assume
    global counts."""
    server, info = start_emulator_server(tmp_path_factory.mktemp("emulator"))
    yield Emulator(server, info)
    server.stop()


@pytest.fixture
def fresh_emulator(tmp_path):
    """A private demo org for tests that change settings, the clock or global state."""
    server, info = start_emulator_server(tmp_path / "org")
    yield Emulator(server, info)
    server.stop()


@pytest.fixture
def sf(emulator):
    return emulator.salesforce()

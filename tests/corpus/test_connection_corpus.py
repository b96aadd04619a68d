"""Bad connections: the Salesforce connection (refused logins, a login domain or instance that
refuses, resets or never answers, an undefined connection) and the marketing database's
(a file that cannot be opened, a server that refuses, a database or role that does not
exist). Each run fails with one line naming the connection (and, after the login, the call
and its objects) and leaves the marketing database as it was; a refused login is tried once
and never retried. tests/sync/test_logins.py and tests/unit/test_marketing_connection.py hold
the first cases."""

from __future__ import annotations

import json
import socket
import struct
import threading

import certifi
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from include.sfsync import admin
from include.sfsync import pipeline as P
from include.sfsync.airflow_glue import fail_fast
from include.sfsync.config import load_config
from include.sfsync.errors import MarketingDatabaseError, SalesforceUnreachable
from include.sfsync.salesforce.client import CountingSession
from tests.corpus.conftest import fails, one_line, run_row, state

pytestmark = pytest.mark.integration


def dead_port() -> int:
    """A port nothing listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Listener:
    """A port that accepts connections, then resets them (``reset``) or never answers
    (``silent``): what a broken proxy or a hung server does."""

    def __init__(self, mode: str):
        self.mode, self.held = mode, []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.mode == "reset":
                conn.recv(4096)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()  # RST
            else:
                self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def _key_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


def password_login(info: dict, **changes) -> dict:
    conn = {"conn_type": "salesforce", "login": info["username"], "password": info["password"],
            "extra": {"security_token": info["security_token"], "domain": info["login_domain"],
                      "version": "59.0"}}
    extra = changes.pop("extra", {})
    return {**conn, **changes, "extra": {**conn["extra"], **extra}}


def oauth_login(info: dict, **extra) -> dict:
    return {"conn_type": "salesforce", "extra": {
        "domain": info["login_domain"], "version": "59.0", "consumer_key": info["consumer_key"],
        "consumer_secret": info["consumer_secret"], **extra}}


# case -> (the connection from the emulator's info, Salesforce's code, a secret it holds that
# the message must never show, what the message says to check)
REFUSED_LOGINS = {
    "wrong-password": (lambda i: password_login(i, password="Not-The-Password-1"),
                       "INVALID_LOGIN", "Not-The-Password-1", "the password"),
    "wrong-security-token": (lambda i: password_login(i, extra={"security_token": "BADTOKEN42"}),
                             "INVALID_LOGIN", "BADTOKEN42", "the security token"),
    "unknown-user": (lambda i: password_login(i, login="nobody@sfsync-demo.example"),
                     "INVALID_LOGIN", "sfsync-demo-pw", "the user name"),
    "sandbox-domain-on-a-production-org": (
        lambda i: password_login(i, extra={"domain": i["login_domain"].rsplit("/", 1)[0]
                                           + "/test"}),
        "INVALID_LOGIN", "sfsync-demo-pw", "test for a sandbox"),
    "oauth-unknown-consumer-key": (lambda i: oauth_login(i, consumer_key="3MVG9NotOurApp"),
                                   "invalid_client_id", "sfsync-demo-consumer-secret",
                                   "consumer key and secret"),
    "jwt-signed-with-another-key": (
        lambda i: {"conn_type": "salesforce", "login": i["username"], "extra": {
            "domain": i["login_domain"], "version": "59.0", "consumer_key": i["consumer_key"],
            "private_key": _key_pair()[0]}},
        "invalid_grant", "PRIVATE KEY", "private key of its certificate"),
}


@pytest.mark.parametrize("case", list(REFUSED_LOGINS))
def test_a_refused_login_fails_once_naming_the_connection(case, synced, monkeypatch):
    make, code, secret, check = REFUSED_LOGINS[case]
    org = synced.org
    if case.startswith("jwt"):  # the connected app's certificate holds another key
        org.control("PATCH", "/settings", json={"jwt_public_key": _key_pair()[1]})
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", json.dumps(make(org.info)))
    before = state(synced.mdb)
    org.control("DELETE", "/counters")
    run_key = f"login-{case}"
    error, message = fails(synced, run_key)
    assert type(error).__name__ == "AirflowFailException"  # never retried
    assert message.startswith("Salesforce refused the login of Airflow connection "
                              "'salesforce_default' (user "), message
    assert f": {code}" in message and check in message and secret not in message, message
    assert sum(v for k, v in org.counters().items() if k.startswith("login.")) == 1
    assert run_row(synced.mdb, run_key)["message"] == message
    assert run_row(synced.mdb, run_key)["status"] == "failed"
    assert state(synced.mdb) == before


@pytest.fixture
def short_timeout(monkeypatch):
    monkeypatch.setattr(CountingSession, "timeout", (1.0, 1.0))


# case -> (where the login domain points: a dead port or a Listener mode, what it says)
UNREACHABLE_LOGINS = {
    "login-domain-refuses": ("dead", "connection refused"),
    "login-domain-resets": ("reset", "connection reset by peer"),
    "login-domain-never-answers": ("silent", "timed out"),
    "login-domain-certificate-not-trusted": ("untrusted", "certificate verify failed"),
}


@pytest.mark.parametrize("case", list(UNREACHABLE_LOGINS))
def test_a_login_domain_that_does_not_answer_names_the_connection(case, synced, monkeypatch,
                                                                   short_timeout):
    where, said = UNREACHABLE_LOGINS[case]
    listener = Listener(where) if where in {"reset", "silent"} else None
    port = listener.port if listener else dead_port()
    domain = f"127.0.0.1:{port}/emu"
    if where == "untrusted":  # the emulator's own certificate, not trusted by this bundle
        domain = synced.org.info["login_domain"]
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", json.dumps(
        password_login(synced.org.info, extra={"domain": domain})))
    before = state(synced.mdb)
    try:
        error, message = fails(synced, f"unreachable-{case}")
    finally:
        if listener:
            listener.close()
    assert isinstance(error, SalesforceUnreachable)  # retried by Airflow: the network heals
    assert message.startswith("Salesforce login of Airflow connection 'salesforce_default' "
                              f"(login domain {domain}): no answer: "), message
    assert said in message and synced.org.info["password"] not in message, message
    assert run_row(synced.mdb, f"unreachable-{case}")["status"] != "success"
    assert state(synced.mdb) == before


DESCRIBED = "(User, Account, Lead, Contact, Campaign, CampaignMember, Opportunity, "


@pytest.mark.parametrize("case", ["instance-refuses", "instance-resets",
                                  "instance-never-answers"])
def test_an_instance_that_does_not_answer_names_the_call_and_its_objects(case, synced,
                                                                          monkeypatch,
                                                                          short_timeout):
    """Logged in, then the instance the login pointed at does not answer: the first call of
    the run (prepare's describes, one /composite) is named with its objects."""
    org = synced.org
    listener = None
    if case == "instance-refuses":
        monkeypatch.setattr(org.server.org, "instance_url", f"https://127.0.0.1:{dead_port()}")
    elif case == "instance-resets":
        listener = Listener("reset")
        monkeypatch.setattr(org.server.org, "instance_url", f"https://127.0.0.1:{listener.port}")
    else:  # the real instance, slower than the client waits
        org.control("POST", "/faults", json={"endpoint": "composite", "kind": "slow",
                                             "delay_seconds": 2.5})
    before = state(synced.mdb)
    try:
        error, message = fails(synced, f"instance-{case}")
    finally:
        if listener:
            listener.close()
        org.control("DELETE", "/faults")
    assert isinstance(error, SalesforceUnreachable)
    assert message.startswith("Salesforce POST /services/data/v59.0/composite " + DESCRIBED), \
        message
    said = {"instance-refuses": "connection refused", "instance-resets": "connection reset",
            "instance-never-answers": "read timed out"}[case]
    assert f": no answer: {said}" in message, message
    assert state(synced.mdb) == before


def test_an_undefined_salesforce_connection_is_named(synced):
    before = state(synced.mdb)
    _error, message = fails(synced, "undefined-sf-conn", salesforce_conn_id="salesforce_prod")
    assert "salesforce_prod" in message and "isn't defined" in message, message
    assert state(synced.mdb) == before


# The marketing database's connection: (Airflow connection, what the message must say).
BAD_DATABASES = {
    "sqlite-missing-directory": (lambda tmp: {"conn_type": "sqlite",
                                              "host": str(tmp / "no" / "such" / "mk.db")},
                                 "unable to open database file"),
    "sqlite-path-is-a-directory": (lambda tmp: {"conn_type": "sqlite", "host": str(tmp)},
                                   "unable to open database file"),
    "sqlite-not-a-database": (lambda tmp: (tmp / "notes.db").write_text("not a database\n" * 200)
                              and {"conn_type": "sqlite", "host": str(tmp / "notes.db")},
                              "file is not a database"),
    "postgres-refuses": (lambda tmp: {"conn_type": "postgres", "host": "127.0.0.1",
                                      "port": dead_port(), "login": "postgres",
                                      "schema": "marketing"}, "Connection refused"),
    "postgres-no-such-database": (lambda tmp: {"conn_type": "postgres", "host": "127.0.0.1",
                                               "port": 5432, "login": "postgres",
                                               "schema": "no_such_marketing_db"},
                                  'database "no_such_marketing_db" does not exist'),
    "postgres-no-such-role": (lambda tmp: {"conn_type": "postgres", "host": "127.0.0.1",
                                           "port": 5432, "login": "no_such_sync_role",
                                           "schema": "postgres"},
                              'role "no_such_sync_role" does not exist'),
}


@pytest.mark.parametrize("case", list(BAD_DATABASES))
def test_a_marketing_database_that_cannot_be_opened_is_named(case, corpus_org, tmp_path,
                                                             monkeypatch):
    make, said = BAD_DATABASES[case]
    monkeypatch.setenv("AIRFLOW_CONN_MARKETING_DB", json.dumps(make(tmp_path)))
    config = load_config(overrides={"bulk_poll_seconds": 0})
    corpus_org.control("DELETE", "/counters")
    with pytest.raises(MarketingDatabaseError) as failed:
        fail_fast(lambda: P.run_cycle(f"db-{case}", config=config), f"db-{case}")
    message = one_line(str(failed.value))
    del failed
    assert message.startswith("marketing database (Airflow connection 'marketing_db', "), message
    assert said in message, message
    assert not corpus_org.counters()  # nothing asked of Salesforce before the database works


def test_an_undefined_marketing_connection_is_named(corpus_org):
    config = load_config(overrides={"bulk_poll_seconds": 0, "marketing_conn_id": "marketing_prod"})
    with pytest.raises(Exception, match="marketing_prod") as failed:  # noqa: B017
        fail_fast(lambda: P.run_cycle("db-undefined", config=config), "db-undefined")
    one_line(str(failed.value))


# The admin commands on the same mistakes: one line on stderr, exit status 2.
ADMIN = {
    "status-postgres-refuses": (["status"], "marketing_db", lambda: {
        "AIRFLOW_CONN_MARKETING_DB": json.dumps({"conn_type": "postgres", "host": "127.0.0.1",
                                                 "port": dead_port(), "login": "postgres",
                                                 "schema": "marketing"})},
        "error: marketing database (Airflow connection 'marketing_db', "),
    "outbox-sqlite-not-a-database": (["outbox"], "marketing_db", None,
                                     "error: marketing database (Airflow connection "
                                     "'marketing_db', sqlite:///"),
    "connect-login-domain-refuses": (["connect"], "salesforce_default", None,
                                     "error: Salesforce login of Airflow connection "
                                     "'salesforce_default' (login domain 127.0.0.1:"),
}


@pytest.mark.parametrize("case", list(ADMIN))
def test_an_admin_command_on_a_bad_connection_is_one_line(case, corpus_org, tmp_path,
                                                          monkeypatch, capsys):
    argv, _conn_id, env, start = ADMIN[case]
    for name, value in (env() if env else {}).items():
        monkeypatch.setenv(name, value)
    if case.startswith("outbox"):
        (tmp_path / "mk.db").write_text("not a database\n" * 200)
        monkeypatch.setenv("AIRFLOW_CONN_MARKETING_DB", json.dumps(
            {"conn_type": "sqlite", "host": str(tmp_path / "mk.db")}))
    if case.startswith("connect"):
        monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", json.dumps(password_login(
            corpus_org.info, extra={"domain": f"127.0.0.1:{dead_port()}/emu"})))
    assert admin.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and one_line(err).startswith(start), err

"""Whole cycles through the Airflow connection's other logins: OAuth 2.0 client credentials and
JWT bearer (SalesforceHook extras, as a user sets them), on SQLite and PostgreSQL.

The emulator checks the JWT as Salesforce does: signed with the key of the connected app's
certificate, issued by its consumer key, for the user, not expired."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from include.sfsync.errors import LoginFailed
from tests.sync.test_pull import Sync

pytestmark = pytest.mark.integration


def _key_pair() -> tuple[str, str]:
    """(private key, public key) in PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


@pytest.mark.parametrize("login", ["client_credentials", "jwt_bearer"])
def test_a_whole_cycle_with_an_oauth_login(login, org, marketing_db, monkeypatch):
    info = org.info
    extra = {"domain": info["login_domain"], "version": "59.0",
             "consumer_key": info["consumer_key"]}
    conn: dict = {"conn_type": "salesforce", "extra": extra}
    if login == "client_credentials":  # no user or password: the connected app's run-as user
        extra["consumer_secret"] = info["consumer_secret"]
    else:
        private, public = _key_pair()
        org.control("PATCH", "/settings", json={"jwt_public_key": public})
        conn["login"] = info["username"]
        extra["private_key"] = private
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", json.dumps(conn))
    org.control("DELETE", "/counters")
    sync = Sync(org, marketing_db)
    summary = sync.cycle("first")
    assert summary["counts"]["Lead"]["new"] > 0 and summary["counts"]["Lead"]["failed"] == 0
    sync.mdb.execute("UPDATE person SET title = 'Pushed via OAuth' WHERE id = :i",
                     i=sync.mdb.rows("person", "sfdc_type = 'Lead' AND sfdc_is_deleted = :f",
                                     f=False)[0]["id"])
    sync.advance(60)
    pushed = sync.cycle("second")["push"]["people"]
    assert pushed["counts"]["Lead"]["updated"] == 1, pushed
    calls = org.counters()
    assert calls.get("login.oauth", 0) >= 2 and not calls.get("login.soap"), calls


def test_a_jwt_signed_with_another_key_is_refused(org):
    from simple_salesforce import Salesforce
    from simple_salesforce.exceptions import SalesforceAuthenticationFailed

    info = org.info
    org.control("PATCH", "/settings", json={"jwt_public_key": _key_pair()[1]})
    with pytest.raises(SalesforceAuthenticationFailed, match="invalid assertion"):
        Salesforce(username=info["username"], consumer_key=info["consumer_key"],
                   privatekey=_key_pair()[0], domain=info["login_domain"])


def test_a_whole_cycle_on_a_sandbox_through_the_test_login_domain(org, marketing_db,
                                                                 monkeypatch):
    """A sandbox is logged into through test.salesforce.com (the hook's ``domain: test``); the
    emulator's sandbox refuses the production domain, as Salesforce does."""
    from include.sfsync import admin

    info = org.info
    org.control("PATCH", "/settings", json={"sandbox": True})
    host = info["login_domain"].rsplit("/", 1)[0]
    conn = {"conn_type": "salesforce", "login": info["username"], "password": info["password"],
            "extra": {"security_token": info["security_token"], "domain": f"{host}/test",
                      "version": "59.0"}}
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", json.dumps(conn))
    assert "(sandbox, " in admin.connect().splitlines()[0]
    sync = Sync(org, marketing_db)
    summary = sync.cycle("sandbox")
    assert summary["counts"]["Lead"]["new"] > 0 and summary["counts"]["Lead"]["failed"] == 0
    # The production login domain is refused for a sandbox: the run fails, naming the login.
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", json.dumps(
        {**conn, "extra": {**conn["extra"], "domain": f"{host}/login"}}))
    with pytest.raises(LoginFailed, match=f"login domain {host}/login\\): INVALID_LOGIN: "):
        sync.cycle("production-domain")


def test_a_refused_login_says_what_to_check_and_never_a_secret(org, monkeypatch):
    """OAuth client credentials with a wrong secret, then a password changed while a session
    lives: each refusal is one login attempt and one LoginFailed, which the tasks never retry."""
    from include.sfsync.salesforce.client import SalesforceClient
    from include.sfsync.salesforce.reads import count

    info = org.info
    wrong = "not-the-consumer-secret"
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", json.dumps({
        "conn_type": "salesforce", "extra": {"domain": info["login_domain"], "version": "59.0",
                                             "consumer_key": info["consumer_key"],
                                             "consumer_secret": wrong}}))
    org.control("DELETE", "/counters")
    with pytest.raises(LoginFailed) as refused:
        SalesforceClient.from_connection("salesforce_default")
    message = str(refused.value)
    assert message.startswith("Salesforce refused the login of Airflow connection "
                              "'salesforce_default' (user (none: the connected app runs as its "
                              f"user), login domain {info['login_domain']}): invalid_client: ")
    assert "consumer key and secret" in message and "\n" not in message
    assert wrong not in message and info["consumer_key"] not in message
    assert org.counters() == {"login.oauth": 1}
    # a session that expires after the password changed: the re-login is refused the same way
    org.airflow_connection()
    client = SalesforceClient.from_connection("salesforce_default")
    org.control("PATCH", "/settings", json={"password": "changed-meanwhile"})
    org.control("POST", "/sessions/expire", json={})
    org.control("DELETE", "/counters")
    with pytest.raises(LoginFailed, match="INVALID_LOGIN: .* Check the user name, the password "
                                          "and the security token") as refused:
        count(client, "SELECT COUNT() FROM Lead")
    assert info["password"] not in str(refused.value)
    assert {k: v for k, v in org.counters().items() if k.startswith("login.")} == {
        "login.soap": 1}

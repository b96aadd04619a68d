"""Logins: SOAP partner ``login()`` and the OAuth 2.0 token endpoint.

Both are routed by path suffix, so simple-salesforce's hard-wired
``https://{domain}.salesforce.com/...`` reaches us with ``domain="127.0.0.1:8443/emu"``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from html import escape
from urllib.parse import parse_qsl
from xml.dom import minidom

from .http import JSON_TYPE, Request, Response, json_response
from .store import Org

_SOAP_FAULT = (
    '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
    'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:sf="urn:fault.partner.soap.sforce.com" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>'
    '<faultcode>sf:{code}</faultcode><faultstring>{code}: {message}</faultstring><detail>'
    '<sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>{code}</sf:exceptionCode>'
    '<sf:exceptionMessage>{message}</sf:exceptionMessage></sf:LoginFault></detail>'
    '</soapenv:Fault></soapenv:Body></soapenv:Envelope>')
_INVALID_LOGIN = "Invalid username, password, security token; or user locked out."


def _domain_refused(org: Org, req: Request) -> bool:
    """test.salesforce.com logs into sandboxes only and login.salesforce.com into production orgs;
    a My Domain (such as the emulator's ``emu``) into either. The login domain is the first path
    segment here (``https://host:port/<domain>.salesforce.com/...``)."""
    domain = req.path.lstrip("/").split("/", 1)[0].split(".", 1)[0]
    return domain in {"test", "login"} and (domain == "test") != org.settings.sandbox


def soap_login(org: Org, req: Request) -> Response:
    version = req.params["v"]
    if _domain_refused(org, req):
        return _soap_fault("INVALID_LOGIN", _INVALID_LOGIN)
    try:
        doc = minidom.parseString(req.body)
    except Exception:  # noqa: BLE001 - any parse failure is a client error
        return _soap_fault("INVALID_LOGIN", _INVALID_LOGIN)
    username = _text(doc, "username")
    password = _text(doc, "password")
    org_id = _text(doc, "organizationId")
    s = org.settings
    expected = s.password if org_id else s.password + s.security_token
    if org_id and org_id[:15] != s.org_id[:15]:
        return _soap_fault("INVALID_LOGIN", _INVALID_LOGIN)
    if (username or "").lower() != s.username.lower() or password != expected:
        return _soap_fault("INVALID_LOGIN", _INVALID_LOGIN)
    user_id = org.sync_user_id()
    token = org.issue_session(user_id)
    base = org.instance_url
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns="urn:partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><loginResponse>'
        f'<result><metadataServerUrl>{base}/services/Soap/m/{version}/{s.org_id[:15]}'
        '</metadataServerUrl><passwordExpired>false</passwordExpired>'
        f'<sandbox>{str(s.sandbox).lower()}</sandbox>'
        f'<serverUrl>{base}/services/Soap/u/{version}/{s.org_id[:15]}</serverUrl>'
        f'<sessionId>{escape(token)}</sessionId><userId>{user_id}</userId><userInfo>'
        '<accessibilityMode>false</accessibilityMode><currencySymbol>$</currencySymbol>'
        '<orgDefaultCurrencyIsoCode>USD</orgDefaultCurrencyIsoCode>'
        f'<orgHasPersonAccounts>{str(org.schema.get("Account").has("IsPersonAccount")).lower()}'
        '</orgHasPersonAccounts>'
        f'<organizationId>{s.org_id}</organizationId>'
        '<organizationMultiCurrency>false</organizationMultiCurrency>'
        f'<organizationName>{escape(org.name)}</organizationName>'
        '<profileId>00e5e000000SYNC</profileId>'
        f'<sessionSecondsValid>{s.session_seconds}</sessionSecondsValid>'
        f'<userEmail>{escape(s.username)}</userEmail><userFullName>Sync User</userFullName>'
        f'<userId>{user_id}</userId><userName>{escape(s.username)}</userName>'
        '<userTimeZone>America/Los_Angeles</userTimeZone><userType>Standard</userType>'
        '</userInfo></result></loginResponse></soapenv:Body></soapenv:Envelope>')
    return Response(200, body.encode(), "text/xml;charset=UTF-8")


def _soap_fault(code: str, message: str) -> Response:
    body = _SOAP_FAULT.format(code=code, message=escape(message))
    return Response(500, body.encode(), "text/xml;charset=UTF-8")


def _text(doc, local_name: str) -> str | None:
    for node in doc.getElementsByTagNameNS("*", local_name):
        return "".join(c.data for c in node.childNodes if c.nodeType == c.TEXT_NODE)
    return None


def oauth_token(org: Org, req: Request) -> Response:
    form = dict(parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
    grant = form.get("grant_type", "")
    s = org.settings
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    basic = req.headers.get("authorization", "")
    if basic.lower().startswith("basic "):
        try:
            client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
        except Exception:  # noqa: BLE001
            return _oauth_error(400, "invalid_client", "invalid client credentials")
    client_error = _client_error(org, client_id, client_secret,
                                 secret_required=grant != "refresh_token")
    if _domain_refused(org, req):
        return _oauth_error(400, "invalid_grant", "authentication failure")
    if grant == "password":
        if client_error:
            return client_error
        # The token may be appended or not: 127.0.0.1 counts as a trusted IP range.
        if (form.get("username", "").lower() != s.username.lower()
                or form.get("password") not in {s.password, s.password + s.security_token}):
            return _oauth_error(400, "invalid_grant", "authentication failure")
    elif grant == "client_credentials":
        if client_error:
            return client_error
    elif grant == "refresh_token":
        if client_error:
            return client_error
        if form.get("refresh_token") != s.refresh_token:
            return _oauth_error(400, "invalid_grant", "expired access/refresh token")
    elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
        error = _check_jwt(org, form.get("assertion", ""))
        if error:
            return _oauth_error(400, "invalid_grant", error)
    else:
        return _oauth_error(400, "unsupported_grant_type", "grant type not supported")
    user_id = org.sync_user_id()
    token = org.issue_session(user_id)
    issued = str(int(time.time() * 1000))
    body = {"access_token": token, "instance_url": org.instance_url,
            "id": f"{org.instance_url}/id/{s.org_id}/{user_id}", "token_type": "Bearer",
            "issued_at": issued, "scope": "api"}
    if grant != "urn:ietf:params:oauth:grant-type:jwt-bearer":
        body["signature"] = base64.b64encode(hmac.new(
            s.consumer_secret.encode(), (body["id"] + issued).encode(), hashlib.sha256).digest()
        ).decode()
    if grant == "client_credentials":
        body["api_instance_url"] = org.instance_url
    return json_response(200, body)


def _client_error(org: Org, client_id, client_secret, *, secret_required: bool) -> Response | None:
    """The connected app's check: an unknown consumer key, or a wrong secret."""
    if client_id != org.settings.consumer_key:
        return _oauth_error(400, "invalid_client_id", "client identifier invalid")
    if (secret_required or client_secret is not None) and client_secret != \
            org.settings.consumer_secret:
        return _oauth_error(400, "invalid_client", "invalid client credentials")
    return None


def _check_jwt(org: Org, assertion: str) -> str | None:
    import jwt  # PyJWT ships with Airflow; only this rarely used flow needs it

    key = org.settings.jwt_public_key
    try:
        if key:
            claims = jwt.decode(assertion, key, algorithms=["RS256"],
                                options={"verify_exp": False, "verify_aud": False})
        else:
            claims = jwt.decode(assertion, options={"verify_signature": False,
                                                    "verify_exp": False})
    except jwt.PyJWTError:
        return "invalid assertion"
    if claims.get("iss") != org.settings.consumer_key:
        return "invalid_client_id"
    if str(claims.get("sub", "")).lower() != org.settings.username.lower():
        return "user hasn't approved this consumer"
    if int(str(claims.get("exp", "0"))) < time.time():
        return "expired authorization code"
    return None


def _oauth_error(status: int, error: str, description: str) -> Response:
    return json_response(status, {"error": error, "error_description": description})


def bearer_token(req: Request) -> str | None:
    header = req.headers.get("authorization", "")
    for scheme in ("Bearer ", "OAuth "):
        if header.startswith(scheme):
            return header[len(scheme):].strip()
    return req.headers.get("x-sfdc-session")


__all__ = ["soap_login", "oauth_token", "bearer_token", "JSON_TYPE"]

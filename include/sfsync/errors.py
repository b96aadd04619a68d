"""Every exception the sync raises on purpose (standard library only: every layer imports it).

A task that fails with :class:`ConfigError`, :class:`OrgMismatchError`, :class:`InputError`,
:class:`RecordsRejected` or :class:`LoginFailed` is not retried (``airflow_glue.fail_fast``):
retrying cannot fix a bad configuration, the wrong org, a bad request, a record Salesforce
refuses or wrong credentials (and each failed login brings the user closer to a lockout).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file and the culprit key."""


class OrgMismatchError(RuntimeError):
    """The marketing database belongs to another Salesforce org."""


class InputError(ValueError):
    """A run's input (Params or conf) is empty or names nothing the sync knows."""


class RecordsRejected(RuntimeError):
    """Salesforce rejected records a run was asked to sync now (details in ``sfsync_error``)."""


class NotPreparedError(RuntimeError):
    """A step ran before the step it works from (no stored schema, nothing extracted yet)."""


class LoginFailed(RuntimeError):
    """Salesforce refused the login of an Airflow connection; the message names the connection,
    its user and login domain, Salesforce's code and what to check (never a secret)."""


class SalesforceCallError(RuntimeError):
    """A call, or a sub-request of a /composite call (a query, a describe), answered with an
    error, or with a body that is not the JSON it should be; the task retries, as after a 5xx."""

    def __init__(self, what: str, result: dict):
        body = result.get("body")
        code = body[0].get("errorCode") if isinstance(body, list) and body else None
        super().__init__(f"{what}: HTTP {result.get('status')}{f' {code}' if code else ''} "
                         f"{body}")
        self.status = result.get("status")
        self.code = code


class SalesforceUnreachable(SalesforceCallError):
    """A call got no answer from Salesforce: the connection was refused or reset, or the answer
    did not come in time. The message names the call and its objects (or, for a login, the
    Airflow connection); the task retries, as after a 5xx."""

    def __init__(self, what: str, cause: str):
        RuntimeError.__init__(self, f"{what}: no answer: {cause}")
        self.cause = cause
        self.status = None
        self.code = None


class MarketingDatabaseError(RuntimeError):
    """The marketing database refused a step's work (unreachable, read-only, locked, a table
    missing); the message names its Airflow connection and the table. The task retries."""


class WriteInterrupted(RuntimeError):
    """A call failed in the middle of a write. ``outcomes``: what the calls before it already
    did (keys of ``write_with_retries``, or positions for ``write_records``): records created
    there must be settled, never sent again."""

    def __init__(self, message: str, outcomes: dict | None = None):
        super().__init__(message)
        self.outcomes = outcomes or {}


class RequestLimitExceeded(WriteInterrupted):
    """The org's daily API allowance is spent: stop writing for this cycle."""

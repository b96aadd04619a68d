"""Errors that retrying cannot fix fail the task at once."""

from __future__ import annotations

import pytest

from include.sfsync.airflow_glue import fail_fast
from include.sfsync.errors import (
    ConfigError,
    LoginFailed,
    OrgMismatchError,
    SalesforceCallError,
)


@pytest.mark.parametrize("error", [OrgMismatchError("other org"), ConfigError("bad key"),
                                   LoginFailed("Salesforce refused the login")])
def test_wrong_org_bad_config_and_refused_logins_fail_without_retries(error):
    from airflow.sdk.exceptions import AirflowFailException

    def boom():
        raise error

    with pytest.raises(AirflowFailException, match=str(error)):
        fail_fast(boom)


@pytest.mark.parametrize("error", [ConnectionError("blip"), SalesforceCallError(
    "Salesforce GET /services/data/v59.0/query/ (Lead)", {"status": 200, "body": "not JSON"})])
def test_other_errors_stay_retryable(error):
    def boom():
        raise error

    with pytest.raises(type(error)):
        fail_fast(boom)
    assert fail_fast(lambda: 42) == 42

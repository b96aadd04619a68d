"""Errors that retrying cannot fix fail the task at once."""

from __future__ import annotations

import pytest

from include.sfsync.airflow_glue import fail_fast
from include.sfsync.errors import ConfigError, OrgMismatchError


@pytest.mark.parametrize("error", [OrgMismatchError("other org"), ConfigError("bad key")])
def test_wrong_org_and_bad_config_fail_without_retries(error):
    from airflow.sdk.exceptions import AirflowFailException

    def boom():
        raise error

    with pytest.raises(AirflowFailException, match=str(error)):
        fail_fast(boom)


def test_other_errors_stay_retryable():
    with pytest.raises(ConnectionError):
        fail_fast(lambda: (_ for _ in ()).throw(ConnectionError("blip")))
    assert fail_fast(lambda: 42) == 42

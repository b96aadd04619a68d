"""What every sfsync DAG shares (cheap to import at parse time: standard library only)."""

from __future__ import annotations

from datetime import timedelta

OWNER = "sfsync"


def default_args(*, retries: int, retry_delay: timedelta,
                 max_retry_delay: timedelta) -> dict:
    """Owner and retries with exponential backoff (Airflow doubles the delay each try)."""
    return {"owner": OWNER, "retries": retries, "retry_delay": retry_delay,
            "retry_exponential_backoff": 2.0, "max_retry_delay": max_retry_delay}

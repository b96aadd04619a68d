"""What ties the sync to Airflow: the DAGs' owner and retry defaults, the run a task belongs
to, the failure callback, and the errors that must not be retried.

Cheap to import at parse time: the standard library and ``errors`` only; the marketing
database is reached inside the failure callback.
"""

from __future__ import annotations

from datetime import timedelta

from include.sfsync.errors import ConfigError, OrgMismatchError

OWNER = "sfsync"


def default_args(*, retries: int, retry_delay: timedelta,
                 max_retry_delay: timedelta) -> dict:
    """Owner and retries with exponential backoff (Airflow doubles the delay each try)."""
    return {"owner": OWNER, "retries": retries, "retry_delay": retry_delay,
            "retry_exponential_backoff": 2.0, "max_retry_delay": max_retry_delay}


def fail_fast(call):
    """Run ``call``; a wrong org or a bad configuration fails the task without retries."""
    from airflow.sdk.exceptions import AirflowFailException  # in the task, not at parse time

    try:
        return call()
    except (OrgMismatchError, ConfigError) as exc:
        raise AirflowFailException(str(exc)) from exc


def run_key_of(context) -> str:
    """The sync run an Airflow task belongs to: one per DAG run."""
    return f"{context['dag'].dag_id}:{context['run_id']}"


def mark_run_failed(context) -> None:
    """DAG failure callback: the sync run's status becomes "Failed" with the reason."""
    from include.sfsync.config import load_config  # in the callback, not at parse time
    from include.sfsync.store.engine import engine_for
    from include.sfsync.store.ledger import mark_failed

    engine = engine_for(load_config().marketing_conn_id)
    mark_failed(engine, run_key_of(context),
                f"{context.get('reason', 'failed')}: see the task logs")

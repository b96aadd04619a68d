"""What ties the sync to Airflow: the DAGs' owner and retry defaults, the run a task belongs
to, the failure callback, and the errors that must not be retried.

Cheap to import at parse time: the standard library and ``errors`` only; the marketing
database is reached inside the failure callback.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from include.sfsync.errors import ConfigError, InputError, OrgMismatchError, RecordsRejected

log = logging.getLogger(__name__)
OWNER = "sfsync"


def default_args(*, retries: int, retry_delay: timedelta,
                 max_retry_delay: timedelta) -> dict:
    """Owner and retries with exponential backoff (Airflow doubles the delay each try)."""
    return {"owner": OWNER, "retries": retries, "retry_delay": retry_delay,
            "retry_exponential_backoff": 2.0, "max_retry_delay": max_retry_delay}


UNRETRYABLE = (OrgMismatchError, ConfigError, InputError, RecordsRejected)


def fail_fast(call, run_key: str | None = None):
    """Run ``call``; a wrong org, a bad configuration, a bad request or records Salesforce
    rejects fail the task without retries, the run (``run_key``) marked failed with the cause."""
    from airflow.sdk.exceptions import AirflowFailException  # in the task, not at parse time

    try:
        return call()
    except UNRETRYABLE as exc:
        if run_key is not None:
            _record_failure(run_key, str(exc))
        raise AirflowFailException(str(exc)) from exc


def _record_failure(run_key: str, message: str) -> None:
    from include.sfsync.config import load_config  # in the task, not at parse time
    from include.sfsync.store.engine import engine_for
    from include.sfsync.store.ledger import mark_failed

    try:
        mark_failed(engine_for(load_config().marketing_conn_id), run_key, message)
    except Exception as exc:  # noqa: BLE001 - the failure itself must still be reported
        log.warning("could not record the failure of run %s in the marketing database: %s",
                    run_key, exc)


def run_key_of(context) -> str:
    """The sync run an Airflow task belongs to: one per DAG run."""
    return f"{context['dag'].dag_id}:{context['run_id']}"


def mark_run_failed(context) -> None:
    """DAG failure callback: the sync run's status becomes "Failed" (a cause recorded by the
    failing task stays; otherwise the failed task is named)."""
    ti = context.get("ti")
    where = f"task {ti.task_id} failed" if ti is not None else "failed"
    _record_failure(run_key_of(context),
                    f"{context.get('reason', 'failed')}: {where}; see its log")

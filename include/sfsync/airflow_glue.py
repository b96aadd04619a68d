"""What ties the sync to Airflow: the DAGs' owner and retry defaults, the run a task belongs
to, the failure callback, the errors that must not be retried, and what a task's log says: its
result as a small table (last lines), each retry as one line before the stack trace, and the
changes Salesforce rejected in the run (on the run itself).

Cheap to import at parse time: the standard library and ``errors`` only; the marketing
database, tabulate and Airflow are reached inside the functions that tasks call.
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime, timedelta

from include.sfsync.errors import (
    ConfigError,
    InputError,
    LoginFailed,
    OrgMismatchError,
    RecordsRejected,
)

log = logging.getLogger(__name__)
OWNER = "sfsync"


def default_args(*, retries: int, retry_delay: timedelta, max_retry_delay: timedelta,
                 result_table: bool = True) -> dict:
    """Owner and retries with exponential backoff (Airflow doubles the delay each try).

    ``result_table``: every task ends its log with its result as a small table
    (:func:`log_result_table`) instead of Airflow's "Returned value was: {...}"; the XCom
    value itself is unchanged."""
    args = {"owner": OWNER, "retries": retries, "retry_delay": retry_delay,
            "retry_exponential_backoff": 2.0, "max_retry_delay": max_retry_delay}
    if result_table:
        args.update(post_execute=log_result_table, show_return_value_in_logs=False)
    return args


# --- what a task's log says -------------------------------------------------------------------

def log_result_table(context, result) -> None:
    """``post_execute`` hook (``default_args``): the task's result as a small table
    (``report.result_table``), the last lines the task logs; Airflow's own "Post Execute" group
    ("Pushing xcom"), folded in its log view, follows. None logs nothing; a formatting problem
    never fails the task."""
    try:
        from include.sfsync.report import result_table

        task = context["task"]
        label = (getattr(task, "op_kwargs", None) or {}).get("sf_object") or getattr(
            task, "sf_object", None)
        table = result_table(result, label=label)
    except Exception as exc:  # noqa: BLE001 - the task's work is done; only its log line is lost
        log.warning("could not tabulate the result of this task: %s", exc)
        return
    if table:
        log.info("Result:\n%s", table)


def announce_retry(func):
    """Decorate a task (its function, or an operator's ``execute``): when it fails and Airflow
    will try it again, its log says so in one line before the stack trace, e.g.
    ``retry 1 of 3 in 27 s: ConnectionError: ...`` (:func:`retry_line`)."""

    @functools.wraps(func)
    def announcing(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            try:
                from airflow.sdk import get_current_context

                line = retry_line(get_current_context(), exc)
            except Exception as err:  # noqa: BLE001 - never hide the task's own error
                log.debug("no retry line: %s", err)
                line = None
            if line:
                log.warning("%s", line)
            raise

    announcing.announces_retry = True
    return announcing


def retry_line(context, exc: BaseException) -> str | None:
    """``retry <n> of <retries> in <seconds> s: <cause>`` when Airflow will retry the task
    after ``exc``; None when it will not (no retries left, or an error that is never retried).

    The number is the delay the scheduler will wait (:func:`next_retry_delay`). The decision
    mirrors the Execution API's (``max_tries != 0 and try_number <= max_tries``); sfsync sets no
    ``retry_policy``, and a task that has one gets no line (the policy decides after this)."""
    from airflow.sdk.exceptions import (
        AirflowFailException,
        AirflowRescheduleException,
        AirflowSensorTimeout,
        AirflowSkipException,
        DagRunTriggerException,
        DownstreamTasksSkipped,
    )

    if isinstance(exc, (AirflowFailException, AirflowSensorTimeout, AirflowSkipException,
                        AirflowRescheduleException, DownstreamTasksSkipped,
                        DagRunTriggerException)):
        return None  # failed without retries, or not a failure at all
    ti, task = context["ti"], context["task"]
    retries = task.retries or 0
    if not ti.max_tries or ti.try_number > ti.max_tries or not retries or getattr(
            task, "retry_policy", None) is not None:
        return None
    delay = next_retry_delay(task, dag_id=ti.dag_id, task_id=ti.task_id,
                             logical_date=context["dag_run"].logical_date,
                             try_number=ti.try_number)
    # a cleared task instance counts its tries on: max_tries = tries before the clear + retries
    retry = ti.try_number - (ti.max_tries - retries)
    cause = " ".join(f"{type(exc).__name__}: {exc}".split())
    if len(cause) > 500:
        cause = cause[:499] + "…"
    return f"retry {retry} of {retries} in {_seconds(delay)} s: {cause}"


def next_retry_delay(task, *, dag_id: str, task_id: str, logical_date: datetime | None,
                     try_number: int) -> timedelta:
    """How long the scheduler waits after this failed try: airflow-core's own
    ``TaskInstance.next_retry_datetime`` (backoff, jitter, caps), asked about this try with the
    task as the scheduler sees it (serialized: ``retry_exponential_backoff=True`` is 2.0)."""
    from types import SimpleNamespace

    from airflow.models.taskinstance import TaskInstance
    from airflow.serialization.serialized_objects import create_scheduler_operator

    end = datetime(2000, 1, 1, tzinfo=UTC)
    # the scheduler's TaskInstance holds the logical date as a UTC datetime
    when = None if logical_date is None else datetime.fromtimestamp(logical_date.timestamp(), UTC)
    try_ = SimpleNamespace(retry_delay_override=None, end_date=end, dag_id=dag_id,
                           task_id=task_id, logical_date=when, try_number=try_number,
                           task=create_scheduler_operator(task), log=log)
    return TaskInstance.next_retry_datetime(try_) - end


def _seconds(delay: timedelta) -> str:
    seconds = delay.total_seconds()
    return str(int(seconds)) if seconds == int(seconds) else f"{seconds:.1f}"


def rejections_summary(rejected: list[str], shown: int = 5) -> str:
    """``2 changes rejected by Salesforce: Lead 00Q…: CODE: message; ...`` (the first
    ``shown``; ``ledger.rejections`` lines)."""
    more = len(rejected) - shown
    return (f"{len(rejected)} change{'' if len(rejected) == 1 else 's'} rejected by Salesforce: "
            + "; ".join(rejected[:shown]) + (f"; and {more} more" if more > 0 else ""))


def report_rejections(run_key: str) -> None:
    """The changes Salesforce rejected in the run, on the Airflow run itself.

    Airflow 3.3's Task SDK cannot set a DAG run's (or a task instance's) note, so the task that
    calls this, after the run's work, ends *skipped* when there are any: its square in the
    grid stands out from the run's green ones, its log lists every rejection
    (``ledger.rejections``) as a warning and says why it skipped (:func:`rejections_summary`).
    The run itself, and the sync run in ``sfsync_run``, stay successful: the cycle synced, and a
    rejected change waits in the outbox (``admin outbox``). Sync now, which was asked for those
    very people, fails instead (``pipeline.sync_now``: ``RecordsRejected``)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from include.sfsync.config import load_config
    from include.sfsync.store.engine import engine_for, reader
    from include.sfsync.store.ledger import rejections
    from include.sfsync.store.tables import ensure_bookkeeping

    engine = engine_for(load_config().marketing_conn_id)
    ensure_bookkeeping(engine)
    with reader(engine).connect() as conn:
        rejected = rejections(conn, run_key)
    if not rejected:
        log.info("Salesforce rejected no change of this run")
        return
    log.warning("Salesforce rejected %d change(s) of this run (sfsync_error; `python -m "
                "include.sfsync.admin outbox` lists them, `... release` retries them):\n%s",
                len(rejected), "\n".join(rejected))
    raise AirflowSkipException(rejections_summary(rejected))


# --- failures ---------------------------------------------------------------------------------

UNRETRYABLE = (OrgMismatchError, ConfigError, InputError, RecordsRejected, LoginFailed)


def fail_fast(call, run_key: str | None = None):
    """Run ``call``; a wrong org, a bad configuration, a bad request, records Salesforce
    rejects or a refused login fail the task without retries, the run (``run_key``) marked
    failed with the cause. Every task that may log in to Salesforce runs through here."""
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


# --- deployment -------------------------------------------------------------------------------

def worker_hostname() -> str:
    """``[core] hostname_callable`` for several Celery workers on one machine (``make
    airflow-celery``): the task instances' *Host* is ``SFSYNC_WORKER_HOSTNAME`` when set, so the
    UI tells the workers apart; otherwise Airflow's default, the machine's FQDN."""
    import os
    import socket

    return os.environ.get("SFSYNC_WORKER_HOSTNAME") or socket.getfqdn()

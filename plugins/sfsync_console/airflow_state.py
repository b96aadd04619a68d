"""What the console reads from and asks of Airflow itself, in the api-server's process: the sync
DAGs' runs and task instances (the running step, the failing task's log, the next cycle) and the
actions (trigger Sync now, backfill the initial copy). Airflow's modules are imported inside the
functions: every Airflow component imports the plugin, only the api-server serves it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

INCREMENTAL_DAG = "salesforce_incremental_sync"
INITIAL_DAG = "salesforce_initial_sync"
SYNC_NOW_DAG = "salesforce_sync_now"
SYNC_DAGS = (INCREMENTAL_DAG, INITIAL_DAG, SYNC_NOW_DAG)
DONE_STATES = ("success", "skipped", "failed", "upstream_failed", "removed")


def task_log_url(dag_id: str, run_id: str, task_id: str, map_index: int = -1,
                 try_number: int | None = None) -> str:
    """The Airflow UI's page of one task instance (it opens on the log)."""
    url = f"/dags/{quote(dag_id)}/runs/{quote(run_id)}/tasks/{quote(task_id)}"
    if map_index >= 0:
        url += f"/mapped/{map_index}"
    return url + (f"?try_number={try_number}" if try_number else "")


def run_url(dag_id: str, run_id: str) -> str:
    return f"/dags/{quote(dag_id)}/runs/{quote(run_id)}"


@dataclass
class RunningRun:
    dag_id: str
    run_id: str
    state: str  # queued, running
    started_at: datetime | None
    done: int  # task instances finished
    total: int
    steps: list[str]  # the task instances running now ("copy[Lead]")

    @property
    def url(self) -> str:
        return run_url(self.dag_id, self.run_id)


def _step(ti) -> str:
    label = ti.rendered_map_index or (str(ti.map_index) if ti.map_index >= 0 else "")
    return f"{ti.task_id}[{label}]" if label else ti.task_id


def running_runs() -> list[RunningRun]:
    """The sync DAGs' runs in progress (queued or running), with their running steps and
    progress."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    out = []
    with create_session() as session:
        runs = session.scalars(select(DagRun).where(  # queued: the scheduler starts it now
            DagRun.dag_id.in_(SYNC_DAGS), DagRun.state.in_(("queued", "running")))
            .order_by(DagRun.queued_at)).all()
        for run in runs:
            tis = session.scalars(select(TaskInstance).where(
                TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id)).all()
            out.append(RunningRun(
                run.dag_id, run.run_id, str(run.state), run.start_date,
                sum(1 for ti in tis if ti.state in DONE_STATES), len(tis),
                sorted(_step(ti) for ti in tis if ti.state in ("running", "up_for_retry",
                                                                "queued"))))
    return out


@dataclass
class FailedTask:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int

    @property
    def label(self) -> str:
        return f"{self.task_id}[{self.map_index}]" if self.map_index >= 0 else self.task_id

    @property
    def airflow_url(self) -> str:
        return task_log_url(self.dag_id, self.run_id, self.task_id, self.map_index,
                            self.try_number)


def failed_task(run_key: str | None) -> FailedTask | None:
    """The task that failed the sync run ``run_key`` ("dag_id:run_id"), its last try."""
    if not run_key or ":" not in run_key:
        return None
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag_id, run_id = run_key.split(":", 1)
    with create_session() as session:
        ti = session.scalars(select(TaskInstance).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id,
            TaskInstance.state == "failed").order_by(TaskInstance.end_date).limit(1)).first()
        if ti is None:
            return None
        return FailedTask(dag_id, run_id, ti.task_id, ti.map_index, ti.try_number)


def task_log_lines(failed: FailedTask) -> list[str]:
    """That try's log as Airflow's own log reader gives it (local file or the worker's log
    server), one line per event: "time [level] message", the trace after it."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.log.log_reader import TaskLogReader
    from airflow.utils.session import create_session
    from sqlalchemy import select
    from sqlalchemy.orm import joinedload

    with create_session() as session:
        ti = session.scalars(select(TaskInstance).where(
            TaskInstance.dag_id == failed.dag_id, TaskInstance.run_id == failed.run_id,
            TaskInstance.task_id == failed.task_id, TaskInstance.map_index == failed.map_index)
            .options(joinedload(TaskInstance.dag_run))).first()
        if ti is None:
            return []
        messages, _ = TaskLogReader().read_log_chunks(ti, failed.try_number,
                                                      {"download_logs": True})
        lines = []
        for message in messages:
            extra = message.model_extra or {}
            when = f"{message.timestamp:%Y-%m-%d %H:%M:%S} " if message.timestamp else ""
            level = f"[{extra['level']}] " if extra.get("level") else ""
            lines.append(f"{when}{level}{message.event}")
            for error in extra.get("error_detail") or []:  # the exception, as Airflow keeps it
                for frame in error.get("frames") or []:
                    lines.append(f"  {frame.get('filename')}:{frame.get('lineno')} in "
                                 f"{frame.get('name')}")
                lines.append(f"{error.get('exc_type')}: {error.get('exc_value')}")
        return lines


def next_cycle() -> tuple[datetime | None, bool | None]:
    """When the scheduler creates the next incremental run, and whether the DAG is paused."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        dag = session.get(DagModel, INCREMENTAL_DAG)
        if dag is None:
            return None, None
        return dag.next_dagrun_create_after, dag.is_paused


def dag_run(dag_id: str, run_id: str) -> dict | None:
    """One run's state and note (a sync-now run's outcome as Airflow has it)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id,
                                                   DagRun.run_id == run_id)).first()
        if run is None:
            return None
        return {"state": str(run.state), "note": run.note, "url": run_url(dag_id, run_id),
                "run_key": f"{dag_id}:{run_id}"}


def is_paused(dag_id: str) -> bool | None:
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        dag = session.get(DagModel, dag_id)
        return None if dag is None else bool(dag.is_paused)


def trigger_sync_now(person_id: int, user_name: str) -> str:
    """Trigger ``salesforce_sync_now`` for one person, as the UI's Trigger button would; returns
    the run id."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType

    with create_session() as session:
        run = trigger_dag(SYNC_NOW_DAG, triggered_by=DagRunTriggeredByType.UI,
                          triggering_user_name=user_name,
                          conf={"person_ids": [person_id], "emails": []},
                          note=f"Sync now from the console for person {person_id}",
                          session=session)
        return run.run_id


def backfill_initial_copy(from_date: datetime, to_date: datetime, user_name: str) -> int:
    """A backfill of the initial copy: one run per month from ``from_date`` to ``to_date``
    (logical dates, inclusive) that has no run yet (Airflow's *Missing Runs*); returns the
    backfill's id."""
    from airflow.models.backfill import ReprocessBehavior, _create_backfill

    backfill = _create_backfill(dag_id=INITIAL_DAG, from_date=from_date, to_date=to_date,
                                max_active_runs=2, reverse=False, dag_run_conf=None,
                                triggering_user_name=user_name,
                                reprocess_behavior=ReprocessBehavior.NONE)
    return backfill.id

"""A real Airflow 3.3 stack (api-server, scheduler, dag-processor[, triggerer]) for tests.

Not a test module: import it from tests that must go through the scheduler (backfills, triggers)::

    from tests.airflow_stack import AirflowStack

    with AirflowStack(dags_folder=tmp / "dags", home=tmp / "home", pools={"salesforce_api": 2}) as stack:
        run_id = stack.trigger("my_dag", conf={"mode": "full"})
        [run] = stack.wait_runs("my_dag", run_ids=[run_id], timeout=30)
        assert run["state"] == "success"

Design (see shared/reference/airflow-3.3-recipes.md sections 1-4):

* The stack gets its OWN environment, built from scratch for its subprocesses: every inherited
  ``AIRFLOW*`` variable (tests/conftest.py sets several for ``dag.test()``) is dropped, then the stack's
  settings and the caller's ``env`` extras are applied. ``os.environ`` of the test process is never touched.
* SQLite metadata DB in ``home`` + LocalExecutor (works in 3.3), parallelism 4, idle sleep 0.1 s,
  a free API port with a matching ``[api] base_url`` (workers derive the Execution API URL from it),
  ``SIMPLE_AUTH_MANAGER_ALL_ADMINS=True`` so REST calls need no token.
* ``airflow db migrate`` once per process; later stacks copy the migrated SQLite file (saves ~9 s each).
* Pools are created over REST once the api-server is up (no ~6 s CLI start-up per pool).
* Each component runs in its own session/process group (``start_new_session=True``) and is stopped with
  TERM, then KILL after a grace period, on ``__exit__``, on a failed start, and at interpreter exit.
  On Linux the group leaders also get ``PR_SET_PDEATHSIG=SIGTERM`` so a killed pytest does not leave a
  stack behind.
* Component output goes to ``home/stack-logs/<component>.log``; failure messages include their tails.
* ``executor="CeleryExecutor"`` (PostgreSQL metadata only): ``celery_workers`` workers
  (``airflow celery worker``, ``worker-1``, ``worker-2``, ...) with a Redis broker and result backend
  (``broker_url``, default ``$SFSYNC_TEST_REDIS_URL`` or ``redis://127.0.0.1:6379/0``). Each stack gets
  its own default queue (``[operators] default_queue``), so stacks sharing one Redis never take each
  other's tasks. Every worker reports its own name as the task instances' ``hostname``
  (``[core] hostname_callable`` = ``include.sfsync.airflow_glue.worker_hostname``), skips the log
  server (the api-server reads the shared ``home/logs``) and is ready once Celery says so.

Measured on the 2-core dev machine: start-up 13-16 s (migrate ~4.5 s, then health), ~22 s with both cores
busy; manual trigger -> run success 0.5-1.5 s; the first task of a fresh stack spends ~4 s warming up its
worker. Known behaviour to design tests around:

* SQLite + concurrent scheduler: ``POST /backfills`` sometimes answers ``503 Database is locked``; backfill
  and trigger POSTs are retried (``lock_retries`` counts it).
* A backfill's ``completed_at`` is set by a 30 s scheduler timer: wait for its runs instead.
* A manual run triggered with ``logical_date=None`` has no ``data_interval_start/end`` in the task context.
* Backfill run ids carry the run_after (interval end): logical date 2025-03-01 of a daily
  ``CronDataIntervalTimetable`` gives ``backfill__2025-03-02T00:00:00+00:00``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]

# Fixed, test-only secrets (a >= 64-byte JWT secret avoids InsecureKeyLengthWarning).
FERNET_KEY = "c2ZzeW5jLXN0YWNrLWZlcm5ldC1rZXktMzItYnl0ZXM="  # urlsafe b64 of 32 bytes
JWT_SECRET = "sfsync-airflow-stack-" + "s" * 64

TERMINAL_RUN_STATES = frozenset({"success", "failed"})
IMPORT_ERROR_GRACE = 5.0  # s: wait_dag() fails this long after the first import error shows up

_LIVE_STACKS: set[AirflowStack] = set()
_LIVE_LOCK = threading.Lock()
_MIGRATED_DB: Path | None = None  # a freshly migrated SQLite file, copied into later stacks' homes
_MIGRATE_LOCK = threading.Lock()


class AirflowStackError(RuntimeError):
    """The stack failed to start, a component died, or a wait timed out (message has log tails)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _iso(value: date | datetime | str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.isoformat() + "Z"
        return value.isoformat()
    return f"{value.isoformat()}T00:00:00Z"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class AirflowStack:
    """A running Airflow stack for one test module/session. Use as a context manager.

    Parameters
    ----------
    dags_folder: folder with the DAG files (the ``dags-folder`` bundle).
    home: a fresh, empty directory: AIRFLOW_HOME (airflow.db, logs/, stack-logs/).
    env: extra environment for every component and for :meth:`cli` (``AIRFLOW_CONN_*`` JSON connections,
        ``AIRFLOW_VAR_*``, ``REQUESTS_CA_BUNDLE``, ``AIRFLOW__SECTION__KEY`` overrides, ...). ``PYTHONPATH``
        defaults to the project root (so ``include.*`` imports); a given ``PYTHONPATH`` replaces it.
    pools: pool name -> slots, created before :meth:`start` returns.
    variables: Airflow Variables (key -> value) created in the metadata database before the pools:
        a task in a pool cannot start before them.
    dag_ids: DAGs to wait for at start-up. ``None``: wait until the dag-processor has stored at least one
        DAG or import error. ``()``: don't wait.
    plugins_folder: defaults to an empty ``home/plugins`` (the project's UI plugin is imported by every
        component and every task process: pass ``ROOT / "plugins"`` only if the DAGs need it).
    triggerer: also start a triggerer (only for deferrable tasks).
    executor: ``LocalExecutor`` (default) or ``CeleryExecutor`` (needs ``metadata_url``).
    celery_workers: how many Celery workers (CeleryExecutor), ``worker_concurrency`` task slots each.
    broker_url: the Celery broker and result backend (Redis).
    celery_imports: modules each Celery worker imports once before it forks its pool (``[celery]
        imports``), instead of every task process importing them again.
    users: real logins instead of "everyone is admin": user name -> (role, password), roles of the
        SimpleAuthManager (viewer, user, op, admin). The stack's own REST calls log in as the
        first admin.
    startup_timeout: budget in seconds for migrate + start + health + DAG parsing.
    """

    def __init__(
        self,
        dags_folder: str | os.PathLike,
        home: str | os.PathLike,
        *,
        env: Mapping[str, str] | None = None,
        pools: Mapping[str, int] | None = None,
        variables: Mapping[str, str] | None = None,
        dag_ids: Iterable[str] | None = None,
        plugins_folder: str | os.PathLike | None = None,
        triggerer: bool = False,
        startup_timeout: float = 90.0,
        stop_grace: float = 10.0,
        metadata_url: str | None = None,
        users: Mapping[str, tuple[str, str]] | None = None,
        executor: str = "LocalExecutor",
        celery_workers: int = 2,
        worker_concurrency: int = 2,
        broker_url: str | None = None,
        celery_imports: Iterable[str] = (),
    ):
        # A PostgreSQL metadata database: Airflow on SQLite can crash its scheduler when a
        # backfill is created under concurrent access (the api-server answers 503 and rolls
        # back runs the scheduler has already read).
        self.metadata_url = metadata_url
        if executor not in ("LocalExecutor", "CeleryExecutor"):
            raise ValueError(f"executor {executor!r}: LocalExecutor or CeleryExecutor")
        if executor == "CeleryExecutor" and not metadata_url:
            raise ValueError("CeleryExecutor needs a PostgreSQL metadata_url")
        self.executor = executor
        self.worker_names = ([f"worker-{i}" for i in range(1, celery_workers + 1)]
                             if executor == "CeleryExecutor" else [])
        self.worker_concurrency = worker_concurrency
        self.celery_imports = list(celery_imports)
        self.broker_url = broker_url or os.environ.get("SFSYNC_TEST_REDIS_URL",
                                                       "redis://127.0.0.1:6379/0")
        self.queue = f"sfsync-stack-{uuid.uuid4().hex[:12]}"
        self.dags_folder = Path(dags_folder).resolve()
        self.home = Path(home).resolve()
        self.pools = dict(pools or {})
        self.variables = dict(variables or {})
        self.dag_ids = None if dag_ids is None else list(dag_ids)
        self.with_triggerer = triggerer
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_dir = self.home / "stack-logs"
        self.plugins_folder = Path(plugins_folder).resolve() if plugins_folder else self.home / "plugins"
        self.procs: dict[str, subprocess.Popen] = {}
        self.timings: dict[str, float] = {}  # seconds: migrate, health, dags, pools, total
        self.lock_retries = 0  # POSTs retried because SQLite was locked (see _post_retrying_locked)
        self.session = requests.Session()
        self.users = dict(users or {})
        self.env = self._build_env(env or {})

    # ------------------------------------------------------------------ environment
    def _build_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.upper().startswith(("AIRFLOW", "_AIRFLOW", "PYTEST_"))}
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
        env["PYTHONPATH"] = str(ROOT)
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.plugins_folder),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata_url
            or f"sqlite:///{self.home}/airflow.db",
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__FERNET_KEY": FERNET_KEY,
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API_AUTH__JWT_SECRET": JWT_SECRET,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base_url,  # mandatory when the port changes
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.1",
            "AIRFLOW__SCHEDULER__CATCHUP_BY_DEFAULT": "False",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            # not Airflow's fixed 8793/8794: another Airflow on this machine may hold them
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        })
        if self.executor == "CeleryExecutor":
            env.update({
                "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": self.broker_url,
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",  # no process pool in the scheduler
                # Imported once by each worker before it forks its pool, not by every task.
                "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG": json.dumps(
                    {"imports": list(self.celery_imports)}),
            })
        if self.users:
            env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "False"
            env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = ",".join(
                f"{name}:{role}" for name, (role, _password) in self.users.items())
        env.update({str(k): str(v) for k, v in extra.items()})
        return env

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> AirflowStack:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> AirflowStack:
        t0 = time.monotonic()
        deadline = t0 + self.startup_timeout
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self.plugins_folder.mkdir(parents=True, exist_ok=True)
        with _LIVE_LOCK:
            _LIVE_STACKS.add(self)
        try:
            self._migrate(deadline)
            self.timings["migrate"] = time.monotonic() - t0
            if self.users:  # fixed passwords: the auth manager reads this file at start
                (self.home / "simple_auth_manager_passwords.json.generated").write_text(
                    json.dumps({name: password for name, (_role, password) in self.users.items()}))
            components = ["api-server", "scheduler", "dag-processor"]
            if self.with_triggerer:
                components.append("triggerer")
            for name in components:
                self._spawn(name)
            for name in self.worker_names:
                self._spawn(name, ["celery", "worker", "--celery-hostname", f"{name}@{self.queue}",
                                   "--queues", self.queue,
                                   "--concurrency", str(self.worker_concurrency),
                                   "--skip-serve-logs", "--without-gossip", "--without-mingle"],
                            env={"SFSYNC_WORKER_HOSTNAME": name, "AIRFLOW__CORE__HOSTNAME_CALLABLE":
                                 "include.sfsync.airflow_glue.worker_hostname"})
            self._wait_healthy(deadline)
            self._wait_workers(deadline)
            self.timings["health"] = time.monotonic() - t0
            if self.users:
                admin = next(n for n, (role, _p) in self.users.items() if role == "admin")
                self.session.headers["Authorization"] = "Bearer " + self.token(admin)
            for key, value in self.variables.items():
                self.api("POST", "/variables", json={"key": key, "value": value})
            self._create_pools()
            self.timings["pools"] = time.monotonic() - t0
            if self.dag_ids is None:
                self._wait_any_dag(deadline)
            for dag_id in self.dag_ids or ():
                self.wait_dag(dag_id, timeout=max(1.0, deadline - time.monotonic()))
            self.timings["dags"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - t0
        return self

    def _migrate(self, deadline: float) -> None:
        global _MIGRATED_DB
        db = self.home / "airflow.db"
        with _MIGRATE_LOCK:
            if (self.metadata_url is None and _MIGRATED_DB is not None and _MIGRATED_DB.exists()
                    and not db.exists()):
                shutil.copyfile(_MIGRATED_DB, db)
                return
            proc = self._run([sys.executable, "-m", "airflow", "db", "migrate"],
                             timeout=max(5.0, deadline - time.monotonic()))
            (self.log_dir / "db-migrate.log").write_text(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                raise AirflowStackError(f"airflow db migrate failed (exit {proc.returncode}):\n"
                                        f"{_tail(self.log_dir / 'db-migrate.log')}")
            if self.metadata_url is None and not any(db.parent.glob("airflow.db-*")):
                # no WAL/journal left: the file is complete
                cache = Path(tempfile.mkdtemp(prefix="sfsync-airflow-db-")) / "airflow.db"
                shutil.copyfile(db, cache)
                _MIGRATED_DB = cache

    def _run(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(cmd, env=self.env, cwd=self.home, capture_output=True, text=True,
                                  timeout=timeout, start_new_session=True)
        except subprocess.TimeoutExpired as exc:
            raise AirflowStackError(f"{' '.join(cmd[2:])} timed out after {timeout:.0f}s:\n"
                                    f"{exc.stdout or ''}\n{exc.stderr or ''}") from None

    def _spawn(self, component: str, args: list[str] | None = None,
               env: Mapping[str, str] | None = None) -> None:
        log = open(self.log_dir / f"{component}.log", "ab")  # noqa: SIM115 - closed in stop()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "airflow", *(args or [component])],
                env={**self.env, **(env or {})}, cwd=self.home,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_pdeathsig if sys.platform == "linux" else None)
        finally:
            log.close()  # the child has its own copy of the descriptor
        self.procs[component] = proc

    def stop(self) -> None:
        """TERM every process group, wait up to ``stop_grace`` s, then KILL what is left. Idempotent."""
        procs = [p for p in self.procs.values() if p.pid]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        # The group may outlive its leader (api-server/LocalExecutor workers): KILL the whole group.
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        # Orphaned group members die (and get reaped by init) asynchronously: wait until the groups are gone.
        deadline = time.monotonic() + 5
        while any(_group_exists(p.pid) for p in procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.session.close()
        with _LIVE_LOCK:
            _LIVE_STACKS.discard(self)

    # ------------------------------------------------------------------ diagnostics
    def logs(self, lines: int = 40) -> str:
        """Tails of every component log (for failure messages)."""
        parts = []
        for name in self.procs:
            proc = self.procs[name]
            status = "running" if proc.poll() is None else f"EXITED {proc.returncode}"
            parts.append(f"----- {name} (pid {proc.pid}, {status}) -----\n"
                         f"{_tail(self.log_dir / f'{name}.log', lines)}")
        return "\n".join(parts)

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        if dead:
            raise AirflowStackError(f"Airflow component(s) exited: {dead}\n{self.logs()}")

    def _fail(self, message: str) -> AirflowStackError:
        return AirflowStackError(f"{message}\n{self.logs()}")

    # ------------------------------------------------------------------ start-up waits
    def _wait_healthy(self, deadline: float) -> None:
        wanted = ["metadatabase", "scheduler", "dag_processor"]
        if self.with_triggerer:
            wanted.append("triggerer")
        last: Any = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                resp = self.session.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
                last = resp.json() if resp.ok else f"HTTP {resp.status_code}"
                if resp.ok and all((last.get(k) or {}).get("status") == "healthy" for k in wanted):
                    return
            except (requests.RequestException, ValueError) as exc:
                last = repr(exc)
            time.sleep(0.5)
        raise self._fail(f"Airflow not healthy within {self.startup_timeout:.0f}s (last health: {last})")

    def _wait_workers(self, deadline: float) -> None:
        """Every Celery worker has connected to the broker and consumes the stack's queue."""
        waiting = list(self.worker_names)
        while waiting:
            self.check_alive()
            waiting = [n for n in waiting
                       if f"{n}@{self.queue} ready" not in _tail(self.log_dir / f"{n}.log", 200)]
            if waiting and time.monotonic() > deadline:
                raise self._fail(f"Celery worker(s) {waiting} not ready within "
                                 f"{self.startup_timeout:.0f}s (broker {self.broker_url})")
            if waiting:
                time.sleep(0.3)

    def _wait_any_dag(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            self.check_alive()
            dags = self.api("GET", "/dags", params={"limit": 1}).json()["total_entries"]
            errors = self.import_errors()
            if dags or errors:
                return
            time.sleep(0.5)
        raise self._fail(f"no DAG parsed from {self.dags_folder} within {self.startup_timeout:.0f}s")

    def _create_pools(self) -> None:
        for name, slots in self.pools.items():
            body = {"name": name, "slots": int(slots), "description": "created by AirflowStack",
                    "include_deferred": False}
            resp = self.api("POST", "/pools", json=body, check=False)
            if resp.status_code == 409:
                resp = self.api("PATCH", f"/pools/{name}", json=body, check=False)
            if not resp.ok:
                raise self._fail(f"creating pool {name!r} failed: HTTP {resp.status_code} {resp.text}")

    # ------------------------------------------------------------------ REST helpers
    def api(self, method: str, path: str, *, check: bool = True, timeout: float = 30,
            **kw: Any) -> requests.Response:
        """``requests`` call against ``{base_url}/api/v2{path}``; raises with the body on HTTP errors."""
        url = f"{self.base_url}/api/v2/{path.lstrip('/')}"
        resp = self.session.request(method, url, timeout=timeout, **kw)
        if check and not resp.ok:
            raise AirflowStackError(f"{method} {path} -> HTTP {resp.status_code}: {resp.text[:2000]}")
        return resp

    def token(self, user: str) -> str:
        """A JWT for one of ``users`` (``POST /auth/token``)."""
        resp = self.session.post(f"{self.base_url}/auth/token", timeout=30, json={
            "username": user, "password": self.users[user][1]})
        if not resp.ok:
            raise AirflowStackError(f"login as {user} -> HTTP {resp.status_code}: {resp.text}")
        return resp.json()["access_token"]

    def import_errors(self) -> dict[str, str]:
        """filename -> stack trace of the dag-processor's import errors."""
        items = self.api("GET", "/importErrors", params={"limit": 100}).json()["import_errors"]
        return {e["filename"]: e["stack_trace"] for e in items}

    def wait_dag(self, dag_id: str, timeout: float = 60) -> dict:
        """Wait until the dag-processor stored ``dag_id``; fails early on an import error."""
        deadline = time.monotonic() + timeout
        errors_seen_at = None
        while True:
            self.check_alive()
            resp = self.api("GET", f"/dags/{dag_id}", check=False)
            if resp.ok:
                return resp.json()
            now = time.monotonic()
            errors = self.import_errors()
            if errors and errors_seen_at is None:
                errors_seen_at = now  # the DAG may still come from another file: give it a few seconds
            if errors and now - errors_seen_at > IMPORT_ERROR_GRACE:
                raise AirflowStackError(f"DAG {dag_id!r} not loaded; import errors:\n"
                                        + "\n".join(f"{f}:\n{t}" for f, t in errors.items()))
            if now > deadline:
                known = [d["dag_id"] for d in self.api("GET", "/dags", params={"limit": 100}).json()["dags"]]
                raise self._fail(f"DAG {dag_id!r} not parsed within {timeout:.0f}s (known DAGs: {known}; "
                                 f"import errors: {errors or 'none'}; NB files not mentioning both 'airflow' "
                                 f"and 'dag' are skipped by DAG discovery safe mode)")
            time.sleep(0.3)

    def unpause(self, dag_id: str) -> dict:
        return self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False}).json()

    def pause(self, dag_id: str) -> dict:
        return self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": True}).json()

    def trigger(self, dag_id: str, conf: dict | None = None,
                logical_date: date | datetime | str | None = None, run_id: str | None = None) -> str:
        """Create a manual run (the scheduler runs it); returns its run id."""
        body: dict[str, Any] = {"logical_date": None if logical_date is None else _iso(logical_date),
                                "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self._post_retrying_locked(f"/dags/{dag_id}/dagRuns", body).json()["dag_run_id"]

    def _post_retrying_locked(self, path: str, body: dict, timeout: float = 30) -> requests.Response:
        """POST, retried while SQLite reports ``database is locked``.

        On SQLite the api-server maps a busy DB during backfill creation to ``503 Database is locked.
        Backfill creation is not supported on SQLite under concurrent access`` (the scheduler writes
        every 0.1 s); the transaction was rolled back, so retrying is safe. ``lock_retries`` counts them.
        """
        deadline = time.monotonic() + timeout
        delay = 0.2
        while True:
            resp = self.api("POST", path, json=body, check=False)
            locked = resp.status_code in (500, 503) and "database is locked" in resp.text.lower()
            if not locked or time.monotonic() + delay > deadline:
                break
            self.lock_retries += 1
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        if not resp.ok:
            raise AirflowStackError(f"POST {path} -> HTTP {resp.status_code}: {resp.text[:2000]}")
        return resp

    def backfill(self, dag_id: str, from_date: date | datetime | str, to_date: date | datetime | str,
                 conf: dict | None = None, max_active_runs: int = 10, reprocess_behavior: str = "none",
                 run_backwards: bool = False) -> int:
        """``POST /api/v2/backfills`` (bounds inclusive, the DAG must be unpaused); returns the backfill id.

        The backfill's dag runs are created by this call (state queued), so :meth:`wait_runs` with
        ``run_type="backfill"`` sees all of them right away. The backfill's ``completed_at`` is set by a
        scheduler timer that runs every 30 s (hard-coded), so don't wait for it.
        """
        body = {"dag_id": dag_id, "from_date": _iso(from_date), "to_date": _iso(to_date),
                "run_backwards": run_backwards, "dag_run_conf": conf or {},
                "reprocess_behavior": reprocess_behavior, "max_active_runs": max_active_runs}
        return self._post_retrying_locked("/backfills", body).json()["id"]

    def backfill_info(self, backfill_id: int) -> dict:
        return self.api("GET", f"/backfills/{backfill_id}").json()

    def dag_runs(self, dag_id: str, run_type: str | None = None) -> list[dict]:
        params: dict[str, Any] = {"limit": 100, "order_by": "run_after"}
        if run_type:
            params["run_type"] = run_type
        return self.api("GET", f"/dags/{dag_id}/dagRuns", params=params).json()["dag_runs"]

    def wait_runs(self, dag_id: str, run_ids: Iterable[str] | None = None, *, run_type: str | None = None,
                  count: int | None = None, timeout: float = 60, poll: float = 0.2,
                  states: Iterable[str] = TERMINAL_RUN_STATES) -> list[dict]:
        """Wait until the selected runs are all in ``states`` (default: success/failed) and return them.

        Select by ``run_ids`` or by ``run_type`` (``backfill``, ``manual``, ``scheduled``); ``count``: how
        many runs to expect (with ``run_type``; default: at least one). Returns the REST dag-run dicts
        ordered by ``run_after`` (keys: dag_run_id, state, run_type, logical_date, data_interval_start/end,
        conf, ...).
        """
        wanted_ids = None if run_ids is None else list(run_ids)
        if wanted_ids is None and run_type is None:
            raise ValueError("give run_ids or run_type")
        wanted_states = set(states)
        deadline = time.monotonic() + timeout
        runs: list[dict] = []
        while True:
            runs = self.dag_runs(dag_id, run_type=run_type)
            if wanted_ids is not None:
                by_id = {r["dag_run_id"]: r for r in runs}
                runs = [by_id[i] for i in wanted_ids if i in by_id]
                enough = len(runs) == len(wanted_ids)
            else:
                enough = len(runs) >= (count or 1)
            if enough and all(r["state"] in wanted_states for r in runs):
                return runs
            if time.monotonic() > deadline:
                summary = [(r["dag_run_id"], r["state"]) for r in runs]
                raise self._fail(f"{dag_id}: runs not in {sorted(wanted_states)} within {timeout:.0f}s "
                                 f"(want ids={wanted_ids} run_type={run_type} count={count}; have {summary})")
            self.check_alive()
            time.sleep(poll)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                        params={"limit": 1000}).json()["task_instances"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1,
                 map_index: int = -1) -> str:
        """The task's log file (JSON lines) from ``home/logs``."""
        base = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            base = base / f"map_index={map_index}"
        path = base / f"attempt={try_number}.log"
        if not path.exists():
            available = sorted(str(p.relative_to(self.home / "logs"))
                               for p in (self.home / "logs").glob(f"dag_id={dag_id}/**/*.log"))
            raise FileNotFoundError(f"{path} does not exist; logs for {dag_id}: {available}")
        return path.read_text(errors="replace")

    def task_log_events(self, *args, **kwargs) -> list[str]:
        """The ``event`` field of each JSON line of :meth:`task_log`."""
        events = []
        for line in self.task_log(*args, **kwargs).splitlines():
            with contextlib.suppress(ValueError):
                events.append(str(json.loads(line).get("event", "")))
        return events

    # ------------------------------------------------------------------ CLI
    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """``airflow <args>`` with the stack's environment (~6 s start-up each: batch your calls)."""
        proc = self._run([sys.executable, "-m", "airflow", *map(str, args)], timeout=timeout)
        if check and proc.returncode != 0:
            raise AirflowStackError(f"airflow {' '.join(map(str, args))} failed (exit {proc.returncode}):\n"
                                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc


def safe_run_id(run_id: str) -> str:
    """A run id as a file-name-friendly string (for per-run output files written by test DAGs)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)


@atexit.register
def _stop_leftovers() -> None:  # pragma: no cover - safety net when a stack was never exited
    with _LIVE_LOCK:
        stacks = list(_LIVE_STACKS)
    for stack in stacks:
        with contextlib.suppress(Exception):
            stack.stop()
    if _MIGRATED_DB is not None:
        shutil.rmtree(_MIGRATED_DB.parent, ignore_errors=True)

"""Static checks over every DAG in dags/: imports, policy (tags, owner, retries, docs), pools, parse cost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DAGS_DIR = ROOT / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))
# Modules a DAG file must not import at parse time (the dag-processor re-parses every file often).
HEAVY_MODULES = ("pandas", "simple_salesforce")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


@pytest.fixture(scope="module")
def declared_pools() -> set[str]:
    settings = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())
    return {pool["pool_name"] for pool in settings["airflow"].get("pools") or []} | {"default_pool"}


def test_dags_folder_has_dags():
    assert DAG_FILES, f"no DAG files in {DAGS_DIR}"


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_every_dag_file_defines_a_dag(dagbag):
    files_with_dags = {Path(dag.fileloc).name for dag in dagbag.dags.values()}
    assert {p.name for p in DAG_FILES} <= files_with_dags


def test_dag_policy(dagbag):
    problems = []
    for dag_id, dag in sorted(dagbag.dags.items()):
        if not dag.tags:
            problems.append(f"{dag_id}: no tags")
        if not (dag.default_args or {}).get("owner"):
            problems.append(f"{dag_id}: no owner in default_args")
        if not (dag.doc_md or "").strip():
            problems.append(f"{dag_id}: no doc_md")
        for task in dag.tasks:
            if (task.retries or 0) < 2:
                problems.append(f"{dag_id}.{task.task_id}: retries={task.retries} (need >= 2)")
    assert problems == []


def test_every_task_announces_its_retries(dagbag):
    # airflow_glue.announce_retry on each task's function (or its operator's execute): a retry
    # then logs "retry 1 of 3 in 27 s: <cause>" before the stack trace
    def announces(task) -> bool:
        function = getattr(task, "python_callable", None) or (
            getattr(task, "partial_kwargs", None) or {}).get("python_callable")
        execute = getattr(getattr(task, "operator_class", type(task)), "execute", None)
        return any(getattr(f, "announces_retry", False) for f in (function, execute))

    silent = [(dag_id, task.task_id) for dag_id, dag in sorted(dagbag.dags.items())
              for task in dag.tasks if not announces(task)]
    assert silent == [], f"tasks without @announce_retry: {silent}"


def test_pools_declared_in_airflow_settings(dagbag, declared_pools):
    # A task whose pool does not exist stays "scheduled" forever, and dag.test() ignores pools.
    undeclared = [(dag_id, task.task_id, task.pool) for dag_id, dag in sorted(dagbag.dags.items())
                  for task in dag.tasks if task.pool not in declared_pools]
    assert undeclared == [], f"pools missing from airflow_settings.yaml: {undeclared}"


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_has_no_heavy_imports(dag_file):
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('dag_under_test', {str(dag_file)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        f"print(json.dumps([m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert heavy == [], f"{dag_file.name} imports {heavy} at parse time; import them inside tasks"


def test_ruff_air3_dags_and_plugins():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "AIR3",
                           "dags", "plugins"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr

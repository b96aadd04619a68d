"""`make airflow` (scripts/run_airflow.sh) as a user runs it: it refuses Airflow's own ports,
says "ready" only once the API server reports healthy, and Ctrl-C stops every process it
started."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path, **extra) -> dict:
    # a clean environment, as in a user's shell: none of the test suite's Airflow settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(SFSYNC_AIRFLOW_HOME=str(tmp_path / "airflow"), EMULATOR_DATA=str(tmp_path / "emu"),
               EMULATOR_PORT=str(_free_port()), **extra)
    return env


@pytest.mark.parametrize("port", ["8793", "8794"])
def test_airflows_own_log_server_ports_are_refused(port, tmp_path):
    proc = subprocess.run(["bash", "scripts/run_airflow.sh"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=_env(tmp_path, AIRFLOW_PORT=port))
    assert proc.returncode == 2
    assert f"AIRFLOW_PORT={port} is one of Airflow's own log-server ports" in proc.stderr
    assert not (tmp_path / "emu").exists()  # refused before anything started


def test_ready_means_healthy_and_ctrl_c_stops_everything(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(["bash", "scripts/run_airflow.sh"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=_env(tmp_path, AIRFLOW_PORT=str(port)), start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        while not any("ready: http://localhost" in line for line in lines):
            assert proc.poll() is None, "".join(lines[-40:])
            assert time.monotonic() < deadline, "".join(lines[-40:])
            started |= {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
            time.sleep(0.5)
        health = json.load(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=10))
        assert all(health[p]["status"] == "healthy"
                   for p in ("metadatabase", "scheduler", "dag_processor")), health
        started |= {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        assert len(started) >= 4  # emulator, standalone, api-server, scheduler, ...
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
        proc.wait(timeout=90)
    reader.join(timeout=10)
    time.sleep(1)
    alive = [p for p in started if psutil.pid_exists(p)
             and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == [], [psutil.Process(p).cmdline() for p in alive]
    assert any("stopping Airflow" in line for line in lines), "".join(lines[-20:])

"""Run the Salesforce emulator as a child process (used by scripts/demo.py and the tests).

The emulator (``python -m include.salesforce_emulator``) prints one line to stdout once it is
listening::

    SALESFORCE_EMULATOR {"instance_url": ..., "login_domain": ..., "username": ..., "password": ...,
                         "security_token": ..., "consumer_key": ..., "consumer_secret": ...,
                         "ca_bundle": ..., "control_url": ...}

:func:`start_emulator` starts it, waits for that line and returns an :class:`EmulatorProcess`
(a context manager) whose ``info`` holds the parsed JSON::

    with start_emulator(data_dir=tmp_path / "emu") as emu:
        os.environ["REQUESTS_CA_BUNDLE"] = emu.info["ca_bundle"]
        ...

This module only uses the standard library and does not import the emulator itself.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

READY_PREFIX = "SALESFORCE_EMULATOR "
INFO_KEYS = ("instance_url", "login_domain", "username", "password", "security_token", "consumer_key",
             "consumer_secret", "ca_bundle", "control_url")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_COMMAND = (sys.executable, "-m", "include.salesforce_emulator")


class EmulatorStartError(RuntimeError):
    """The emulator died, timed out or printed a malformed ready line before it was ready."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class EmulatorProcess:
    """A running emulator child process. ``info`` is the ready line's JSON."""

    def __init__(self, popen: subprocess.Popen, port: int, data_dir: Path):
        self.popen = popen
        self.port = port
        self.data_dir = data_dir
        self.info: dict[str, Any] = {}
        self.stdout_tail: deque[str] = deque(maxlen=200)
        self.stderr_tail: deque[str] = deque(maxlen=200)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate the emulator (SIGTERM, then SIGKILL after ``timeout`` s); return its exit code."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=timeout)
        return self.popen.returncode

    def output(self) -> str:
        """The last lines the emulator wrote to stdout and stderr (for error messages)."""
        parts = []
        if self.stdout_tail:
            parts.append("--- emulator stdout (tail) ---\n" + "".join(self.stdout_tail))
        if self.stderr_tail:
            parts.append("--- emulator stderr (tail) ---\n" + "".join(self.stderr_tail))
        return "\n".join(parts) or "(the emulator wrote nothing)"

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running() else f"exited {self.popen.returncode}"
        return f"<EmulatorProcess pid={self.pid} port={self.port} {state}>"


def _pump(stream, tail: deque[str], lines: queue.Queue | None) -> None:
    """Drain a pipe for the life of the process so the child never blocks on a full pipe."""
    for line in iter(stream.readline, ""):
        tail.append(line)
        if lines is not None:
            lines.put(line)
    stream.close()
    if lines is not None:
        lines.put(None)  # EOF


def parse_ready_line(line: str) -> dict[str, Any] | None:
    """The JSON of a ``SALESFORCE_EMULATOR {...}`` line, or None for any other line."""
    line = line.strip()
    if not line.startswith(READY_PREFIX.strip() + " "):
        return None
    try:
        info = json.loads(line[len(READY_PREFIX):])
    except json.JSONDecodeError as exc:
        raise EmulatorStartError(f"malformed ready line (not JSON: {exc}): {line!r}") from None
    if not isinstance(info, dict):
        raise EmulatorStartError(f"malformed ready line (not a JSON object): {line!r}")
    missing = [key for key in INFO_KEYS if key not in info]
    if missing:
        raise EmulatorStartError(f"ready line lacks {', '.join(missing)}: {line!r}")
    return info


def start_emulator(port: int | None = None, data_dir: Path | str | None = None, seed: str = "demo",
                   env: Mapping[str, str] | None = None, timeout: float = 60.0,
                   command: Sequence[str] | None = None) -> EmulatorProcess:
    """Start the emulator and wait until it prints its ready line.

    :param port: EMULATOR_PORT; a free port is picked when None.
    :param data_dir: EMULATOR_DATA; defaults to ``<project root>/.emulator``.
    :param seed: EMULATOR_SEED: ``demo``, ``empty``, a record count, or a profile with an optional
        size such as ``standard:50000`` (see ``seed.parse_spec``).
    :param env: extra environment variables for the child (on top of ``os.environ``).
    :param timeout: seconds to wait for the ready line.
    :param command: the command line; defaults to ``python -m include.salesforce_emulator``.
    :raises EmulatorStartError: the process exited, timed out, or printed a malformed ready line
        (the message includes the tail of its stdout and stderr); the process is stopped first.
    """
    port = port or free_port()
    data_dir = Path(data_dir) if data_dir is not None else PROJECT_ROOT / ".emulator"
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(PROJECT_ROOT), child_env.get("PYTHONPATH")]))
    child_env["PYTHONUNBUFFERED"] = "1"
    child_env.update({"EMULATOR_PORT": str(port), "EMULATOR_DATA": str(data_dir),
                      "EMULATOR_SEED": str(seed)})
    child_env.update(env or {})

    popen = subprocess.Popen(list(command or DEFAULT_COMMAND), cwd=PROJECT_ROOT, env=child_env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, bufsize=1)
    emu = EmulatorProcess(popen, port, data_dir)
    lines: queue.Queue = queue.Queue()
    pumps = [threading.Thread(target=_pump, args=(popen.stdout, emu.stdout_tail, lines), daemon=True),
             threading.Thread(target=_pump, args=(popen.stderr, emu.stderr_tail, None), daemon=True)]
    for pump in pumps:
        pump.start()

    def fail(reason: str) -> EmulatorStartError:
        emu.stop(timeout=5)
        for pump in pumps:  # let the pumps read what the process wrote last
            pump.join(timeout=2)
        return EmulatorStartError(f"Salesforce emulator {reason} (command: {' '.join(popen.args)}, "
                                  f"port {port}, data {data_dir})\n{emu.output()}")

    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise fail(f"printed no {READY_PREFIX.strip()} line within {timeout:g} s")
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if line is None:  # stdout closed: the process is exiting
            try:
                code = popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            raise fail(f"exited with code {code} before it was ready")
        try:
            info = parse_ready_line(line)
        except EmulatorStartError as exc:
            raise fail(str(exc)) from None
        if info is not None:
            emu.info = info
            return emu

"""start_emulator() against stand-in processes (the real emulator is tested in tests/emulator/)."""

from __future__ import annotations

import json
import sys
import time

import pytest

from include.salesforce_emulator.process import (
    INFO_KEYS,
    EmulatorStartError,
    free_port,
    parse_ready_line,
    port_open,
    start_emulator,
)

# A stand-in emulator: listens on EMULATOR_PORT, chats a little, then prints the ready line.
FAKE_EMULATOR = r"""
import json, os, socket, sys, time
sock = socket.socket(); sock.bind(("127.0.0.1", int(os.environ["EMULATOR_PORT"]))); sock.listen()
print("loading seed", os.environ["EMULATOR_SEED"], flush=True)
print("some log line on stderr", file=sys.stderr, flush=True)
info = {k: f"{k}-value" for k in INFO_KEYS_PLACEHOLDER}
info["instance_url"] = "https://127.0.0.1:" + os.environ["EMULATOR_PORT"]
info["ca_bundle"] = os.path.join(os.environ["EMULATOR_DATA"], "tls", "ca.pem")
info["seed"] = os.environ["EMULATOR_SEED"]
print("SALESFORCE_EMULATOR " + json.dumps(info), flush=True)
for i in range(100000):  # keeps logging after ready: the pipe must keep being drained
    print("request", i, "x" * 100)
time.sleep(600)
""".replace("INFO_KEYS_PLACEHOLDER", repr(INFO_KEYS))


def test_start_parses_ready_line_and_stop(tmp_path):
    port = free_port()
    with start_emulator(port=port, data_dir=tmp_path / "emu", seed="empty",
                        command=[sys.executable, "-c", FAKE_EMULATOR], timeout=30) as emu:
        assert emu.running()
        assert emu.port == port
        assert emu.info["instance_url"] == f"https://127.0.0.1:{port}"
        assert emu.info["ca_bundle"] == str(tmp_path / "emu" / "tls" / "ca.pem")
        assert emu.info["seed"] == "empty"
        assert set(INFO_KEYS) <= set(emu.info)
        assert port_open(port)
        time.sleep(0.5)
        assert emu.running(), emu.output()  # did not block on a full stdout pipe
    assert not emu.running()
    assert not port_open(port)


def test_process_death_reports_stderr(tmp_path):
    crash = "import sys; print('booting'); sys.stderr.write('Traceback: boom\\n'); sys.exit(3)"
    with pytest.raises(EmulatorStartError) as excinfo:
        start_emulator(data_dir=tmp_path, command=[sys.executable, "-c", crash], timeout=30)
    message = str(excinfo.value)
    assert "exited with code 3" in message
    assert "Traceback: boom" in message
    assert "booting" in message


def test_timeout_stops_the_process(tmp_path):
    silent = "import time; print('starting', flush=True); time.sleep(600)"
    started = time.monotonic()
    with pytest.raises(EmulatorStartError, match="within 1 s"):
        start_emulator(data_dir=tmp_path, command=[sys.executable, "-c", silent], timeout=1)
    assert time.monotonic() - started < 15


def test_malformed_ready_line(tmp_path):
    bad = "import time; print('SALESFORCE_EMULATOR {not json', flush=True); time.sleep(600)"
    with pytest.raises(EmulatorStartError, match="malformed ready line"):
        start_emulator(data_dir=tmp_path, command=[sys.executable, "-c", bad], timeout=30)


def test_parse_ready_line():
    info = {key: "x" for key in INFO_KEYS}
    assert parse_ready_line("SALESFORCE_EMULATOR " + json.dumps(info) + "\n") == info
    assert parse_ready_line("INFO listening") is None
    with pytest.raises(EmulatorStartError, match="lacks control_url"):
        parse_ready_line("SALESFORCE_EMULATOR " + json.dumps({k: "x" for k in INFO_KEYS[:-1]}))

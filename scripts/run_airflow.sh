#!/usr/bin/env bash
# `make airflow`: a local Airflow (airflow standalone: api-server, scheduler, dag-processor, triggerer)
# for this project, in the foreground. Ctrl-C stops it (and the emulator, if this script started it).
#
#  1. starts the Salesforce emulator in the background unless something listens on EMULATOR_PORT (8443);
#  2. `airflow db migrate`, then loads airflow_settings.yaml (scripts/load_airflow_settings.py);
#  3. fixed login admin/admin (pre-seeded simple_auth_manager_passwords.json.generated);
#  4. REQUESTS_CA_BUNDLE=$EMULATOR_DATA/tls/ca.pem so tasks trust the emulator's TLS certificate;
#  5. `airflow standalone` on http://localhost:${AIRFLOW_PORT:-8080}, in its own process group;
#     "ready" only once the API server reports the metadata DB, scheduler and DAG processor healthy.
# AIRFLOW_PORT may not be one of Airflow's log-server ports (8793, 8794) or a port in use.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/airflow_env.sh
. scripts/airflow_env.sh
PY="$ROOT/.venv/bin/python"
# Airflow's own servers: the workers' and the triggerer's log servers.
LOG_PORTS="${AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT:-8793} ${AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT:-8794}"

export EMULATOR_PORT="${EMULATOR_PORT:-8443}"
export EMULATOR_DATA="${EMULATOR_DATA:-$ROOT/.emulator}"
export EMULATOR_SEED="${EMULATOR_SEED:-demo}"
EMULATOR_LOG="$AIRFLOW_HOME/emulator.log"
EMULATOR_PID=""

say() { printf '\033[1m[make airflow]\033[0m %s\n' "$*"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

stop_emulator() {
    if [ -n "$EMULATOR_PID" ] && kill -0 "$EMULATOR_PID" 2>/dev/null; then
        say "stopping the emulator (pid $EMULATOR_PID)"
        kill -TERM -- "-$EMULATOR_PID" 2>/dev/null || kill -TERM "$EMULATOR_PID" 2>/dev/null || true
    fi
}
AIRFLOW_PID=""
stop_all() {
    if [ -n "$AIRFLOW_PID" ] && kill -0 "$AIRFLOW_PID" 2>/dev/null; then
        say "stopping Airflow (api-server, scheduler, dag-processor, triggerer and their workers)"
        kill -TERM -- "-$AIRFLOW_PID" 2>/dev/null || true
        for _ in $(seq 1 40); do   # 20 s to stop, then every process of the group is killed
            kill -0 -- "-$AIRFLOW_PID" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL -- "-$AIRFLOW_PID" 2>/dev/null || true
    fi
    stop_emulator
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# 0. ports: Airflow's own, and ones something else listens on, are refused before anything starts
for port in $LOG_PORTS; do
    if [ "$AIRFLOW_PORT" = "$port" ]; then
        say "ERROR: AIRFLOW_PORT=$AIRFLOW_PORT is one of Airflow's own log-server ports ($LOG_PORTS); choose another, e.g. AIRFLOW_PORT=9090" >&2
        exit 2
    fi
done
for port in "$AIRFLOW_PORT" $LOG_PORTS; do
    if port_open "$port"; then
        say "ERROR: something already listens on 127.0.0.1:$port (needed by Airflow); stop it or choose another AIRFLOW_PORT" >&2
        exit 2
    fi
done

# 1. emulator
if port_open "$EMULATOR_PORT"; then
    say "something already listens on 127.0.0.1:$EMULATOR_PORT; using it as the Salesforce emulator"
else
    say "starting the Salesforce emulator on 127.0.0.1:$EMULATOR_PORT (log: $EMULATOR_LOG)"
    # setsid: its own process group, so Ctrl-C here does not hit it before the trap above stops it.
    setsid "$PY" -m include.salesforce_emulator >"$EMULATOR_LOG" 2>&1 </dev/null &
    EMULATOR_PID=$!
    for _ in $(seq 1 120); do
        grep -q '^SALESFORCE_EMULATOR ' "$EMULATOR_LOG" 2>/dev/null && break
        kill -0 "$EMULATOR_PID" 2>/dev/null || break
        sleep 0.5
    done
    if grep -q '^SALESFORCE_EMULATOR ' "$EMULATOR_LOG" 2>/dev/null; then
        say "emulator ready: $(grep -m1 '^SALESFORCE_EMULATOR ' "$EMULATOR_LOG" | cut -c21-)"
    else
        say "WARNING: the emulator did not start; Airflow starts anyway. Last lines of $EMULATOR_LOG:"
        tail -n 20 "$EMULATOR_LOG" >&2 || true
        stop_emulator
        EMULATOR_PID=""
    fi
fi
if [ "$EMULATOR_PORT" != 8443 ]; then
    say "WARNING: airflow_settings.yaml points salesforce_default at 127.0.0.1:8443, not :$EMULATOR_PORT"
fi
# The demo org's custom objects and filter, unless the project has a configuration of its own.
if [ -z "${SFSYNC_CONFIG:-}" ] && [ ! -f "$ROOT/config/sfsync.yaml" ]; then
    export SFSYNC_CONFIG="$ROOT/include/salesforce_emulator/demo_sync.yaml"
    say "configuration: $SFSYNC_CONFIG (the demo org's; create config/sfsync.yaml for your own)"
fi
CA_BUNDLE="$EMULATOR_DATA/tls/ca.pem"
if [ -f "$CA_BUNDLE" ]; then
    export REQUESTS_CA_BUNDLE="$CA_BUNDLE"
else
    # A REQUESTS_CA_BUNDLE that does not exist breaks every HTTPS call, so only set it when present.
    say "WARNING: $CA_BUNDLE does not exist; REQUESTS_CA_BUNDLE not set (Salesforce tasks will fail TLS checks)"
fi

# 2. metadata DB + connections/pools/variables
say "airflow db migrate (AIRFLOW_HOME=$AIRFLOW_HOME)"
airflow db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 || { tail -n 30 "$AIRFLOW_HOME/db-migrate.log" >&2; exit 1; }
say "loading airflow_settings.yaml"
"$PY" scripts/load_airflow_settings.py airflow_settings.yaml

# 3. fixed admin/admin login
echo '{"admin": "admin"}' > "$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"

# 4./5. in its own process group, so that stopping it stops every process it started
say "starting Airflow on http://localhost:$AIRFLOW_PORT (Ctrl-C stops it and everything it started)"
setsid airflow standalone </dev/null &
AIRFLOW_PID=$!
HEALTH="http://127.0.0.1:$AIRFLOW_PORT/api/v2/monitor/health"
for _ in $(seq 1 240); do   # up to 120 s
    if ! kill -0 "$AIRFLOW_PID" 2>/dev/null; then
        say "ERROR: Airflow stopped while starting (see the lines above)" >&2
        exit 1
    fi
    if "$PY" - "$HEALTH" <<'PYEOF' 2>/dev/null
import json, sys, urllib.request
health = json.load(urllib.request.urlopen(sys.argv[1], timeout=2))
parts = ("metadatabase", "scheduler", "dag_processor")
sys.exit(0 if all(health.get(p, {}).get("status") == "healthy" for p in parts) else 1)
PYEOF
    then
        say "ready: http://localhost:$AIRFLOW_PORT (login admin / admin): api-server, scheduler and dag-processor healthy"
        wait "$AIRFLOW_PID" || true
        exit 0
    fi
    sleep 0.5
done
say "ERROR: Airflow's API server did not report healthy within 120 s ($HEALTH)" >&2
exit 1

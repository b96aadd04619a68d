#!/usr/bin/env bash
# `make airflow-celery`: a local CeleryExecutor deployment of this project, in the foreground.
# Ctrl-C stops everything it started (each component runs in its own process group).
#
#  1. checks the broker (SFSYNC_BROKER_URL, default the machine's Redis, redis://127.0.0.1:6379/0;
#     RabbitMQ: SFSYNC_BROKER_URL=amqp://guest:guest@127.0.0.1:5672//) and PostgreSQL
#     (SFSYNC_PG_URL, default postgresql://postgres@127.0.0.1:5432: trust auth, user postgres);
#  2. creates the PostgreSQL databases sfsync_airflow (Airflow's metadata; also the Celery result
#     backend) and sfsync_marketing (the marketing database) when missing;
#  3. starts the Salesforce emulator unless something listens on EMULATOR_PORT (8443);
#  4. `airflow db migrate`, loads airflow_settings.yaml (pools, the Salesforce connection), points
#     marketing_db at sfsync_marketing (AIRFLOW_CONN_MARKETING_DB) and publishes the sync's
#     configuration as the Airflow Variable sfsync_config (config/sfsync.yaml, or SFSYNC_CONFIG,
#     or the demo org's): the workers read it from there, not from a disk;
#  5. api-server, scheduler, dag-processor, triggerer and two Celery workers (worker-1, worker-2,
#     CELERY_CONCURRENCY task slots each, both on the queue `default`) on
#     http://localhost:${AIRFLOW_PORT:-8080} (admin / admin); "ready" once the API server reports
#     the metadata DB, scheduler, DAG processor and triggerer healthy and both workers are up.
# Home: .airflow-celery/ (SFSYNC_AIRFLOW_HOME moves it); component logs in its stack-logs/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export SFSYNC_AIRFLOW_HOME="${SFSYNC_AIRFLOW_HOME:-$ROOT/.airflow-celery}"
# shellcheck source=scripts/airflow_env.sh
. scripts/airflow_env.sh
PY="$ROOT/.venv/bin/python"
LOGS="$AIRFLOW_HOME/stack-logs"
mkdir -p "$LOGS"

BROKER_URL="${SFSYNC_BROKER_URL:-redis://127.0.0.1:6379/0}"
PG_URL="${SFSYNC_PG_URL:-postgresql://postgres@127.0.0.1:5432}"
PG_URL="${PG_URL%/}"
CONCURRENCY="${CELERY_CONCURRENCY:-2}"
export EMULATOR_PORT="${EMULATOR_PORT:-8443}"
export EMULATOR_DATA="${EMULATOR_DATA:-$ROOT/.emulator}"
export EMULATOR_SEED="${EMULATOR_SEED:-demo}"

say() { printf '\033[1m[make airflow-celery]\033[0m %s\n' "$*"; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

PGIDS=()
EMULATOR_PID=""
stop_all() {
    trap '' INT TERM HUP   # a second Ctrl-C (or make's signal) must not cut the clean-up short
    if [ "${#PGIDS[@]}" -gt 0 ]; then
        say "stopping Airflow (api-server, scheduler, dag-processor, triggerer, workers)"
        for pgid in "${PGIDS[@]}"; do kill -TERM -- "-$pgid" 2>/dev/null || true; done
        for _ in $(seq 1 40); do   # 20 s for a warm shutdown, then every process is killed
            alive=0
            for pgid in "${PGIDS[@]}"; do kill -0 -- "-$pgid" 2>/dev/null && alive=1; done
            [ "$alive" = 0 ] && break
            sleep 0.5
        done
        for pgid in "${PGIDS[@]}"; do kill -KILL -- "-$pgid" 2>/dev/null || true; done
    fi
    if [ -n "$EMULATOR_PID" ] && kill -0 "$EMULATOR_PID" 2>/dev/null; then
        say "stopping the emulator (pid $EMULATOR_PID)"
        kill -TERM -- "-$EMULATOR_PID" 2>/dev/null || true
    fi
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# 1. broker and PostgreSQL
broker_host="$("$PY" -c 'import sys; from urllib.parse import urlparse; u = urlparse(sys.argv[1]); print(u.hostname or "127.0.0.1", u.port or {"redis": 6379, "amqp": 5672}.get(u.scheme, 6379))' "$BROKER_URL")"
# shellcheck disable=SC2086
if ! port_open $broker_host; then
    say "ERROR: nothing listens at the broker $BROKER_URL (start redis-server, or set SFSYNC_BROKER_URL)" >&2
    exit 2
fi
for port in "$AIRFLOW_PORT"; do
    if port_open 127.0.0.1 "$port"; then
        say "ERROR: something already listens on 127.0.0.1:$port; stop it or choose another AIRFLOW_PORT" >&2
        exit 2
    fi
done

# 2. databases
say "PostgreSQL at $PG_URL: databases sfsync_airflow and sfsync_marketing"
"$PY" - "$PG_URL" <<'PYEOF'
import sys
import psycopg
from psycopg import sql
base = sys.argv[1]
try:
    admin = psycopg.connect(base + "/postgres", autocommit=True, connect_timeout=5)
except psycopg.OperationalError as exc:
    sys.exit(f"error: PostgreSQL at {base} is unreachable: {str(exc).strip()}")
with admin:
    have = {r[0] for r in admin.execute("SELECT datname FROM pg_database")}
    for name in ("sfsync_airflow", "sfsync_marketing"):
        if name not in have:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"created database {name}")
PYEOF
pg_airflow="${PG_URL#postgresql://}/sfsync_airflow"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://$pg_airflow"
export AIRFLOW__CORE__EXECUTOR=CeleryExecutor
export AIRFLOW__CELERY__BROKER_URL="$BROKER_URL"
export AIRFLOW__CELERY__RESULT_BACKEND="db+postgresql+psycopg2://$pg_airflow"
export AIRFLOW__CELERY__WORKER_CONCURRENCY="$CONCURRENCY"
export AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=0.2
# The marketing database on PostgreSQL (an environment connection wins over airflow_settings.yaml's).
AIRFLOW_CONN_MARKETING_DB="$("$PY" -c 'import json, sys; from urllib.parse import urlparse; u = urlparse(sys.argv[1]); print(json.dumps({"conn_type": "postgres", "host": u.hostname, "port": u.port or 5432, "login": u.username or "postgres", "password": u.password or "", "schema": "sfsync_marketing"}))' "$PG_URL")"
export AIRFLOW_CONN_MARKETING_DB

# 3. emulator
if port_open 127.0.0.1 "$EMULATOR_PORT"; then
    say "something already listens on 127.0.0.1:$EMULATOR_PORT; using it as the Salesforce emulator"
else
    say "starting the Salesforce emulator on 127.0.0.1:$EMULATOR_PORT (log: $LOGS/emulator.log)"
    setsid "$PY" -m include.salesforce_emulator >"$LOGS/emulator.log" 2>&1 </dev/null &
    EMULATOR_PID=$!
    for _ in $(seq 1 120); do
        grep -q '^SALESFORCE_EMULATOR ' "$LOGS/emulator.log" 2>/dev/null && break
        kill -0 "$EMULATOR_PID" 2>/dev/null || break
        sleep 0.5
    done
    grep -q '^SALESFORCE_EMULATOR ' "$LOGS/emulator.log" 2>/dev/null \
        || { say "ERROR: the emulator did not start:" >&2; tail -n 20 "$LOGS/emulator.log" >&2; exit 1; }
fi
[ -f "$EMULATOR_DATA/tls/ca.pem" ] && export REQUESTS_CA_BUNDLE="$EMULATOR_DATA/tls/ca.pem"

# 4. metadata DB, settings, the configuration as a Variable
CONFIG="${SFSYNC_CONFIG:-$ROOT/config/sfsync.yaml}"
[ -f "$CONFIG" ] || CONFIG="$ROOT/include/salesforce_emulator/demo_sync.yaml"
SFSYNC_CONFIG="$CONFIG" "$PY" -m include.sfsync.config || exit 2
unset SFSYNC_CONFIG   # the workers read the Variable, never a file
say "airflow db migrate (metadata: PostgreSQL sfsync_airflow; home $AIRFLOW_HOME)"
airflow db migrate >"$LOGS/db-migrate.log" 2>&1 || { tail -n 30 "$LOGS/db-migrate.log" >&2; exit 1; }
say "loading airflow_settings.yaml; Variable sfsync_config <- $CONFIG"
"$PY" scripts/load_airflow_settings.py airflow_settings.yaml
airflow variables set sfsync_config "$(cat "$CONFIG")" >/dev/null
echo '{"admin": "admin"}' > "$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"

# 5. the components, each in its own process group
start() {  # start NAME ARGS... (extra environment via `env` in ARGS)
    local name=$1; shift
    setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
    PGIDS+=("$!")
    say "started $name (pid $!, log $LOGS/$name.log)"
}
start api-server airflow api-server
start scheduler airflow scheduler
start dag-processor airflow dag-processor
start triggerer airflow triggerer
for i in 1 2; do
    # Two workers on one machine: own Celery node names, own task-instance hostnames (the UI's
    # "Host"), no log server (the api-server reads the shared logs folder).
    start "worker-$i" env SFSYNC_WORKER_HOSTNAME="worker-$i" \
        AIRFLOW__CORE__HOSTNAME_CALLABLE=include.sfsync.airflow_glue.worker_hostname \
        airflow celery worker --celery-hostname "worker-$i@%h" --queues default \
        --concurrency "$CONCURRENCY" --skip-serve-logs
done

HEALTH="http://127.0.0.1:$AIRFLOW_PORT/api/v2/monitor/health"
for _ in $(seq 1 360); do   # up to 180 s
    for pgid in "${PGIDS[@]}"; do
        if ! kill -0 -- "-$pgid" 2>/dev/null; then
            say "ERROR: a component stopped while starting; see $LOGS/" >&2
            exit 1
        fi
    done
    if "$PY" - "$HEALTH" <<'PYEOF' 2>/dev/null && grep -q ' ready\.' "$LOGS/worker-1.log" && grep -q ' ready\.' "$LOGS/worker-2.log"
import json, sys, urllib.request
health = json.load(urllib.request.urlopen(sys.argv[1], timeout=2))
parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
sys.exit(0 if all(health.get(p, {}).get("status") == "healthy" for p in parts) else 1)
PYEOF
    then
        say "ready: http://localhost:$AIRFLOW_PORT (login admin / admin); CeleryExecutor, broker $BROKER_URL, workers worker-1 and worker-2"
        wait -n "${PGIDS[@]}" || true
        say "a component exited; stopping the rest (logs in $LOGS/)"
        exit 1
    fi
    sleep 0.5
done
say "ERROR: not ready within 180 s ($HEALTH; worker logs in $LOGS/)" >&2
exit 1

# Environment for running Airflow locally against this project. Source it, do not execute it:
#
#     . scripts/airflow_env.sh && airflow dags list
#
# `make airflow` (scripts/run_airflow.sh) sources it too. Override AIRFLOW_PORT (default 8080) before sourcing.
# Creates .airflow/ and a persistent 64-byte JWT secret in it on first use.

PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PROJECT_ROOT
export PATH="$PROJECT_ROOT/.venv/bin:$PATH"
export PYTHONPATH="$PROJECT_ROOT${PYTHONPATH:+:$PYTHONPATH}"     # makes `include.*` importable

export AIRFLOW_HOME="${SFSYNC_AIRFLOW_HOME:-$PROJECT_ROOT/.airflow}"   # airflow.cfg, airflow.db (SQLite), logs
export AIRFLOW__CORE__DAGS_FOLDER="$PROJECT_ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$PROJECT_ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__PARALLELISM=4                                 # default 32 workers is ~6 GiB RSS
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=30                  # default 300 s: new DAG files show up slowly
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin"       # password: see run_airflow.sh

export AIRFLOW_PORT="${AIRFLOW_PORT:-8080}"
export AIRFLOW__API__PORT="$AIRFLOW_PORT"
export AIRFLOW__API__BASE_URL="http://localhost:$AIRFLOW_PORT"      # workers derive the Execution API URL from it

mkdir -p "$AIRFLOW_HOME"
if [ ! -s "$AIRFLOW_HOME/jwt_secret" ]; then                        # a short generated secret triggers warnings
    "$PROJECT_ROOT/.venv/bin/python" -c 'import secrets; print(secrets.token_hex(64))' > "$AIRFLOW_HOME/jwt_secret"
fi
AIRFLOW__API_AUTH__JWT_SECRET="$(cat "$AIRFLOW_HOME/jwt_secret")"
export AIRFLOW__API_AUTH__JWT_SECRET

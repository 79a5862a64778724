#!/usr/bin/env bash
# Run Airflow natively (scheduler, dag-processor, api-server, triggerer in one process tree) with
# this project's DAGs, against the current environment and .env.
#
#   scripts/airflow_standalone.sh                 # UI on http://127.0.0.1:8080 (this machine only)
#   AIRFLOW_PORT=8081 scripts/airflow_standalone.sh
#   eval "$(make -s stack-up)" && scripts/airflow_standalone.sh   # with the native local stack
#
# Variables (all optional):
#   AIRFLOW_PORT        UI/API port [8080]
#   TXMON_AIRFLOW_HOME  Airflow's home (SQLite metadata, logs, generated password)
#                       [${TXMON_CACHE_DIR:-~/.cache/txmon}/airflow]; kept between runs
#   VENV                the project's virtualenv [<repo>/.venv]
# The project's own settings (POSTGRES_*, KAFKA_*, AIRFLOW_DATA_DIR, RETENTION_DAYS, MONITOR_*,
# ZOOKEEPER_*) are read by the tasks from the environment and then .env, as everywhere else.
#
# Stop it with Ctrl-C, or `kill -INT <pid>` when started in the background; SIGTERM leaves its
# worker processes behind.
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$repo/.venv}"
port="${AIRFLOW_PORT:-8080}"

if [[ ! -x "$venv/bin/airflow" ]]; then
    echo "error: no airflow in $venv (run \`make venv\`, or set VENV to the virtualenv that has it)" >&2
    exit 1
fi
if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
    echo "error: AIRFLOW_PORT=$port is not a TCP port" >&2
    exit 1
fi

# A home of our own, so a developer's other Airflow (~/airflow) is never touched.
export AIRFLOW_HOME="${TXMON_AIRFLOW_HOME:-${TXMON_CACHE_DIR:-$HOME/.cache/txmon}/airflow}"
mkdir -p "$AIRFLOW_HOME"
export AIRFLOW__CORE__DAGS_FOLDER="$repo/dags"
# The txmon plugin: run notes in the grid, reports served under /txmon/reports/.
export AIRFLOW__CORE__PLUGINS_FOLDER="$repo/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
# The DAG files import the project's packages (utils/...); the repo root must be importable.
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$venv/bin:$PATH"
export AIRFLOW__API__PORT="$port"
# This machine only, as Compose publishes it (the UI has a single admin user).
export AIRFLOW__API__HOST=127.0.0.1
# Task processes report to the execution API, which moves with the port.
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$port/execution/"
# Four parallel tasks are plenty here and keep the memory near 1 GB.
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-4}"
# New DAGs start unpaused, so the monitoring runs begin at once (pause them in the UI if unwanted);
# data_cleanup starts paused whatever this says: deleting data is a decision (its DAG says so).
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="${AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION:-False}"
# Warnings nobody here can act on, printed by every airflow command: the graphviz package is only
# for `airflow dags show`, and FastAPI's test client is imported (not used) by the API server.
export PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}ignore:Could not import graphviz:UserWarning,ignore:Using \`httpx\` with:UserWarning"
# Secrets kept in the home, created once (umask: readable by this user only). The JWT key signs
# the tokens of the UI and of the tasks: 64 bytes, as SHA-512 wants (Airflow's own is shorter and
# warns). The admin password is written here before Airflow starts, so it never prints it.
umask 077
jwt_file="$AIRFLOW_HOME/jwt_secret"
[[ -s "$jwt_file" ]] || "$venv/bin/python" -c 'import secrets; print(secrets.token_urlsafe(64))' >"$jwt_file"
AIRFLOW__API_AUTH__JWT_SECRET="$(cat "$jwt_file")"
export AIRFLOW__API_AUTH__JWT_SECRET
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
[[ -s "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" ]] ||
    "$venv/bin/python" -c 'import json, secrets; print(json.dumps({"admin": secrets.token_urlsafe(12)}))' \
        >"$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
umask 022

if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "error: port $port is taken (another Airflow?); choose another with AIRFLOW_PORT=..." >&2
    exit 1
fi

cd "$repo"
# The reporting tables come with migration 002; applying it needs the owner role
# (POSTGRES_MIGRATION_USER). Without it the DAGs fail with a message that says so.
if ! "$venv/bin/python" -m utils.database migrate --wait 5 >&2; then
    echo "warning: could not apply the database migrations; is PostgreSQL up (make stack-up)?" >&2
fi

cat >&2 <<EOF
Airflow home:  $AIRFLOW_HOME
DAGs:          $AIRFLOW__CORE__DAGS_FOLDER
UI:            http://127.0.0.1:$port   user admin, password: run
               cat ${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE/#$HOME/\~}
Reports:       http://127.0.0.1:$port/txmon/reports/   (and linked from each run's note)
Stop with Ctrl-C.
EOF
# A shell started in the background (`&`, nohup) hands its children SIGINT as "ignored", and an
# ignored signal survives exec: Airflow could then only be stopped with SIGTERM, which orphans
# its workers. Resetting SIGINT to its default before exec keeps `kill -INT <pid>` working.
exec "$venv/bin/python" -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execv(sys.argv[1], sys.argv[1:])' "$venv/bin/airflow" standalone

#!/usr/bin/env bash
# /entrypoint of the Airflow stand-in (airflow.Dockerfile): the parts of the official image's
# entrypoint that docker-compose.yml relies on.
#   - a uid without a passwd entry (any AIRFLOW_UID) gets one, home /home/airflow
#   - wait until `airflow db check` passes: CONNECTION_CHECK_MAX_COUNT tries (default 20),
#     CONNECTION_CHECK_SLEEP_TIME seconds apart (default 3); 0 tries skips the wait
#   - `bash ...` / `python ...` run as given; anything else runs as `airflow ...`
set -euo pipefail
umask 0002

if ! whoami >/dev/null 2>&1; then
    echo "${USER_NAME:-default}:x:$(id -u):0:${USER_NAME:-default} user:${AIRFLOW_USER_HOME_DIR}:/sbin/nologin" >>/etc/passwd
    export HOME=$AIRFLOW_USER_HOME_DIR
fi

max_tries=${CONNECTION_CHECK_MAX_COUNT:-20}
if ((max_tries > 0)); then
    for ((try = 1; ; try++)); do
        if airflow db check >/dev/null 2>&1; then
            break
        fi
        if ((try >= max_tries)); then
            echo "entrypoint: the metadata database did not answer 'airflow db check' after $try tries" >&2
            airflow db check >&2 || true
            exit 1
        fi
        sleep "${CONNECTION_CHECK_SLEEP_TIME:-3}"
    done
fi

case "${1:-}" in
    bash | python) exec "$@" ;;
    airflow) shift ;;
esac
exec airflow "$@"

#!/usr/bin/env bash
# Entrypoint of the postgres stand-in (postgres.Dockerfile): what the official image's
# docker-entrypoint.sh does that docker-compose.yml relies on.
#   - as root: take ownership of $PGDATA, then run again as the postgres user
#   - on an empty $PGDATA: initdb with POSTGRES_USER / POSTGRES_PASSWORD (POSTGRES_INITDB_ARGS
#     added), password auth for network clients (POSTGRES_HOST_AUTH_METHOD, scram-sha-256),
#     create POSTGRES_DB, then run /docker-entrypoint-initdb.d/* against a temporary server
#     that listens on the Unix socket only (*.sh run if executable, else sourced; *.sql and
#     *.sql.gz through psql), stop it
#   - exec the command (postgres), listening on all addresses
set -Eeo pipefail

if [[ ${1:-} == -* ]]; then
    set -- postgres "$@"
fi

if [[ ${1:-} == postgres && $(id -u) == 0 ]]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

psql_init() {
    psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --username "$POSTGRES_USER" "$@"
}

initialise() {
    if [[ -z ${POSTGRES_PASSWORD:-} && ${POSTGRES_HOST_AUTH_METHOD:-} != trust ]]; then
        echo "postgres: POSTGRES_PASSWORD is not set; the database is uninitialised and will not start" >&2
        exit 1
    fi
    export POSTGRES_USER=${POSTGRES_USER:-postgres}
    export POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of flags, as in the official image
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") \
        --encoding=UTF8 --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA"
    printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
    printf '\nhost all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >>"$PGDATA/pg_hba.conf"

    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
    if [[ $POSTGRES_DB != postgres ]]; then
        psql_init --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
    local f
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh)
                if [[ -x $f ]]; then
                    echo "postgres: running $f"
                    "$f"
                else
                    echo "postgres: sourcing $f"
                    # shellcheck disable=SC1090
                    . "$f"
                fi
                ;;
            *.sql)
                echo "postgres: running $f"
                psql_init --dbname "$POSTGRES_DB" -f "$f"
                ;;
            *.sql.gz)
                echo "postgres: running $f"
                gunzip -c "$f" | psql_init --dbname "$POSTGRES_DB"
                ;;
            *) [[ -e $f ]] && echo "postgres: ignoring $f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo "postgres: initialisation complete; starting the server"
}

if [[ ${1:-} == postgres && ! -s $PGDATA/PG_VERSION ]]; then
    initialise
fi

exec "$@"

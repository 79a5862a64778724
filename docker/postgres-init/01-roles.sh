#!/usr/bin/env bash
# Least-privilege roles for the transactions database (mounted into the postgres container's
# /docker-entrypoint-initdb.d by docker-compose.yml).
#
#   owner role (POSTGRES_MIGRATION_USER)  owns the database and its schema; `python -m
#                                         utils.database migrate` runs as it and grants the app role
#   app role   (POSTGRES_USER)            what the producer, consumer and DAGs log in as: reads and
#                                         writes rows, owns nothing, so it cannot drop or alter tables
#
# The postgres image runs this once, when the data volume is empty, as the superuser. It is
# idempotent (create if missing, then always set the password), so after changing a password
# in .env it can be re-applied to a running container:
#   docker compose exec postgres bash /docker-entrypoint-initdb.d/01-roles.sh
#
# No `set -u`: the image sources (rather than runs) non-executable init scripts, and nounset
# would leak into its own entrypoint. Required variables are checked explicitly instead.
set -Eeo pipefail

: "${TXMON_OWNER_ROLE:?TXMON_OWNER_ROLE is not set (docker-compose.yml maps it from POSTGRES_MIGRATION_USER)}"
: "${TXMON_OWNER_PASSWORD:?TXMON_OWNER_PASSWORD is not set (from POSTGRES_MIGRATION_PASSWORD in .env)}"
: "${TXMON_APP_ROLE:?TXMON_APP_ROLE is not set (docker-compose.yml maps it from POSTGRES_USER)}"
: "${TXMON_APP_PASSWORD:?TXMON_APP_PASSWORD is not set (from POSTGRES_PASSWORD in .env)}"

if [[ "$TXMON_OWNER_ROLE" == "$TXMON_APP_ROLE" ]]; then
    echo "01-roles.sh: the owner role and the app role must differ (both are '$TXMON_APP_ROLE')" >&2
    exit 1
fi

# Names and passwords reach SQL as psql variables read from the environment (\getenv, psql 15+)
# and quoted by psql itself (:"name" as an identifier, :'value' as a literal): a quote in a
# password cannot break a statement, and no secret appears on a command line (ps) or in the log.
psql --no-psqlrc --set=ON_ERROR_STOP=1 --quiet \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-transactions}" <<'SQL'
\getenv owner TXMON_OWNER_ROLE
\getenv owner_password TXMON_OWNER_PASSWORD
\getenv app TXMON_APP_ROLE
\getenv app_password TXMON_APP_PASSWORD
SELECT current_database() AS db \gset

-- CREATE ROLE has no IF NOT EXISTS: generate the statement only for missing roles.
SELECT format('CREATE ROLE %I', :'owner')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner')
\gexec
SELECT format('CREATE ROLE %I', :'app')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app')
\gexec

ALTER ROLE :"owner" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'owner_password';
ALTER ROLE :"app" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'app_password';

-- The owner owns the database; since PostgreSQL 15 the public schema belongs to
-- pg_database_owner, so the owner may also create the tables the migrations define.
ALTER DATABASE :"db" OWNER TO :"owner";

-- Nobody else connects by default. The app role may connect and create temporary tables
-- (the consumer's COPY goes through a temporary staging table); table privileges come from
-- the migration runner, which knows which tables exist.
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"app";
SQL

echo "01-roles.sh: roles '$TXMON_OWNER_ROLE' (owner of ${POSTGRES_DB:-transactions}) and '$TXMON_APP_ROLE' (app) are ready"

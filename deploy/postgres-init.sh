#!/usr/bin/env bash
# Creates the roles and databases of the compose stack. The postgres image runs
# this once, when its data volume is first initialised (/docker-entrypoint-initdb.d).
#   followthrough            the SQL mirror (schema: `followthrough migrate`)
#   temporal, temporal_visibility
#                            Temporal's stores (schema: temporalio/auto-setup)
# Passwords come from the postgres service's environment.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --no-psqlrc \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    -v followthrough_password="${FOLLOWTHROUGH_DB_PASSWORD:-followthrough}" \
    -v temporal_password="${TEMPORAL_DB_PASSWORD:-temporal}" <<'SQL'
CREATE ROLE followthrough LOGIN PASSWORD :'followthrough_password';
CREATE DATABASE followthrough OWNER followthrough;

CREATE ROLE temporal LOGIN PASSWORD :'temporal_password';
CREATE DATABASE temporal OWNER temporal;
CREATE DATABASE temporal_visibility OWNER temporal;
SQL

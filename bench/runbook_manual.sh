#!/usr/bin/env bash
# The M1 runbook (../shared/runbook.md) "by hand": its commands, in its order, without
# docker-compose, as an operator would paste them. Used as baseline A by bench/cutover_bench.py.
#
# Prints one marker line before each step and one at the end:
#     STEP <name> <epoch seconds, microsecond resolution>
# so a step's time is the next marker minus its own.
#
# Environment (all required unless a default is shown):
#   POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER   the server (trust auth, or PGPASSWORD set)
#   POSTGRES_DB        the pilot ("production") database
#   BASELINE_REV       e.g. 0001_baseline
#   BACKUP_DIR         where the dump and the schema snapshot go (the runbook's /tmp)
#   APP_DIR            examples/beer_backend_api (where alembic.ini lives)
#   ALEMBIC            the alembic executable (default: alembic)
#   PYTHON             a python with boto3 (default: python3)
#   API_URL            the backend, e.g. http://127.0.0.1:8000
#   S3_ENDPOINT_URL, S3_BUCKET   where the dump is copied off-site (AWS_* credentials in env)
set -euo pipefail

step() { printf 'STEP %s %s\n' "$1" "${EPOCHREALTIME/,/.}"; }

: "${POSTGRES_DB:?}" "${BASELINE_REV:?}" "${BACKUP_DIR:?}" "${APP_DIR:?}" "${API_URL:?}"
: "${S3_ENDPOINT_URL:?}" "${S3_BUCKET:?}"
ALEMBIC="${ALEMBIC:-alembic}"
PYTHON="${PYTHON:-python3}"
export PGHOST="${POSTGRES_HOST:-127.0.0.1}" PGPORT="${POSTGRES_PORT:-5432}" PGUSER="${POSTGRES_USER:-postgres}"

# Variables (runbook "set before running")
TS=$(date +%Y%m%d_%H%M%S)
DB_NAME="${POSTGRES_DB}"
DB_USER="${PGUSER}"
BACKUP_FILE="${BACKUP_DIR}/${DB_NAME}_${TS}.dump"
SCHEMA_FILE="${BACKUP_DIR}/${DB_NAME}_${TS}_schema.sql"
SCRATCH_DB="${DB_NAME}_m1_scratch_${TS}"

# 2) Backup
step dump
pg_dump -U "$DB_USER" -d "$DB_NAME" -Fc -f "$BACKUP_FILE"
step schema
pg_dump -U "$DB_USER" -d "$DB_NAME" --schema-only -f "$SCHEMA_FILE"
step ls
ls -lh "$BACKUP_FILE" "$SCHEMA_FILE"

# 3) Scratch dry run, restored from the backup
step createdb
createdb -U "$DB_USER" "$SCRATCH_DB"
step restore
pg_restore -U "$DB_USER" -d "$SCRATCH_DB" "$BACKUP_FILE"
cd "$APP_DIR"
step scratch-stamp
POSTGRES_DB="$SCRATCH_DB" "$ALEMBIC" stamp "$BASELINE_REV"
step scratch-upgrade
POSTGRES_DB="$SCRATCH_DB" "$ALEMBIC" upgrade head
step scratch-current
POSTGRES_DB="$SCRATCH_DB" "$ALEMBIC" current

# 4) Production stamp + upgrade
step prod-stamp
"$ALEMBIC" stamp "$BASELINE_REV"
step prod-upgrade
"$ALEMBIC" upgrade head
step prod-current
"$ALEMBIC" current

# 5) Post-migration validation (5.1 docker-compose ps has no equivalent here)
step curl-root
curl -fsS "$API_URL/"
echo
step curl-docs
curl -fsS "$API_URL/docs" > /dev/null && echo "Swagger OK"
step psql-dt
psql -U "$DB_USER" -d "$DB_NAME" -c '\dt'

# Off-site copy of the dump (plain boto3 upload_file)
step upload
"$PYTHON" -c 'import boto3, os, sys; boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"]).upload_file(sys.argv[1], os.environ["S3_BUCKET"], os.path.basename(sys.argv[1]))' "$BACKUP_FILE"

# 7) Cleanup
step dropdb
dropdb -U "$DB_USER" --if-exists "$SCRATCH_DB"
step end

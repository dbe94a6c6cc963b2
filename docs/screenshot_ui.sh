#!/usr/bin/env bash
# Reproduce docs/prefect-ui-artifacts.png, prefect-ui-report.png, prefect-ui-plan.png,
# prefect-ui-rollback.png and prefect-ui-incident.png:
#   1. start a throwaway Prefect server (own PREFECT_HOME, free port on loopback),
#   2. build the legacy pilot database `ui_demo_pilot` and run one `cutover run` against it,
#      then `ui_demo_failing`, which refuses writes, so its stamp fails and it is rolled back,
#   3. screenshot the artifacts (checklist, plan, report, incident) and the rollback run with
#      headless Chromium,
#   4. stop the server, drop the databases and remove the temp directories.
#
# Needs: the project venv (.venv), a PostgreSQL reachable as POSTGRES_HOST/POSTGRES_USER
# (default 127.0.0.1 / postgres, trust auth) with pg_dump/psql on PATH, and chromium
# (Debian: apt-get install -y chromium). Usage: docs/screenshot_ui.sh [output-dir]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT_DIR=$(cd "${1:-$REPO/docs}" && pwd)
VENV=${VENV:-$REPO/.venv}
CHROMIUM=${CHROMIUM:-chromium}
DB=ui_demo_pilot
FAILING=ui_demo_failing
export POSTGRES_HOST=${POSTGRES_HOST:-127.0.0.1}
export POSTGRES_USER=${POSTGRES_USER:-postgres}

PORT=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
WORK=$(mktemp -d)
SERVER_PID=
DB_CREATED=

cleanup() {
    local rc=$?
    if [[ -n $SERVER_PID ]]; then
        kill -- "-$SERVER_PID" 2>/dev/null || kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n $DB_CREATED ]]; then
        for name in $DB $FAILING; do
            psql -h "$POSTGRES_HOST" -U "$POSTGRES_USER" -d postgres -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)" || true
            psql -h "$POSTGRES_HOST" -U "$POSTGRES_USER" -d postgres -Atc \
                "SELECT datname FROM pg_database WHERE datname LIKE '${name}_failed_%'" | while read -r aside; do
                psql -h "$POSTGRES_HOST" -U "$POSTGRES_USER" -d postgres -qc "DROP DATABASE IF EXISTS $aside WITH (FORCE)" || true
            done
        done
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT INT TERM

# 1. A real Prefect server. The UI asks /ui-settings for the API address, which defaults to
#    port 4200 whatever --port says, so PREFECT_UI_API_URL must name this port.
export PREFECT_HOME=$WORK/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED=false
echo "==> Prefect server on $BASE (log: $WORK/server.log)"
PREFECT_UI_API_URL=$BASE/api setsid "$VENV/bin/prefect" server start --host 127.0.0.1 --port "$PORT" \
    >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 120); do
    curl -sf "$BASE/api/health" >/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; exit 1; }
    sleep 1
done
curl -sf "$BASE/api/health" >/dev/null || { echo "server did not come up" >&2; cat "$WORK/server.log"; exit 1; }

# 2. The legacy pilot database and one cutover, as examples/demo.py runs it (no API, no S3).
echo "==> Building $DB"
DB_CREATED=1
(cd "$REPO/examples/beer_backend_api" && "$VENV/bin/python" -m beer_app.seed --db "$DB" --reviews 2000 --drop-existing)

echo "==> cutover run"
mkdir -p "$WORK/backups"
(cd "$REPO" && PREFECT_API_URL=$BASE/api POSTGRES_DB=$DB BASELINE_REV=0001_baseline \
    CUTOVER_ALEMBIC_DIR="$REPO/examples/beer_backend_api" CUTOVER_BACKUP_DIR="$WORK/backups" \
    CUTOVER_HEALTH_URL=none \
    "$VENV/bin/cutover" run --approved-by "Olga Operator (OPS-42)" --ticket OPS-42 --confirm-checklist \
    >"$WORK/summary.json" 2>"$WORK/run.log") || { cat "$WORK/run.log" "$WORK/summary.json" >&2; exit 1; }
cat "$WORK/summary.json"

echo "==> cutover run that fails on production and is rolled back"
(cd "$REPO/examples/beer_backend_api" && "$VENV/bin/python" -m beer_app.seed --db "$FAILING" --reviews 2000 --drop-existing)
psql -h "$POSTGRES_HOST" -U "$POSTGRES_USER" -d postgres -qc "ALTER DATABASE $FAILING SET default_transaction_read_only = on"
(cd "$REPO" && PREFECT_API_URL=$BASE/api POSTGRES_DB=$FAILING BASELINE_REV=0001_baseline \
    CUTOVER_ALEMBIC_DIR="$REPO/examples/beer_backend_api" CUTOVER_BACKUP_DIR="$WORK/backups" \
    CUTOVER_HEALTH_URL=none \
    "$VENV/bin/cutover" run --approved-by "Olga Operator (OPS-43)" --ticket OPS-43 --confirm-checklist \
    >"$WORK/failing.json" 2>"$WORK/failing.log") && { echo "the failing run succeeded" >&2; exit 1; }
tail -2 "$WORK/failing.log"

# The flow run id is in the manifest; the artifact ids come from the API
# (keys are slugged: ui_demo_pilot -> ui-demo-pilot-checklist).
read -r FLOW_RUN CHECKLIST REPORT PLAN ROLLBACK INCIDENT < <("$VENV/bin/python" - "$WORK/summary.json" "$BASE/api" "$FAILING" <<'EOF'
import json, sys
import httpx

text = open(sys.argv[1]).read()
summary = json.loads(text[text.index("{"):])
flow_run = json.load(open(summary["manifest"]))["flow_run_id"]
api = sys.argv[2]
state = httpx.get(f"{api}/flow_runs/{flow_run}").json()["state_type"]
if state != "COMPLETED":
    sys.exit(f"flow run {flow_run} is {state}, not COMPLETED")
db = summary["database"].replace("_", "-")
ids = []
for name in ("checklist", "cutover-report", "plan"):
    found = httpx.post(f"{api}/artifacts/filter", json={
        "artifacts": {"key": {"any_": [f"{db}-{name}"]}, "flow_run_id": {"any_": [flow_run]}}}).json()
    if not found:
        sys.exit(f"no artifact {db}-{name} for flow run {flow_run}")
    ids.append(found[0]["id"])
rollbacks = httpx.post(f"{api}/flow_runs/filter", json={"flows": {"name": {"any_": ["rollback"]}}}).json()
if len(rollbacks) != 1:
    sys.exit(f"expected one rollback run, found {len(rollbacks)}")
incident = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {
    "key": {"any_": [sys.argv[3].replace("_", "-") + "-incident"]}, "flow_run_id": {"any_": [rollbacks[0]["id"]]}}}).json()
if not incident:
    sys.exit("no incident artifact for the rollback run")
print(flow_run, *ids, rollbacks[0]["id"], incident[0]["id"])
EOF
)
echo "==> flow run $FLOW_RUN: $BASE/runs/flow-run/$FLOW_RUN?tab=Artifacts"

# 3. Screenshots. The artifact page (/artifacts/artifact/<id>) renders the markdown; the key
#    page and the run's Artifacts tab show only cards with descriptions.
shot() {  # shot FILE WIDTH,HEIGHT URL
    local profile
    profile=$(mktemp -d -p "$WORK")
    timeout 180 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$profile" --window-size="$2" --virtual-time-budget=15000 \
        --screenshot="$1" "$3" >/dev/null 2>"$WORK/chromium.log" || { cat "$WORK/chromium.log" >&2; return 1; }
    echo "    $1 ($(stat -c %s "$1") bytes) <- $3"
}
echo "==> Screenshots"
shot "$OUT_DIR/prefect-ui-artifacts.png" 1600,800 "$BASE/artifacts/artifact/$CHECKLIST"
shot "$OUT_DIR/prefect-ui-report.png" 1600,2100 "$BASE/artifacts/artifact/$REPORT"
shot "$OUT_DIR/prefect-ui-plan.png" 1600,900 "$BASE/artifacts/artifact/$PLAN"
shot "$OUT_DIR/prefect-ui-rollback.png" 1600,1000 "$BASE/runs/flow-run/$ROLLBACK"
shot "$OUT_DIR/prefect-ui-incident.png" 1600,1800 "$BASE/artifacts/artifact/$INCIDENT"
# 4. cleanup() stops the server and drops the database.

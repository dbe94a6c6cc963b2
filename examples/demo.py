"""`make demo`: the whole cutover on an embedded PostgreSQL, with nothing installed but Python.

Starts an embedded PostgreSQL (pgserver) unless POSTGRES_HOST names one, builds
the legacy pilot database the way the pilot was built, starts the example API
under uvicorn, runs `cutover run` exactly as an operator would, shows the
result, and stops what it started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from pg_cutover.launcher.embedded import EXAMPLE_APP_DIR, REPO_ROOT, example_api, s3_server, start_postgres
from pg_cutover.pg import db
from pg_cutover.pg.db import ConnInfo

DEMO_DIR = REPO_ROOT / ".demo"
PILOT = os.environ.get("POSTGRES_DB", "beer_pilot")
REVIEWS = os.environ.get("DEMO_REVIEWS", "20000")
BASELINE = "0001_baseline"
BUCKET = "pg-cutover-demo"


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def main() -> int:
    DEMO_DIR.mkdir(exist_ok=True)
    prefect_home = DEMO_DIR / "prefect"
    say("Starting PostgreSQL" + (" (configured by POSTGRES_HOST)" if os.environ.get("POSTGRES_HOST") else " (embedded, pgserver)"))
    pg = start_postgres(DEMO_DIR / "pgdata", prefer_local=False)
    env = {**os.environ, **pg.env(), "POSTGRES_DB": PILOT}
    conn = ConnInfo(pg.host, pg.port, pg.user, pg.password)
    print(f"    PostgreSQL at {pg.host}:{pg.port}")

    say(f"Building the legacy pilot database {PILOT!r} (create_all, no Alembic, {REVIEWS} reviews)")
    subprocess.run(
        [sys.executable, "-m", "beer_app.seed", "--db", PILOT, "--reviews", REVIEWS, "--drop-existing"],
        cwd=EXAMPLE_APP_DIR, env=env, check=True, timeout=600,
    )
    print(f"    alembic_version before: {db.alembic_revision(conn, PILOT)}")

    say("Starting an embedded S3 server (moto, on loopback) for the off-site copy")
    # Demo-only credentials for the embedded server; a real run uses boto3's normal credential chain.
    s3_env = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo-secret", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(s3_env)
    say("Starting the example API (uvicorn)")
    with s3_server(log_path=DEMO_DIR / "s3.log") as s3_url, \
            example_api(pg.env(), PILOT, log_path=DEMO_DIR / "api.log") as url:
        import boto3

        boto3.client("s3", endpoint_url=s3_url).create_bucket(Bucket=BUCKET)
        print(f"    S3 at {s3_url}, bucket {BUCKET}")
        print(f"    {url}/ -> {httpx.get(url + '/').json()}")
        say("Running: cutover run --approved-by 'demo operator' --confirm-checklist")
        run_env = {
            **env,
            "BASELINE_REV": BASELINE,
            "CUTOVER_ALEMBIC_DIR": str(EXAMPLE_APP_DIR),
            "CUTOVER_BACKUP_DIR": str(DEMO_DIR / "backups"),
            "CUTOVER_HEALTH_URL": url,
            "CUTOVER_S3_BUCKET": BUCKET,
            "CUTOVER_S3_ENDPOINT_URL": s3_url,
            **s3_env,
            "PREFECT_HOME": str(prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        proc = subprocess.run(
            [sys.executable, "-m", "pg_cutover.launcher.cli", "run", "--approved-by", "demo operator", "--confirm-checklist"],
            env=run_env, timeout=3600, stdout=subprocess.PIPE, text=True,
        )
        print(proc.stdout, end="")
        after = httpx.get(url + "/").json()
        listing = boto3.client("s3", endpoint_url=s3_url).list_objects_v2(Bucket=BUCKET).get("Contents", [])
    revision = db.alembic_revision(conn, PILOT)
    if proc.returncode != 0:
        say(f"The cutover failed (exit {proc.returncode}); production is at {revision!r}.")
        return proc.returncode
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    say(f"Done: {PILOT} is at {revision} (API says revision {after.get('revision')!r})")
    print(f"    backup:    {summary['backup']}")
    print(f"    manifest:  {summary['manifest']}")
    print(f"    report:    {Path(summary['run_dir']) / 'report.md'}")
    print(f"    off-site ({len(listing)} objects, verified by SHA-256; the embedded S3 server has now stopped):")
    for obj in listing:
        print(f"      s3://{BUCKET}/{obj['Key']}  {obj['Size']} bytes")
    print("    evidence in the Prefect UI (flow run 'cutover', Artifacts tab):")
    print(f"      PREFECT_HOME={prefect_home} {Path(sys.executable).parent / 'prefect'} server start")
    print("      then open http://127.0.0.1:4200")
    return 0 if revision else 1


if __name__ == "__main__":
    sys.exit(main())

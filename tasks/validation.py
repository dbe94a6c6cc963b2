"""Runbook section 5: the backend runs, answers, and sees every table."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pg_cutover.backend import health
from pg_cutover.errors import StepFailed
from pg_cutover.pg import db
from pg_cutover.pg.tools import PgClient
from pg_cutover.runbook.plan import Plan
from pg_cutover.tasks.evidence import code_block, publish_markdown, publish_table
from pg_cutover.toolkit import Toolkit

# Tasks here that the cutover runs beside others (`.submit()`, a worker thread) have no Prefect
# timeout: there it cannot interrupt a blocking call and only logs a warning in every run; their
# subprocesses, queries and HTTP requests carry their own timeouts.


@task(name="service-status", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def service_status(kit: Toolkit, plan: Plan) -> str:
    """5.1 (`docker-compose ps`), through the configured status command."""
    result = kit.service.status()
    text = result.transcript() if result else "No CUTOVER_SERVICE_STATUS command is configured; process check skipped."
    publish_markdown(plan.database, "service-status", f"# Backend process check\n\n{code_block(text)}",
                     "Runbook 5.1: backend process status")
    return text


@task(name="api-health", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=2)
def api_health(kit: Toolkit, plan: Plan) -> list[dict]:
    """5.2: every configured path answers 2xx (retried: the backend may be reconnecting)."""
    settings = kit.settings
    if not settings.health_url:
        publish_markdown(plan.database, "api-health", "# API health\n\nCUTOVER_HEALTH_URL is 'none': skipped.",
                         "Runbook 5.2: API health responses")
        return []
    results = health.probe(settings.health_url, settings.health_path_list, timeout=settings.health_timeout)
    rows = [
        {"url": r.url, "status": r.status if r.status is not None else "no answer",
         "seconds": round(r.seconds, 3), "response": (r.body[:120] if r.ok else (r.error or r.body[:120]))}
        for r in results
    ]
    publish_table(plan.database, "api-health", rows, "Runbook 5.2: API health responses")
    bad = [r for r in results if not r.ok]
    if bad:
        raise StepFailed("API health check failed: " + "; ".join(
            f"{r.url} answered {r.status if r.status is not None else r.error}" for r in bad))
    get_run_logger().info("API healthy: %s", ", ".join(f"{r.url} {r.status}" for r in results))
    return rows


@task(name="db-objects", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def db_objects(kit: Toolkit, plan: Plan, pg: PgClient, compare_with_scratch: bool = True) -> list[str]:
    """5.3: `\\dt` as evidence; every table of the upgraded scratch copy exists in production."""
    listing = pg.psql(plan.database, r"\dt")
    production = db.list_tables(kit.conn, plan.database, include_alembic=True)
    expected = db.list_tables(kit.conn, plan.scratch_db, include_alembic=True) if compare_with_scratch else production
    missing = sorted(set(expected) - set(production))
    publish_markdown(
        plan.database,
        "db-objects",
        f"# Database objects in `{plan.database}`\n\n{code_block(listing.transcript())}\n"
        f"Tables expected from the upgraded scratch copy: {len(expected)}; missing in production: "
        f"{', '.join(missing) or 'none'}\n",
        "Runbook 5.3: tables in production after the upgrade",
    )
    if missing:
        raise StepFailed(f"Production lacks tables the upgraded scratch copy has: {', '.join(missing)}.")
    return production

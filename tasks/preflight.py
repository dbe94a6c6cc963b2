"""Checks that change nothing: settings, reachability, tools, revisions, the plan."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cutover.pgtools import PgClient
from cutover.plan import Plan, make_plan
from cutover.toolkit import Toolkit
from tasks.evidence import retry_on_connection_error


@task(name="preflight", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3,
      retry_condition_fn=retry_on_connection_error, timeout_seconds=600)
def preflight(kit: Toolkit, baseline_rev: str | None, target_rev: str | None) -> tuple[Plan, PgClient]:
    plan, pg = make_plan(kit, baseline_rev, target_rev)
    get_run_logger().info(
        "Production %s is at %s; target %s (baseline %s); pg tools %s (v%s); run directory %s",
        plan.database, plan.revision_before or "no alembic_version (legacy)", plan.target_rev,
        plan.baseline_rev, pg.bin_dir, pg.major, plan.run_dir,
    )
    return plan, pg

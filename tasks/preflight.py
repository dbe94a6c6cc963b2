"""Checks that change nothing: settings, reachability, tools, revisions, the plan."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cutover.errors import PreflightError
from cutover.pgtools import PgClient
from cutover.plan import Plan, make_plan
from cutover.storage import S3Store, StorageError
from cutover.toolkit import Toolkit
from tasks.evidence import retry_on_connection_error


@task(name="preflight", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3,
      retry_condition_fn=retry_on_connection_error, timeout_seconds=600)
def preflight(kit: Toolkit, baseline_rev: str | None, target_rev: str | None,
              store: S3Store | None = None) -> tuple[Plan, PgClient, S3Store | None]:
    """Returns the store to mirror to: None when mirroring is off, or optional and unreachable."""
    if store is not None:
        try:
            store.check_bucket()
        except StorageError as exc:
            if kit.settings.require_offsite:
                raise PreflightError(f"{exc} Nothing was changed (CUTOVER_REQUIRE_OFFSITE is on).") from None
            get_run_logger().warning("Off-site copy disabled for this run (CUTOVER_REQUIRE_OFFSITE=false): %s", exc)
            store = None
    plan, pg = make_plan(kit, baseline_rev, target_rev)
    get_run_logger().info(
        "Production %s is at %s; target %s (baseline %s); pg tools %s (v%s); run directory %s",
        plan.database, plan.revision_before or "no alembic_version (legacy)", plan.target_rev,
        plan.baseline_rev, pg.bin_dir, pg.major, plan.run_dir,
    )
    return plan, pg, store

"""Checks that change nothing: settings, reachability, tools, revisions, the plan."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pg_cutover.checks.writes import first_reading
from pg_cutover.clone.preconditions import read_facts
from pg_cutover.errors import ConfigError, PreflightError
from pg_cutover.migrations.session import AlembicSession
from pg_cutover.pg.tools import PgClient
from pg_cutover.runbook.plan import Plan, make_plan
from pg_cutover.storage.s3 import S3Store, StorageError
from pg_cutover.tasks.evidence import retry_on_connection_error
from pg_cutover.tasks.s3_credentials import offsite_store
from pg_cutover.toolkit import Toolkit


@task(name="preflight", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3,
      retry_condition_fn=retry_on_connection_error, timeout_seconds=600)
def preflight(kit: Toolkit, baseline_rev: str | None, target_rev: str | None,
              alembic: AlembicSession | None = None,
              strategy: str = "runbook") -> tuple[Plan, PgClient, S3Store | None]:
    """Returns the store to mirror to: None when mirroring is off, or optional and unreachable.

    `alembic`: production's warm interpreter, which reads the revision graph."""
    settings = kit.settings
    try:
        # First, before the plan makes a run directory: the credentials block named by the settings
        # (a missing or wrong one stops the run whatever CUTOVER_REQUIRE_OFFSITE says: it is a bad setting).
        store = offsite_store(settings)
    except ConfigError as exc:
        raise PreflightError(f"{exc} Nothing was changed.") from None
    # The writes-paused sample starts here, so its wait overlaps preflight (see pg_cutover.checks.writes);
    # when the run stops the backend itself, only writes after that stop count.
    reading = first_reading(kit.conn, settings.postgres_db) if settings.write_freeze == "check" else None
    with ThreadPoolExecutor(1, thread_name_prefix="preflight-s3") as pool:
        # The bucket check is a network round trip: it runs beside the database and alembic checks.
        bucket = pool.submit(store.check_bucket) if store is not None else None
        plan, pg = make_plan(kit, baseline_rev, target_rev, alembic, strategy)
        if strategy == "clone" and not plan.at_target:
            _clone_preconditions(plan, kit)
        if bucket is not None:
            try:
                bucket.result()
            except StorageError as exc:
                if settings.require_offsite:
                    _remove_empty(plan.run_dir)  # nothing was changed, not even a run directory left behind
                    raise PreflightError(f"{exc} Nothing was changed (CUTOVER_REQUIRE_OFFSITE is on).") from None
                get_run_logger().warning("Off-site copy disabled for this run (CUTOVER_REQUIRE_OFFSITE=false): %s", exc)
                store = None
    plan.write_reading = reading
    get_run_logger().info(
        "Production %s is at %s; target %s (baseline %s); pg tools %s (v%s); run directory %s",
        plan.database, plan.revision_before or "no alembic_version (legacy)", plan.target_rev,
        plan.baseline_rev, pg.bin_dir, pg.major, plan.run_dir,
    )
    return plan, pg, store


def _clone_preconditions(plan: Plan, kit: Toolkit) -> None:
    facts = read_facts(kit.conn, plan.database)
    refusals = facts.refusals()
    if refusals:
        _remove_empty(plan.run_dir)
        raise PreflightError(" ".join(refusals) + " Nothing was changed.")
    for note in facts.unseen():
        get_run_logger().warning("Clone preflight: %s.", note)
        plan.notes.append(note)


def _remove_empty(directory) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass

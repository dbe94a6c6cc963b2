"""The clone strategy's own steps: the clone, its schema against the target built from nothing, the swap."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pg_cutover.backup import dump as backups
from pg_cutover.checks import equivalence, parity
from pg_cutover.checks.baseline import Baseline
from pg_cutover.checks.writes import CounterReading
from pg_cutover.clone import databases
from pg_cutover.errors import StepFailed
from pg_cutover.pg import db
from pg_cutover.pg.tools import PgClient
from pg_cutover.runbook.manifest import BackupRecord
from pg_cutover.runbook.plan import Plan, derived_name
from pg_cutover.runbook.report import human_size
from pg_cutover.tasks.evidence import publish_markdown
from pg_cutover.tasks.parity import comparison_text, first_difference
from pg_cutover.toolkit import Toolkit


@task(name="clone", cache_policy=NO_CACHE, timeout_seconds=4 * 3600)
def create_clone(kit: Toolkit, plan: Plan) -> databases.Clone:
    """`CREATE DATABASE <db>_next_<ts> TEMPLATE <db>`: refused while any other session is on production."""
    made = databases.create_clone(kit.conn, plan.database, plan.scratch_db, plan.server_major)
    get_run_logger().info("Cloned %s into %s in %.1fs (%s)", plan.database, made.name, made.seconds, made.strategy)
    return made


@task(name="clone-schema-parity", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def clone_schema_parity(kit: Toolkit, pg: PgClient, plan: Plan, upgraded: dict, target: Baseline) -> dict:
    """The upgraded clone against the target revision built from nothing, reviewed differences allowed.

    When the run stamps, baseline parity proved the original equal to the baseline, so the
    upgraded clone must equal the target: a difference stops the run. A database that was
    already under Alembic was never compared with a build from nothing: a difference there
    is drift the migrations did not make, shown as a warning.
    """
    clone_side = equivalence.Side("clone", upgraded, normalize=lambda: equivalence.normal_fingerprint(
        kit.conn, pg, plan.scratch_db, equivalence.normal_name(plan.scratch_db)))
    comparison = equivalence.compare(clone_side, target.side(
        kit.conn, pg, derived_name(plan.database, "normal_target", plan.timestamp)))
    remaining, accepted = parity.apply_allowlist(comparison.differences, parity.parse_allowlist(kit.settings.parity_allow))
    comparison.differences = remaining
    text = comparison_text(comparison, f"Schema parity: the upgraded clone `{plan.scratch_db}` vs `{plan.target_rev}` "
                                       "built from nothing", "No differences: the upgraded clone is the target.")
    if len(accepted):
        text += "\n" + parity.render_markdown(accepted, "Accepted by CUTOVER_PARITY_ALLOW (reviewed differences)")
    publish_markdown(plan.database, "clone-schema-parity", text,
                     "The upgraded clone's catalog against the target revision built from nothing")
    if len(remaining) and plan.needs_stamp:
        raise StepFailed(f"The upgraded clone differs from {plan.target_rev} built from nothing in {len(remaining)} "
                         f"ways (first: {first_difference(remaining)}); production untouched.")
    return {"differences": len(remaining), "accepted": len(accepted), "compared": comparison.summary(),
            "first": first_difference(remaining) if len(remaining) else None}


@task(name="swap", cache_policy=NO_CACHE, timeout_seconds=600)
def swap_in(kit: Toolkit, plan: Plan, since: CounterReading | None = None) -> None:
    """Production aside to <db>_before_<ts>, the upgraded clone into its place; with `since`, nothing
    written to production since that reading, counted once its last session has ended."""
    databases.swap(kit.conn, plan.database, plan.scratch_db, plan.before_db, since)
    get_run_logger().info("%s is now the upgraded clone; the original is kept as %s", plan.database, plan.before_db)


@task(name="original-dump", cache_policy=NO_CACHE, timeout_seconds=4 * 3600)
def dump_original(pg: PgClient, plan: Plan, compression: str | None,
                  check_db: str | None) -> tuple[BackupRecord, backups.StreamedRestore | None]:
    """`pg_dump -Fc` of the original, frozen since the swap, as production's pre-cutover backup; with
    `check_db`, restored into it from the file while the dump writes it (one pass, as the runbook's scratch)."""
    if check_db is None:
        record, restoring = backups.plain_backup(pg, plan.before_db, plan.backup_path, compression=compression), None
    else:
        outcome, restoring = backups.stream_backup(pg, plan.before_db, plan.backup_path, check_db,
                                                   compression=compression)
        record = outcome.record
    get_run_logger().info("The original %s dumped after the window: %s (%s)", plan.before_db, record.path,
                          human_size(record.size_bytes))
    return record, restoring


@task(name="original-restore-check", cache_policy=NO_CACHE, timeout_seconds=4 * 3600)
def restore_check(kit: Toolkit, plan: Plan, restoring: backups.StreamedRestore, check_db: str,
                  expected: dict[str, int]) -> dict:
    """The dump's restore finished: every table's row count must be the original's."""
    seconds = restoring.wait()
    counts = db.row_counts(kit.conn, check_db, list(expected))
    diff = {t: (expected[t], counts.get(t)) for t in expected if counts.get(t) != expected[t]}
    if diff:
        raise StepFailed("The original's dump does not restore its rows: "
                         + ", ".join(f"{t} {a} != {b}" for t, (a, b) in diff.items()))
    return {"database": check_db, "tables": len(counts), "rows": sum(counts.values()), "seconds": seconds}

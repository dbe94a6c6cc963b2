"""Runbook section 3: the dry run on a scratch copy restored from the backup."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pg_cutover.backup.dump import StreamedRestore
from pg_cutover.errors import StepFailed
from pg_cutover.migrations.session import AlembicSession
from pg_cutover.pg import db
from pg_cutover.runbook.plan import Plan
from pg_cutover.tasks import progress  # noqa: F401 (its steps' byte counts reach the log and the progress artifact)
from pg_cutover.tasks.evidence import code_block, publish_markdown
from pg_cutover.toolkit import Toolkit


@task(name="scratch-restore", cache_policy=NO_CACHE, timeout_seconds=4 * 3600)
def restore_scratch(kit: Toolkit, plan: Plan, restore: StreamedRestore, expected: dict[str, int]) -> dict[str, int]:
    """3.1 finished, and proof the backup restores: every table's row count equals production's."""
    seconds = restore.wait()
    counts = db.row_counts(kit.conn, plan.scratch_db, list(expected))
    diff = {t: (expected[t], counts.get(t)) for t in expected if counts.get(t) != expected[t]}
    if diff:
        raise StepFailed(
            "The scratch restore does not hold the rows production had: "
            + ", ".join(f"{t} {a} != {b}" for t, (a, b) in diff.items())
        )
    get_run_logger().info("Scratch %s restored from the backup in %.1fs: %s rows in %s tables", plan.scratch_db,
                          seconds, sum(counts.values()), len(counts))
    return counts


@task(name="scratch-migrate", cache_policy=NO_CACHE, timeout_seconds=4 * 3600)
def migrate_scratch(kit: Toolkit, plan: Plan, session: AlembicSession | None = None) -> str:
    """3.2 and 3.3: stamp (when legacy), upgrade, current; pass when scratch reaches the target.

    The three commands share one interpreter (one database, in order, stopping at the first
    failure), started ahead of time when a warm `session` is given; each keeps its own transcript.
    """
    commands = ([("stamp", plan.baseline_rev)] if plan.needs_stamp else []) + [("upgrade", plan.target_rev), ("current",)]
    transcripts: list[str] = []
    how = ""
    try:
        results = (session.run_many(commands) if session is not None
                   else kit.alembic.run_many(plan.scratch_db, commands))
        transcripts = [r.transcript() for r in results]
    except Exception as exc:
        transcripts = [r.transcript() for r in getattr(exc, "results", [])]
        transcripts.append(f"FAILED: {exc}")
        raise
    finally:
        if session is not None and session.warm:
            how = ("\n\nThe commands ran in order in one interpreter started before they were due "
                   "(`pg_cutover/migrations/alembic_driver.py --serve`, alembic's own command line), each with its own output "
                   "and exit code below.")
        elif kit.alembic.driver_argv() is not None and len(commands) > 1:
            how = ("\n\nThe commands ran in order in one interpreter (`pg_cutover/migrations/alembic_driver.py`, alembic's own "
                   "command line), each with its own output and exit code below.")
        publish_markdown(
            plan.database,
            "scratch-alembic",
            f"# Scratch dry run on `{plan.scratch_db}`{how}\n\n" + "\n".join(code_block(t) for t in transcripts),
            "Runbook 3.2/3.3: alembic stamp, upgrade and current on the scratch copy",
        )
    revision = db.alembic_revision(kit.conn, plan.scratch_db)
    if revision != plan.target_rev:
        raise StepFailed(f"Scratch ended at revision {revision!r}, not the target {plan.target_rev!r}.")
    return revision

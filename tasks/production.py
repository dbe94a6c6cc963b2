"""Runbook section 4: stamp and upgrade production, only after the scratch pass.

No retry policy here: a second `stamp` or `upgrade` after a partial failure is a
decision for the rollback. The one exception is an attempt that lost a race for a
lock and provably changed nothing (pg_cutover.migrations.lock_retry).
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pg_cutover.errors import StepFailed
from pg_cutover.migrations import lock_retry
from pg_cutover.migrations.session import AlembicSession
from pg_cutover.pg import db
from pg_cutover.runbook.plan import Plan
from pg_cutover.tasks.evidence import code_block, publish_markdown, publish_table
from pg_cutover.toolkit import Toolkit


def _attempts(kit: Toolkit, plan: Plan, what: str, command, attempts: list[dict], atomic: bool):
    """`command` under pg_cutover.migrations.lock_retry; every attempt appended to `attempts` and logged."""
    log = get_run_logger()

    def record(attempt: lock_retry.Attempt) -> None:
        attempts.append(attempt.as_dict())
        if attempt.outcome != "succeeded" or attempt.number > 1:
            holders = "; ".join(f"pid {h.get('pid')} {h.get('application_name') or h.get('usename') or ''} holding "
                                f"{', '.join(h.get('locked_relations') or []) or 'nothing'}"
                                for h in attempt.holders) or "no session holds a lock now"
            log.warning("%s attempt %d on %s: %s (%s)", what, attempt.number, plan.database, attempt.outcome, holders)

    try:
        return lock_retry.with_lock_retries(command, kit.conn, plan.database, retries=kit.settings.lock_retries,
                                            first_wait=kit.settings.lock_retry_wait, on_attempt=record,
                                            atomic=atomic)
    finally:
        if len(attempts) > 1:
            publish_table(plan.database, f"{what}-attempts",
                          [{**a, "holders": "; ".join(str(h) for h in a["holders"]) or "-"} for a in attempts],
                          f"Every attempt at {what} on production, with the sessions holding locks at that moment")


@task(name="production-stamp", cache_policy=NO_CACHE, timeout_seconds=3600)
def stamp_production(kit: Toolkit, plan: Plan, session: AlembicSession | None = None,
                     attempts: list[dict] | None = None) -> str:
    """4.1, in the warm interpreter when a `session` for production is given."""
    run = (lambda: session.run("stamp", plan.baseline_rev)) if session else \
        (lambda: kit.alembic.stamp(plan.database, plan.baseline_rev))
    # A stamp writes alembic_version alone, in one transaction.
    result = _attempts(kit, plan, "production-stamp", run, attempts if attempts is not None else [], atomic=True)
    revision = db.alembic_revision(kit.conn, plan.database)
    if revision != plan.baseline_rev:
        raise StepFailed(f"Production is at {revision!r} after the stamp, not {plan.baseline_rev!r}.")
    get_run_logger().info("Production stamped at %s", revision)
    return result.transcript()


@task(name="production-upgrade", cache_policy=NO_CACHE, timeout_seconds=4 * 3600)
def upgrade_production(kit: Toolkit, plan: Plan, session: AlembicSession | None = None,
                       attempts: list[dict] | None = None, single_transaction: bool = False) -> str:
    """4.2, in the same warm interpreter as the stamp when a `session` is given.

    `single_transaction`: the upgrade's offline SQL is one transaction (upgrade-sql), so a lock
    timeout that left alembic_version unchanged rolled all of it back.
    """
    run = (lambda: session.run("upgrade", plan.target_rev)) if session else \
        (lambda: kit.alembic.upgrade(plan.database, plan.target_rev))
    result = _attempts(kit, plan, "production-upgrade", run, attempts if attempts is not None else [],
                       atomic=single_transaction)
    get_run_logger().info("Production upgraded to %s in %.1fs", plan.target_rev, result.seconds)
    return result.transcript()


@task(name="production-current", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, timeout_seconds=600)
def production_current(kit: Toolkit, plan: Plan, transcripts: list[str]) -> str:
    """4.3: what `alembic current` reports, read from alembic_version itself, as evidence and decision.

    `alembic current` is `SELECT version_num FROM alembic_version` marked "(head)" when the
    revision is a head of the script directory; the heads were read at preflight from the
    same directory the upgrade just ran, so this is the same evidence without a third
    interpreter start on production.
    """
    revision = db.alembic_revision(kit.conn, plan.database)
    publish_markdown(
        plan.database,
        "production-current",
        f"# Production `{plan.database}`: revision `{revision}`\n\n"
        + "\n".join(code_block(t) for t in [*transcripts, current_transcript(plan, revision)]),
        "Runbook 4.1-4.3: production stamp, upgrade and current",
    )
    if revision != plan.target_rev:
        raise StepFailed(f"Production is at revision {revision!r}, not the target {plan.target_rev!r}.")
    return revision


def current_transcript(plan: Plan, revision: str | None) -> str:
    """The lines `alembic current` prints, with where they come from."""
    line = "(no revision: alembic_version is empty or missing)" if revision is None else (
        f"{revision} (head)" if revision in plan.heads else revision)
    return (f"$ alembic current  # on {plan.database}: SELECT version_num FROM alembic_version; "
            f"heads of the script directory: {', '.join(plan.heads) or 'none'}\n{line}")

"""The cutover's steps in one table: each step's name, runbook section, whether it changes
production, and when it is part of a run. The flow records steps by these names; the progress
artifact's plan, the manifest's "production touched" and the step statuses are read from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    """A step's status in the manifest."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    WARNING = "warning"  # ran, and could not do all it should (a check that could not run, say why)


class RunStatus(StrEnum):
    """A cutover run's status in the manifest."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NOOP = "noop"  # production already at the target
    DRY_RUN = "dry-run"
    DEFERRED = "deferred"  # not enough window left: production untouched
    CRASHED = "crashed"  # set by its rollback: the process died mid-run


class RollbackStatus(StrEnum):
    RUNNING = "running"
    RESTORED = "restored"
    NOT_NEEDED = "not-needed"  # production was never touched
    NOT_STARTED = "not-started"  # automatic rollback off for that cutover
    REFUSED = "refused"  # production changed since the cutover: a human decides
    FAILED = "failed"


@dataclass(frozen=True)
class Step:
    name: str
    section: str  # the runbook's section it carries out
    changes_production: bool = False
    # When it is part of a run (recorded, run or skipped); None: in every run that is not at the target.
    when: str | None = None


# In the order a run records them. `when`: "at_target", "sampled" (CUTOVER_WRITE_FREEZE is not off),
# "mirrored" (a bucket is set), "production" (not a dry run), "linted production" (not a dry run and
# CUTOVER_LINT is not off).
CUTOVER: tuple[Step, ...] = (
    Step("validate-unchanged", "5", when="at_target"),
    Step("writes-paused", "1"),
    Step("baseline-parity", "3 (proof before stamping)"),
    Step("row-counts", "2"),
    Step("backup-full", "2.1"),
    Step("backup-schema", "2.2"),
    Step("backup-verify", "2.3"),
    Step("scratch-restore", "3.1"),
    Step("writes-sample", "1", when="sampled"),
    Step("data-parity", "3.1"),
    Step("scratch-amcheck", "3.1"),
    Step("scratch-migrate", "3.2-3.3"),
    Step("offsite-mirror", "2 (off-site copy)", when="mirrored"),
    Step("upgrade-sql", "4 (review)", when="linted production"),
    Step("window-check", "1", when="production"),
    Step("writes-still-paused", "1", when="sampled production"),
    Step("blocking-sessions", "4", when="production"),
    # Recorded (as skipped) in a dry run too.
    Step("production-stamp", "4.1", changes_production=True),
    Step("production-upgrade", "4.2", changes_production=True),
    Step("production-current", "4.3", when="production"),
    # From here production may differ from the backup even if the upgrade's own steps were skipped.
    Step("validate", "5", changes_production=True, when="production"),
    Step("scratch-drop", "7"),
)

# Steps after which production may differ from the backup: a failure from here on needs the
# restore-from-backup rollback.
PRODUCTION_STEPS = tuple(step.name for step in CUTOVER if step.changes_production)
NAMES = frozenset(step.name for step in CUTOVER) | {"start-backend", "offsite-prune"}  # the two on demand


def plan(*, at_target: bool, dry_run: bool, sampled: bool, mirrored: bool, linted: bool) -> list[str]:
    """The steps a run will record, in order (start-backend and offsite-prune, run on demand, left out)."""
    if at_target:
        return ["validate-unchanged"]
    facts = {"sampled": sampled, "mirrored": mirrored, "production": not dry_run, "linted": linted}
    return [step.name for step in CUTOVER
            if step.when != "at_target" and all(facts[word] for word in (step.when or "").split())]

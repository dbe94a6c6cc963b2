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
    NOT_APPROVED = "not-approved"  # the checklist came back incomplete: nothing changed
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


# In the order a run records them. `when`: words that must all hold: "at_target", "runbook" or
# "clone" (CUTOVER_STRATEGY), "sampled" (CUTOVER_WRITE_FREEZE is not off), "mirrored" (a bucket is
# set), "production" (not a dry run), "dry" (a dry run), "linted" (CUTOVER_LINT is not off).
CUTOVER: tuple[Step, ...] = (
    Step("validate-unchanged", "5", when="at_target"),
    # What the approver reads, published before the form, and off the write-pause window.
    Step("baseline-parity", "3 (proof before stamping)"),
    Step("upgrade-sql", "4 (review)", when="linted production"),
    Step("approval", "1"),
    Step("writes-paused", "1"),
    Step("row-counts", "2", when="runbook"),  # the clone strategy counts in data-parity, after the clone
    Step("backup-full", "2.1", when="runbook"),
    Step("backup-schema", "2.2", when="runbook"),
    Step("backup-verify", "2.3", when="runbook"),
    Step("scratch-restore", "3.1", when="runbook"),
    Step("writes-sample", "1", when="sampled runbook"),
    # The clone strategy: a file-level copy of the paused database is the dry run and the candidate.
    Step("clone", "3.1 (clone)", when="clone"),
    Step("data-parity", "3.1"),
    Step("scratch-amcheck", "3.1", when="runbook"),
    Step("scratch-migrate", "3.2-3.3", when="runbook"),
    Step("clone-amcheck", "3.1 (clone)", when="clone"),
    Step("clone-migrate", "3.2-3.3 (clone)", when="clone"),
    Step("clone-schema-parity", "3.3 (clone)", when="clone"),
    Step("offsite-mirror", "2 (off-site copy)", when="mirrored runbook"),
    Step("window-check", "1", when="production"),
    Step("writes-still-paused", "1", when="sampled production"),
    # Baseline parity ran before the approval: DDL since then would make the stamp a false claim.
    Step("baseline-unchanged", "3 (proof before stamping)", when="runbook production"),
    Step("blocking-sessions", "4", when="runbook production"),
    # Recorded (as skipped) in a dry run too.
    Step("production-stamp", "4.1", changes_production=True, when="runbook"),
    Step("production-upgrade", "4.2", changes_production=True, when="runbook"),
    Step("production-current", "4.3", when="runbook production"),
    # The clone takes production's name: from its first rename on, production is not the original.
    Step("swap", "4 (clone)", changes_production=True, when="clone production"),
    # From here production may differ from the backup even if the upgrade's own steps were skipped.
    Step("validate", "5", changes_production=True, when="production"),
    # The clone strategy, after the window (the backend already serving): the original kept, backed up.
    Step("original-dump", "2.1 (after the window)", when="clone production"),
    Step("original-verify", "2.3 (after the window)", when="clone production"),
    Step("original-restore-check", "2.3 (after the window)", when="clone production"),
    Step("original-offsite", "2 (off-site copy, after the window)", when="clone mirrored production"),
    Step("scratch-drop", "7", when="runbook"),
    Step("clone-drop", "7 (clone)", when="clone dry"),
)

# Steps after which production may differ from the backup: a failure from here on needs the
# restore-from-backup rollback.
PRODUCTION_STEPS = tuple(step.name for step in CUTOVER if step.changes_production)
NAMES = frozenset(step.name for step in CUTOVER) | {"start-backend", "offsite-prune"}  # the two on demand


def plan(*, at_target: bool, dry_run: bool, sampled: bool, mirrored: bool, linted: bool,
         strategy: str = "runbook") -> list[str]:
    """The steps a run will record, in order (start-backend and offsite-prune, run on demand, left out)."""
    if at_target:
        return ["validate-unchanged"]
    facts = {"sampled": sampled, "mirrored": mirrored, "production": not dry_run, "dry": dry_run, "linted": linted,
             "runbook": strategy == "runbook", "clone": strategy == "clone"}
    return [step.name for step in CUTOVER
            if step.when != "at_target" and all(facts[word] for word in (step.when or "").split())]

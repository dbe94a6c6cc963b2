"""The fleet's bookkeeping without Prefect: one row per target, the summary, and its report."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

FLEET_LIMIT = "pg-cutover-fleet"
DRY_RUN_PASSED = "dry run passed"
# A target that ended in one of these needs nobody: the fleet's run is Completed only when all did.
PASSED = ("succeeded", "noop", DRY_RUN_PASSED)
FINAL = (*PASSED, "rolled back", "failed", "skipped", "cancelled")
# A cutover's own status (its `<db>-outcome` row) in the words of the fleet's table: a dry run changed
# nothing, so it never reads as a cutover.
TARGET_STATUS = {"dry-run": DRY_RUN_PASSED}


def target_status(outcome_status: str | None) -> str:
    """The fleet row's status for a cutover run that completed, from the status its outcome row gives."""
    return TARGET_STATUS.get(outcome_status or "succeeded", outcome_status or "succeeded")


def host_limit_name(host_key: str) -> str:
    """The global concurrency limit shared by every cutover on one PostgreSQL host."""
    return f"pg-host:{host_key}"


@dataclass
class FleetRow:
    target: str
    database: str
    host: str
    status: str = "queued"
    revision_before: str = ""
    revision_after: str = ""
    started: str = ""
    finished: str = ""
    seconds: float | None = None
    backup_key: str = ""
    rollback: str = ""
    flow_run: str = ""
    note: str = ""


def utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class FleetBoard:
    """Rows updated from the threads that run the targets; every change is handed to `publish`."""

    rows: list[FleetRow]
    publish: object = None  # callable(list[dict]) or None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def update(self, target: str, *, publish: bool = True, **values) -> FleetRow:
        with self._lock:
            row = next(r for r in self.rows if r.target == target)
            for key, value in values.items():
                setattr(row, key, value)
            # Posted under the lock: versions reach the API in the order they were taken, so the newest
            # is never an older snapshot that lost a race.
            if publish and callable(self.publish):
                self.publish(self.table())
        return row

    def table(self) -> list[dict]:
        return [asdict(r) for r in self.rows]

    def counts(self) -> dict[str, int]:
        return count_statuses(self.rows)


def count_statuses(rows: list[FleetRow]) -> dict[str, int]:
    return count_statuses_of(row.status for row in rows)


def count_statuses_of(statuses) -> dict[str, int]:
    found: dict[str, int] = {}
    for status in statuses:
        found[status] = found.get(status, 0) + 1
    return found


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """How many intervals were open at once, at most (an interval ending as another starts does not overlap)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda e: (e[0], e[1]))
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


def outcome_line(rows: list[FleetRow], *, seconds: float, dry_run: bool) -> str:
    """The fleet run's one-line message: a dry run says it passed, and never that anything was cut over."""
    failed = [r.target for r in rows if r.status not in PASSED]
    noun = "target" if len(rows) == 1 else "targets"
    if failed:
        did_not = "did not pass the dry run" if dry_run else "did not cut over"
        return (f"{len(failed)} of {len(rows)} {noun} {did_not}: {', '.join(failed)} ({seconds:.0f} s; see the "
                "fleet-report artifact).")
    noop = sum(1 for r in rows if r.status == "noop")
    already = f" ({noop} already at the target revision)" if noop else ""
    if dry_run:
        return f"Dry run passed on {len(rows)} {noun}{already} in {seconds:.0f} s; no production database was touched."
    return f"{len(rows)} {noun} cut over{already} in {seconds:.0f} s."


def render_fleet_report(rows: list[FleetRow], *, policy: str, per_host_limit: int, max_parallel: int,
                        started: str, finished: str, seconds: float, halted_by: str | None,
                        dry_run: bool = False) -> str:
    counts = count_statuses(rows)
    lines = [
        f"# Fleet {'dry run' if dry_run else 'cutover'}: {len(rows)} targets",
        "",
        outcome_line(rows, seconds=seconds, dry_run=dry_run),
        "",
        f"Started {started}, finished {finished} ({seconds:.0f} s). Policy `{policy}`, at most {per_host_limit} "
        f"cutovers per PostgreSQL host and {max_parallel} in all."
        + (" A dry run: each target stopped after its dry run, and no production database was touched."
           if dry_run else ""),
        "",
        "Outcome: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + ".",
    ]
    if halted_by:
        lines += ["", f"**Halted** after {halted_by} failed: targets not yet started were skipped."]
    lines += ["", "| target | database | host | status | revision before | revision after | seconds | backup key "
              "| rollback | note |", "|---|---|---|---|---|---|---:|---|---|---|"]
    for r in rows:
        secs = f"{r.seconds:.1f}" if r.seconds is not None else ""
        lines.append(f"| {r.target} | {r.database} | {r.host} | {r.status} | {r.revision_before} | {r.revision_after} "
                     f"| {secs} | {r.backup_key} | {r.rollback} | {r.note.replace('|', '/')} |")
    failed = [r for r in rows if r.status in ("rolled back", "failed")]
    if failed:
        lines += ["", "## Failed targets", ""]
        lines += [f"- **{r.target}** ({r.database}): {r.note or r.status}; rollback: {r.rollback or 'none'}; "
                  f"cutover flow run `{r.flow_run}`." for r in failed]
    return "\n".join(lines) + "\n"

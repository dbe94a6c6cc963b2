"""How many cutover backups to keep off-site, and which ones may never go.

Kept whatever the count: the newest successful cutover's backup (the state
production is known to have reached), and every run that has not ended (its
rollback may still need it) or whose manifest cannot be read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pg_cutover.runbook.manifest import MANIFEST_NAME, Manifest
from pg_cutover.storage.s3 import S3Store


@dataclass
class PrunePlan:
    database: str
    keep: list[tuple[str, str]] = field(default_factory=list)  # (timestamp, reason)
    delete: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, str]]:
        rows = [{"run": ts, "action": "keep", "reason": why} for ts, why in self.keep]
        rows += [{"run": ts, "action": "delete", "reason": "older than the newest kept runs"} for ts in self.delete]
        return sorted(rows, key=lambda r: r["run"])


def _manifest(store: S3Store, database: str, timestamp: str) -> Manifest | None:
    text = store.get_text(store.run_prefix(database, timestamp) + MANIFEST_NAME)
    if text is None:
        return None
    try:
        return Manifest.model_validate_json(text)
    except ValueError:
        return None


def plan_prune(store: S3Store, database: str, keep: int) -> PrunePlan:
    runs = store.list_runs(database)
    plan = PrunePlan(database)
    if keep == 0:
        plan.keep = [(ts, "CUTOVER_S3_KEEP=0 keeps all") for ts in runs]
        return plan
    newest = set(runs[-keep:])
    manifests = {ts: _manifest(store, database, ts) for ts in runs}
    succeeded = [ts for ts in runs if manifests[ts] is not None and manifests[ts].status == "succeeded"]
    newest_success = succeeded[-1] if succeeded else None
    for ts in runs:
        m = manifests.get(ts)
        if ts in newest:
            plan.keep.append((ts, f"among the newest {keep}"))
        elif ts == newest_success:
            plan.keep.append((ts, "newest successful cutover"))
        elif m is None:
            plan.keep.append((ts, "manifest unreadable: kept to be safe"))
        elif m.status == "running":
            plan.keep.append((ts, "run has not ended"))
        else:
            plan.delete.append(ts)
    return plan


def apply_prune(store: S3Store, plan: PrunePlan) -> int:
    return sum(store.delete_prefix(store.run_prefix(plan.database, ts)) for ts in plan.delete)

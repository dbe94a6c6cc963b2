"""When the clone strategy's original may go: its dump proven, and the keep time past.

The original is production's state before the cutover, untouched since the swap. It is
dropped only when its dump verified after the window (the SHA-256 checked again now, on
the file itself), its restore check passed when one ran, its off-site copy verified when a
bucket is configured, and CUTOVER_KEEP_ORIGINAL_HOURS have passed since the swap. Every
other case keeps it and says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from psycopg2 import sql

from pg_cutover.clone.databases import describe_sessions, name_of, sessions_on
from pg_cutover.digest import sha256_file
from pg_cutover.pg import db
from pg_cutover.pg.db import ConnInfo
from pg_cutover.runbook.manifest import MANIFEST_NAME, Manifest, load_manifest


@dataclass
class Decision:
    manifest: Path
    database: str
    original: str
    drop: bool
    reason: str

    def row(self) -> dict[str, str]:
        return {"database": self.database, "original": self.original,
                "action": "drop" if self.drop else "keep", "reason": self.reason, "manifest": str(self.manifest)}


def kept_originals(backup_dir: Path, conn: ConnInfo) -> list[tuple[Path, Manifest]]:
    """Every clone-strategy run under backup_dir, on this server, whose swap completed and original still stands."""
    found = []
    for path in sorted(Path(backup_dir).glob(f"*/*/{MANIFEST_NAME}")):
        try:
            m = load_manifest(path)
        except Exception:
            continue  # not ours to judge: another tool's file, or half written
        if (m.strategy == "clone" and m.clone is not None and m.clone.swapped_at and not m.clone.original_dropped_at
                and (m.host, m.port) == (conn.host, conn.port)):
            found.append((path, m))
    return found


def decide(path: Path, m: Manifest, *, keep_hours: float, bucket_configured: bool,
           now: datetime | None = None) -> Decision:
    now = now or datetime.now(timezone.utc)
    clone = m.clone

    def keep(reason: str) -> Decision:
        return Decision(path, m.database, clone.before, False, reason)

    if m.rollback is not None and m.rollback.status == "restored":
        return keep("the cutover was rolled back: the original is production again")
    if m.backup is None or not clone.dump_verified:
        return keep("its dump after the window is missing or did not verify")
    dump = Path(m.backup.path)
    if not dump.is_file():
        return keep(f"its dump {dump} is no longer on disk")
    if sha256_file(dump) != m.backup.sha256:
        return keep(f"its dump {dump} no longer has the SHA-256 the manifest recorded")
    if any(s.name == "original-restore-check" and s.status not in ("succeeded", "skipped") for s in m.steps):
        return keep("its dump's restore check did not pass")
    if bucket_configured and not clone.offsite_verified:
        return keep("a bucket is configured and its dump's off-site copy was not verified")
    until = datetime.fromisoformat(clone.swapped_at) + timedelta(hours=keep_hours)
    if now < until:
        return keep(f"kept until {until.isoformat(timespec='seconds')} (CUTOVER_KEEP_ORIGINAL_HOURS={keep_hours:g})")
    return Decision(path, m.database, clone.before, True,
                    f"dump verified ({m.backup.sha256[:12]}...), {keep_hours:g} h since the swap passed")


def drop_original(conn: ConnInfo, m: Manifest) -> str | None:
    """Drop the original by OID; None when dropped, else why it was not (nothing is forced)."""
    clone = m.clone
    name = name_of(conn, clone.original_oid)
    if name is None:
        return "it no longer exists"
    if name != clone.before:
        return f"it is now named {name}, not {clone.before}: renamed since, so somebody uses it"
    others = sessions_on(conn, name)
    if others:
        return f"sessions are connected to it ({describe_sessions(others)})"
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
    return None

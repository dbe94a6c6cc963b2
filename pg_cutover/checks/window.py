"""The maintenance window: may production be touched now, with time left to finish or undo it?

A run that would start the production upgrade with less time left than the
upgrade plus a full rollback (both estimated from the timings just measured on
the scratch copy) is deferred: the window closing on a half-done rollback is
the outcome this avoids.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

SAFETY_FACTOR = 1.5  # production is rarely faster than its scratch copy
FIXED_ROLLBACK_SECONDS = 30.0  # stop/start backend, renames, health wait: no data-sized work


@dataclass
class Window:
    start: datetime | None  # the scheduled (expected) start of the run
    end: datetime | None

    @classmethod
    def resolve(cls, scheduled_start: datetime | None, end: datetime | None, minutes: int | None) -> "Window":
        if end is None and minutes is not None and scheduled_start is not None:
            end = scheduled_start + timedelta(minutes=minutes)
        return cls(scheduled_start, end)

    @property
    def defined(self) -> bool:
        return self.end is not None


@dataclass
class WindowCheck:
    ok: bool
    reason: str
    now: str
    window_end: str | None
    seconds_left: float | None
    upgrade_estimate: float | None = None
    rollback_estimate: float | None = None
    needed_seconds: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def check_start(window: Window, now: datetime | None = None) -> WindowCheck:
    """Before anything: a run that starts after its window closed does nothing."""
    now = now or datetime.now(timezone.utc)
    if not window.defined:
        return WindowCheck(True, "no maintenance window configured", now.isoformat(), None, None)
    left = (window.end - now).total_seconds()
    if left <= 0:
        return WindowCheck(False, f"started {-left:.0f} s after the window closed", now.isoformat(),
                           window.end.isoformat(), left)
    return WindowCheck(True, f"{left:.0f} s left in the window", now.isoformat(), window.end.isoformat(), left)


def check_production(window: Window, upgrade_estimate: float, restore_estimate: float,
                     now: datetime | None = None) -> WindowCheck:
    """Before the first production change: time left >= (upgrade + full rollback) x safety."""
    now = now or datetime.now(timezone.utc)
    rollback = restore_estimate + FIXED_ROLLBACK_SECONDS
    needed = (upgrade_estimate + rollback) * SAFETY_FACTOR
    if not window.defined:
        return WindowCheck(True, "no maintenance window configured", now.isoformat(), None, None,
                           upgrade_estimate, rollback, needed)
    left = (window.end - now).total_seconds()
    ok = left >= needed
    reason = (f"{left:.0f} s left >= {needed:.0f} s needed" if ok else
              f"only {max(left, 0):.0f} s left, {needed:.0f} s needed for the upgrade and a full rollback")
    return WindowCheck(ok, reason, now.isoformat(), window.end.isoformat(), left, upgrade_estimate, rollback, needed)

"""Byte counts of the long steps (dump, restore, upload), said every few seconds while a step runs.

An 800 MB dump is 20 s without a word otherwise. What is counted is what the tool can see without
asking the database: the size of the file pg_dump writes, the bytes piped into pg_restore, the items
pg_restore's --verbose lines say it has done, boto3's transfer callback. A `Ticker` samples such a
count on a thread of its own that ends with the step; the readings go to whatever reporters the
layer above installed (the run's log and its progress artifact). Reporting is best effort: a
reporter that fails is ignored, never the step's failure.
"""

from __future__ import annotations

import contextvars
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

INTERVAL_ENV = "CUTOVER_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 3.0
# Below this a ticker would cost more than the step it watches; above it a step looks hung.
MIN_INTERVAL, MAX_INTERVAL = 0.05, 60.0


def interval() -> float:
    """Seconds between two readings: CUTOVER_PROGRESS_SECONDS, default 3; a bad value keeps the default."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    try:
        seconds = float(raw) if raw else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL  # progress is a courtesy: a typo in it must not stop a cutover
    if not math.isfinite(seconds):
        return DEFAULT_INTERVAL
    return min(MAX_INTERVAL, max(MIN_INTERVAL, seconds))


def human_bytes(n: float) -> str:
    """Decimal units, as a disk or a network speed is read: 412 MB, 1.2 GB."""
    n = max(0.0, float(n))
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{int(n)} B"


@dataclass(frozen=True)
class Count:
    """One sample of a step's work: bytes done, and what else is cheaply known."""

    done: int
    total: int | None = None  # bytes expected, when known ("of ~800 MB")
    items: int | None = None  # pg_restore's TOC items done
    items_total: int | None = None
    note: str = ""  # work running beside the step's own (the scratch restore fed during the dump)


@dataclass(frozen=True)
class Reading:
    step: str
    verb: str  # "written", "fed", "uploaded"; empty when only items are counted
    count: Count
    rate: float  # bytes per second since the previous reading

    @property
    def done(self) -> int:
        return self.count.done

    def progress(self) -> str:
        """What is done, without the step's name: '412 MB of ~800 MB written (38 MB/s)'."""
        c = self.count
        parts = []
        if self.verb:  # no verb: the bytes are not what moves (a restore reading its file at its own pace)
            total = f" of ~{human_bytes(c.total)}" if c.total else ""
            parts.append(f"{human_bytes(c.done)}{total} {self.verb} ({human_bytes(self.rate)}/s)")
        if c.items is not None:
            noun = "item" if (c.items_total or c.items) == 1 else "items"
            parts.append(f"{c.items}" + (f" of {c.items_total}" if c.items_total else "") + f" {noun} restored")
        return ", ".join(parts) + (f"; {c.note}" if c.note else "")

    def describe(self) -> str:
        return f"{self.step}: {self.progress()}"


Reporter = Callable[[Reading], object]
_reporters: list[Reporter] = []


def install(reporter: Reporter) -> None:
    """Where readings go (the task layer installs the run's log and progress artifact); once per reporter."""
    if reporter not in _reporters:
        _reporters.append(reporter)


def uninstall(reporter: Reporter) -> None:
    if reporter in _reporters:
        _reporters.remove(reporter)


class Ticker:
    """Samples `sample()` every `interval()` seconds while the step runs, and hands each reading on.

    Used as a context manager around the step's work: the thread starts with it and is stopped and
    joined when it ends, so no reading is said after the step. The thread runs in a copy of the
    caller's context, so the run's logger and the artifacts' run ids are the step's own.
    """

    def __init__(self, step: str, verb: str, sample: Callable[[], Count], *, seconds: float | None = None):
        self.step, self.verb, self.sample = step, verb, sample
        self.seconds = seconds if seconds is not None else interval()
        self.readings = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Ticker":
        if _reporters:  # nobody to tell: no thread
            context = contextvars.copy_context()
            self._thread = threading.Thread(target=context.run, args=(self._loop,), daemon=True,
                                            name=f"progress-{self.step}")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _loop(self) -> None:
        try:  # the rate is from now on: a restore fed before its step began has not done that in no time
            last_done = self.sample().done
        except Exception:
            last_done = 0
        last_at = time.monotonic()
        while not self._stop.wait(self.seconds):
            try:
                count = self.sample()
                now = time.monotonic()
                rate = (count.done - last_done) / max(now - last_at, 1e-6)
                last_done, last_at = count.done, now
                reading = Reading(self.step, self.verb, count, max(0.0, rate))
            except Exception:
                continue  # a file not there yet, a process gone: the next tick tries again
            if not count.done and not count.items:
                continue  # nothing under way yet: "0 B" says less than silence
            if self._stop.is_set():
                return  # the step ended while sampling: its own end is the last word
            self.readings += 1
            for reporter in list(_reporters):
                try:
                    reporter(reading)
                except Exception:
                    pass  # progress must never fail a step


class LineCounter:
    """Counts pg_restore's finished TOC items from its --verbose stderr, read incrementally from a file.

    A serial restore says "creating ..." or "processing data for table ..." as it starts each item,
    so every item but the one under way is finished. A parallel one does its first items that way,
    then says "finished item <id>" as each ends after "entering main parallel loop" (where it also
    says "creating", which is not counted).
    """

    def __init__(self, fileno: int, ids: set[str] | None = None):
        self.fileno = fileno
        self.ids = ids  # the archive's listed items: only those are counted, so "k of n" is exact
        self._started = 0  # serially
        self._finished = 0  # in the parallel loop
        self._offset = 0
        self._partial = b""
        self._parallel = False
        self._lock = threading.Lock()

    def count(self) -> int:
        with self._lock:
            while chunk := os.pread(self.fileno, 1 << 16, self._offset):
                self._offset += len(chunk)
                *lines, self._partial = (self._partial + chunk).split(b"\n")
                for line in lines:
                    self._line(line.decode(errors="replace"))
            if self._parallel:
                return self._started + self._finished
            return max(0, self._started - 1)

    def _line(self, line: str) -> None:
        if line.startswith("pg_restore: entering main parallel loop"):
            self._parallel = True
        elif self._parallel:
            words = line.split()
            if line.startswith("pg_restore: finished item ") and (self.ids is None or words[3] in self.ids):
                self._finished += 1
        elif line.startswith(("pg_restore: creating ", "pg_restore: processing data for table ")):
            self._started += 1


# pg_restore's --verbose lines, which say what it did rather than what went wrong.
_CHATTER = ("pg_restore: connecting to database", "pg_restore: creating ", "pg_restore: processing ",
            "pg_restore: launching item ", "pg_restore: finished item ", "pg_restore: entering main parallel loop",
            "pg_restore: finished main parallel loop", "pg_restore: executing ", "pg_restore: setting owner",
            "pg_restore: dropping ", "pg_restore: disabling triggers", "pg_restore: enabling triggers",
            "pg_restore: implied data-only restore")


def without_chatter(stderr: str) -> str:
    """pg_restore's stderr without its --verbose lines: what an error message should quote."""
    return "\n".join(line for line in stderr.splitlines() if not line.startswith(_CHATTER))

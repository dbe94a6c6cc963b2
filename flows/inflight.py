"""Work running beside a flow's critical path, owned in one place.

A cutover overlaps what pays at gigabyte scale (the streamed scratch restore, the
off-site upload, production's half of data parity, the baseline build, the
upgrade SQL, warm alembic interpreters). Each piece is started here under a
name, with what settles it should the run end while it is still held: wait for
it, abort it, or record its outcome. The section that needs a piece takes it
(`take`), or uses it and lets go only when that succeeds (`using`). On the way
out, whatever the outcome, every piece still held is settled, newest first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
logger = logging.getLogger("pg-cutover.inflight")


def wait_for(future: Any, failed: bool) -> None:
    """The usual settlement of a Prefect future: its task ends, and says what it saw, before the run does."""
    future.wait()


class InFlight:
    def __init__(self) -> None:
        self._held: dict[str, tuple[Any, Callable[[Any, bool], None]]] = {}

    def start(self, name: str, work: T, settle: Callable[[T, bool], None] = wait_for) -> T:
        if name in self._held:
            raise ValueError(f"{name} is already in flight")
        self._held[name] = (work, settle)
        return work

    def has(self, name: str) -> bool:
        return name in self._held

    def get(self, name: str) -> Any:
        """The piece, still held (and settled on the way out)."""
        return self._held[name][0]

    def take(self, name: str) -> Any:
        """The piece, handed over: the caller answers for it from here on."""
        return self._held.pop(name)[0]

    @contextmanager
    def using(self, name: str) -> Iterator[Any]:
        """The piece for a block; let go only when the block succeeds, else settled on the way out."""
        yield self._held[name][0]
        del self._held[name]

    def __enter__(self) -> "InFlight":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self.settle(failed=exc is not None)

    def settle(self, *, failed: bool) -> None:
        """Settle every piece still held, newest first; one that fails to settle does not stop the others."""
        while self._held:
            name = next(reversed(self._held))
            work, settle = self._held.pop(name)
            try:
                settle(work, failed)
            except Exception as exc:  # the run's own outcome is what it reports
                logger.warning("Could not settle %s on the way out: %s", name, exc)

"""The one owner of a run's work in flight (flows/inflight.py): what is still held on the way out is
settled, newest first, whatever the outcome; what a section took is its own."""

from __future__ import annotations

import pytest

from pg_cutover.flows.inflight import InFlight


class Work:
    def __init__(self, name: str, settled: list[str], fails: bool = False):
        self.name, self.settled, self.fails = name, settled, fails

    def settle(self, failed: bool) -> None:
        self.settled.append(f"{self.name}:{'failed' if failed else 'ok'}")
        if self.fails:
            raise RuntimeError(f"{self.name} could not be settled")


def _settle(work: Work, failed: bool) -> None:
    work.settle(failed)


def test_what_is_still_held_is_settled_newest_first_and_what_was_taken_is_not():
    settled: list[str] = []
    with InFlight() as inflight:
        for name in ("restore", "sample", "mirror", "amcheck"):
            inflight.start(name, Work(name, settled), _settle)
        assert inflight.take("sample").name == "sample"
        with inflight.using("amcheck") as amcheck:  # used, and let go: the block succeeded
            assert amcheck.name == "amcheck"
    assert settled == ["mirror:ok", "restore:ok"]
    assert not inflight.has("mirror")


def test_a_failed_block_keeps_its_piece_and_a_failed_run_settles_everything_even_past_a_settle_that_fails():
    settled: list[str] = []
    with pytest.raises(ValueError, match="restore broke"):
        with InFlight() as inflight:
            inflight.start("mirror", Work("mirror", settled), _settle)
            inflight.start("session", Work("session", settled, fails=True), _settle)
            inflight.start("restore", Work("restore", settled), _settle)
            with inflight.using("restore"):
                raise ValueError("restore broke")
    assert settled == ["restore:failed", "session:failed", "mirror:failed"]


def test_a_name_is_held_once():
    inflight = InFlight()
    inflight.start("mirror", object(), lambda work, failed: None)
    with pytest.raises(ValueError, match="mirror is already in flight"):
        inflight.start("mirror", object(), lambda work, failed: None)

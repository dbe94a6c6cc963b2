"""A warm alembic interpreter for one database, started before its commands are due.

Starting Python with alembic, SQLAlchemy and the app's models takes longer than a
small migration, and on a small machine every start is CPU taken from the dump and
restore. The cutover starts production's session when the flow starts: the same
interpreter reads the revision graph at preflight, renders the upgrade's offline SQL
(neither opens a connection), then stamps and upgrades. The scratch copy's starts
before the backup. When a command is due the interpreter is already up. Each command
is still sent on its own, when its step runs, and comes back with its own transcript,
exit code and seconds (`alembic_driver.py --serve`). One database per session: apps
read their database settings once at import.

When the configured alembic is not a plain local one (`AlembicRunner.driver_argv`
is None: a wrapper or a container), each command runs as its own subprocess, as
before.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

from pg_cutover.errors import CommandFailed
from pg_cutover.migrations import alembic_driver
from pg_cutover.migrations.runner import AlembicRunner, DriverOutput, History, resolve_command
from pg_cutover.process import CommandResult, exit_status, last_lines, redact


class _Stream(threading.Thread):
    """Reads one of the driver's output streams into a `DriverOutput` as it comes."""

    def __init__(self, pipe, name: str):
        super().__init__(name=f"alembic-session-{name}", daemon=True)
        self.pipe = pipe
        self.output = DriverOutput()
        self.changed = threading.Condition()
        self.closed = False
        self.start()

    def run(self) -> None:
        try:
            for line in self.pipe:
                with self.changed:
                    if self.output.feed(line.rstrip("\n")):
                        self.changed.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self.changed:
                self.closed = True
                self.changed.notify_all()

    def wait_end(self, index: int, deadline: float) -> bool:
        with self.changed:
            while index not in self.output.ends and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 1.0))
            return True

    def end(self, index: int) -> tuple[int, float] | None:
        with self.changed:
            return self.output.ends.get(index)

    def started(self, index: int) -> bool:
        with self.changed:
            return index in self.output.sections

    def text(self, index: int) -> str:
        with self.changed:
            return self.output.text(index)


class AlembicSession:
    """Alembic commands on one database in a warm interpreter; `run` mirrors `AlembicRunner.run`."""

    def __init__(self, alembic: AlembicRunner, dbname: str):
        self.alembic = alembic
        self.dbname = dbname
        self.shown = resolve_command(alembic.command)
        self.proc: subprocess.Popen | None = None
        self.next_index = 0
        self.failed = False
        self._ended: subprocess.Popen | None = None  # closed, not yet reaped
        self._one_at_a_time = threading.Lock()  # commands are numbered in the order they are sent
        driver = alembic.driver_argv()
        if driver is None:
            return
        try:
            self.proc = subprocess.Popen(
                [*driver, "--serve"], cwd=alembic.cwd, env={**os.environ, **alembic.env(dbname)},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        except OSError:
            self.proc = None  # each command then runs on its own and reports its own error
            return
        self.out = _Stream(self.proc.stdout, "stdout")
        self.err = _Stream(self.proc.stderr, "stderr")

    @property
    def warm(self) -> bool:
        return self.proc is not None

    def run(self, *args: str) -> CommandResult:
        """One command; raises CommandFailed on a non-zero exit, with its result kept on the exception."""
        with self._one_at_a_time:
            return self._run(tuple(a.replace("{db}", self.dbname) for a in args))

    def history(self) -> History:
        """The revision graph, as `AlembicRunner.history` reads it, from the warm interpreter when there is one."""
        if not self.warm or self.failed:
            return self.alembic.history(self.dbname)
        return History.from_driver(self.run(alembic_driver.GRAPH).stdout)

    def _run(self, args: tuple[str, ...]) -> CommandResult:
        if self.proc is None or self.failed:
            return self.alembic.run(self.dbname, *args)
        index, self.next_index = self.next_index, self.next_index + 1
        label = f"alembic {args[0]}"
        started = time.monotonic()
        deadline = started + self.alembic.timeout
        try:
            self.proc.stdin.write(json.dumps(list(args)) + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # the interpreter is gone: its exit code and output say why, below
        if not (self.out.wait_end(index, deadline) and self.err.wait_end(index, deadline)):
            self.close(kill=True)
            raise CommandFailed(f"{label} did not finish within {self.alembic.timeout:.0f} s and was stopped.",
                                stderr=redact(self.err.text(index), self.alembic.runner.secrets))
        secrets = self.alembic.runner.secrets
        ended = self.out.end(index)
        if ended is not None:
            code, seconds = ended
        else:  # the interpreter ended without finishing the command: killed, or alembic not importable
            code = self.proc.wait(10)
            code = code if code != 0 else 1
            seconds = time.monotonic() - started
        stdout, stderr = self.out.text(index), self.err.text(index)
        if not self.out.started(index):  # died before the command started: its whole output says why
            stderr = self.err.text(-1) or stderr
        result = CommandResult(argv=[redact(a, secrets) for a in [*self.shown, *args]], returncode=code,
                               stdout=redact(stdout, secrets), stderr=redact(stderr, secrets), seconds=seconds,
                               cwd=str(self.alembic.cwd) if self.alembic.cwd else None)
        if code != 0:
            self.failed = True
            self.close()
            exc = CommandFailed(f"{label} {exit_status(code)}: {last_lines(result.stderr or result.stdout)}",
                                returncode=code, stderr=result.stderr)
            exc.result = result  # type: ignore[attr-defined]
            raise exc
        return result

    def run_many(self, commands: list[tuple[str, ...]]) -> list[CommandResult]:
        """In order, stopping at the first failure; like `AlembicRunner.run_many`, `.results` on the exception."""
        results: list[CommandResult] = []
        for args in commands:
            try:
                results.append(self.run(*args))
            except CommandFailed as exc:
                failed = getattr(exc, "result", None)
                exc.results = results + ([failed] if failed is not None else [])  # type: ignore[attr-defined]
                raise
        return results

    def close(self, kill: bool = False, wait: bool = True) -> None:
        """End the session: end of input (the driver returns), or kill. `wait=False` leaves the
        interpreter's own exit (a few tenths of a second) off the caller's path; `reap` collects it."""
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        self._ended = proc
        try:
            if kill:
                proc.kill()
            else:
                proc.stdin.close()
        except OSError:
            pass
        if wait:
            self.reap()

    def reap(self) -> None:
        """Wait for an ended session's interpreter to exit (kill it after 5 s) and close its pipes."""
        if self.proc is not None:
            self.close()
            return
        proc, self._ended = self._ended, None
        if proc is None:
            return
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            try:
                stream.close()
            except OSError:
                pass

    def __enter__(self) -> "AlembicSession":
        return self

    def __exit__(self, *exc) -> None:
        self.reap()

"""Alembic commands in subprocesses, as the runbook runs them.

The target database goes into the subprocess's environment (the runbook's
`-e POSTGRES_DB=...`): apps cache their settings at import, so running Alembic
in this process would let the scratch run leak into the production run. Commands
on the same database may share one interpreter (`run_many`, through
`alembic_driver.py`): an interpreter start with the app's imports costs more than
a small migration, and every command still gets its own transcript.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pg_cutover.errors import CommandFailed, PreflightError
from pg_cutover.migrations import alembic_driver
from pg_cutover.pg.db import ConnInfo
from pg_cutover.process import CommandResult, Runner, exit_status, last_lines

DRIVER = Path(alembic_driver.__file__).resolve()
MIGRATION_APPLICATION = "pg-cutover-alembic"
_MARKER_RE = re.compile(rf"^({re.escape(alembic_driver.BEGIN)}|{re.escape(alembic_driver.END)}) (\d+)(?: (-?\d+) ([\d.]+))?$")

# Only for a wrapped alembic, whose interpreter the driver cannot run in: what `alembic history` prints,
# "<base> -> 0001_baseline, baseline" / "0001 -> 0002 (head), msg" / "b, c -> m (mergepoint)," (no message)
_HISTORY_RE = re.compile(r"^(?P<down>.+?) -> (?P<rev>[^\s,]+)(?: \([^)]*\))*(?:,|$)")


def resolve_command(argv: list[str]) -> list[str]:
    """`alembic` from this interpreter's environment when it is not on PATH."""
    if argv == ["alembic"] and shutil.which("alembic") is None:
        local = Path(sys.executable).with_name("alembic")
        return [str(local)] if local.exists() else [sys.executable, "-m", "alembic"]
    return argv


@dataclass
class History:
    """The revision graph: every revision's parents, and the heads."""

    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    heads: list[str] = field(default_factory=list)

    @classmethod
    def from_driver(cls, stdout: str) -> "History":
        """The graph as the driver's GRAPH command prints it: alembic's ScriptDirectory, as data."""
        for line in reversed(stdout.splitlines()):
            if line.startswith(alembic_driver.GRAPH_LINE + " "):
                graph = json.loads(line[len(alembic_driver.GRAPH_LINE) + 1:])
                return cls(parents={rev: tuple(down) for rev, down in graph["parents"].items()},
                           heads=list(graph["heads"]))
        raise CommandFailed(f"alembic's revision graph could not be read: {last_lines(stdout)}")

    @classmethod
    def parse(cls, history_out: str, heads_out: str) -> "History":
        """The graph from `alembic history` and `alembic heads` output: a wrapped alembic's only source."""
        parents: dict[str, tuple[str, ...]] = {}
        for line in history_out.splitlines():
            match = _HISTORY_RE.match(line.strip())
            if not match:
                continue
            down = match.group("down").strip("() ")
            downs = tuple(d.strip() for d in down.split(",") if d.strip() and d.strip() != "<base>")
            parents[match.group("rev")] = downs
        heads = [line.split()[0] for line in heads_out.splitlines() if line.strip() and "(head)" in line]
        return cls(parents=parents, heads=heads)

    def knows(self, rev: str) -> bool:
        return rev in self.parents

    def resolve(self, rev: str) -> str:
        if rev == "head":
            if len(self.heads) != 1:
                raise PreflightError(
                    f"target_rev 'head' is ambiguous: the migrations have {len(self.heads)} heads "
                    f"({', '.join(self.heads) or 'none'}); name one revision."
                )
            return self.heads[0]
        return rev

    def ancestors(self, rev: str) -> set[str]:
        """rev and every revision below it."""
        seen: set[str] = set()
        stack = [rev]
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            stack.extend(self.parents.get(current, ()))
        return seen


@dataclass
class AlembicRunner:
    command: list[str]
    cwd: Path
    conn: ConnInfo
    runner: Runner
    timeout: float = 1800
    pgoptions: str | None = None  # lock_timeout / statement_timeout for every session the migrations open

    def env(self, dbname: str) -> dict[str, str]:
        """What a command on dbname gets in its environment: the target's POSTGRES_* (and PGOPTIONS)."""
        env = {
            "POSTGRES_HOST": self.conn.host,
            "POSTGRES_PORT": str(self.conn.port),
            "POSTGRES_USER": self.conn.user,
            "POSTGRES_DB": dbname,
            # libpq's name for the migration's sessions (an app whose URL names one keeps its own), so
            # the tool can tell when they have ended (pg_cutover.checks.changes).
            "PGAPPNAME": MIGRATION_APPLICATION,
        }
        if self.conn.password:
            env["POSTGRES_PASSWORD"] = self.conn.password
        if self.pgoptions:
            env["PGOPTIONS"] = self.pgoptions
        return env

    def run(self, dbname: str, *args: str) -> CommandResult:
        argv = [part.replace("{db}", dbname) for part in resolve_command(self.command)] + list(args)
        return self.runner.run(
            argv, timeout=self.timeout, env_extra=self.env(dbname), cwd=self.cwd, what=f"alembic {args[0]}"
        )

    def stamp(self, dbname: str, rev: str) -> CommandResult:
        return self.run(dbname, "stamp", rev)

    def upgrade(self, dbname: str, rev: str) -> CommandResult:
        return self.run(dbname, "upgrade", rev)

    def current(self, dbname: str) -> CommandResult:
        return self.run(dbname, "current")

    def history(self, dbname: str) -> History:
        """The revision graph from the script directory; no database is opened."""
        driver = self.driver_argv()
        if driver is None:  # a wrapped alembic: only what its commands print can be read
            hist, heads = self.run_many(dbname, [("history",), ("heads",)])
            return History.parse(hist.stdout, heads.stdout)
        result = self.runner.run(driver + [alembic_driver.GRAPH], timeout=self.timeout, env_extra=self.env(dbname),
                                 cwd=self.cwd, what="alembic revision graph")
        return History.from_driver(result.stdout)

    def driver_argv(self) -> list[str] | None:
        """`python alembic_driver.py` under the interpreter of the configured alembic, or None.

        Only for a plain local alembic (`alembic`, a path to its script, `python -m alembic`):
        a wrapped or containerised command (`docker compose exec ...`, extra options) runs
        each command as configured.
        """
        argv = resolve_command(self.command)
        if len(argv) == 3 and argv[1:] == ["-m", "alembic"]:
            return [argv[0], str(DRIVER)]
        if len(argv) != 1 or Path(argv[0]).name != "alembic":
            return None
        script = shutil.which(argv[0]) if Path(argv[0]).name == argv[0] else argv[0]
        if not script:
            return None
        try:
            with open(script, "rb") as fh:
                first = fh.readline(512).decode(errors="replace").strip()
        except OSError:
            return None
        if not first.startswith("#!"):
            return None
        interpreter = shlex.split(first[2:])
        # `#!/usr/bin/env python3` is fine; an interpreter that is not Python is not.
        if not interpreter or "python" not in Path(interpreter[-1]).name:
            return None
        return interpreter + [str(DRIVER)]

    def run_many(self, dbname: str, commands: list[tuple[str, ...]]) -> list[CommandResult]:
        """Commands on one database in order, stopping at the first failure; one result each.

        In one interpreter when the alembic is local (see `driver_argv`), else one subprocess
        each. A failure raises `CommandFailed` as `run` would, with `.results` holding every
        command's result up to and including the failed one.
        """
        driver = self.driver_argv()
        if driver is None or len(commands) < 2:
            results: list[CommandResult] = []
            for args in commands:
                try:
                    results.append(self.run(dbname, *args))
                except CommandFailed as exc:
                    exc.results = results  # type: ignore[attr-defined]
                    raise
            return results
        argv = list(driver)
        for i, args in enumerate(commands):
            argv += ([alembic_driver.SEPARATOR] if i else []) + [a.replace("{db}", dbname) for a in args]
        whole = self.runner.run(argv, timeout=self.timeout * len(commands), env_extra=self.env(dbname),
                                cwd=self.cwd, check=False, what="alembic " + " + ".join(c[0] for c in commands))
        shown = resolve_command(self.command)
        results = _split_driver_output(whole, [shown + list(args) for args in commands])
        failed = next((r for r in results if r.returncode != 0), None)
        if failed is None and (whole.returncode != 0 or len(results) != len(commands)):
            # The interpreter itself failed (alembic not importable, killed): not one command's doing.
            failed = CommandResult(argv=whole.argv, returncode=whole.returncode or 1, stdout=whole.stdout,
                                   stderr=whole.stderr, seconds=whole.seconds, cwd=whole.cwd)
            results.append(failed)
        if failed is not None:
            label = f"alembic {failed.argv[len(shown)] if len(failed.argv) > len(shown) else ''}".strip()
            exc = CommandFailed(f"{label} {exit_status(failed.returncode)}: "
                                f"{last_lines(failed.stderr or failed.stdout)}",
                                returncode=failed.returncode, stderr=failed.stderr)
            exc.results = results  # type: ignore[attr-defined]
            raise exc
        return results


class DriverOutput:
    """One of the driver's output streams, split per command at its markers, fed a line at a time.

    Lines outside any command (what the interpreter said before the first, or between them)
    are kept under -1.
    """

    def __init__(self) -> None:
        self.sections: dict[int, list[str]] = {}
        self.ends: dict[int, tuple[int, float]] = {}  # index -> (exit code, seconds)
        self._current: int | None = None

    def feed(self, line: str) -> bool:
        """Take one line; True when it ended a command."""
        match = _MARKER_RE.match(line)
        if match and match.group(1) == alembic_driver.BEGIN:
            self._current = int(match.group(2))
            self.sections[self._current] = []
        elif match:
            self.ends[int(match.group(2))] = (int(match.group(3)), float(match.group(4)))
            self._current = None
            return True
        else:
            self.sections.setdefault(-1 if self._current is None else self._current, []).append(line)
        return False

    def text(self, index: int) -> str:
        body = "\n".join(self.sections.get(index, [])).strip("\n")
        return body + ("\n" if body.strip() else "")


def _sections(text: str) -> DriverOutput:
    output = DriverOutput()
    for line in text.splitlines():
        output.feed(line)
    return output


def _split_driver_output(whole: CommandResult, argvs: list[list[str]]) -> list[CommandResult]:
    out, err = _sections(whole.stdout), _sections(whole.stderr)
    results = []
    for index, argv in enumerate(argvs):
        if index not in out.sections:
            break  # never started: an earlier command failed
        code, seconds = out.ends.get(index, (whole.returncode or 1, whole.seconds))
        results.append(CommandResult(argv=argv, returncode=code, stdout=out.text(index),
                                     stderr=err.text(index), seconds=seconds, cwd=whole.cwd))
    return results

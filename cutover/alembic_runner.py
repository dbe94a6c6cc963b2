"""Every alembic command in its own subprocess, as the runbook runs them.

The target database goes into that one command's environment (the runbook's
`-e POSTGRES_DB=...`): apps cache their settings at import, so running Alembic
in-process would let the scratch run leak into the production run.
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cutover.db import ConnInfo
from cutover.errors import PreflightError
from cutover.process import CommandResult, Runner

# "<base> -> 0001_baseline, baseline" / "0001 -> 0002 (head), msg" / "(a, b) -> c (mergepoint), msg"
_HISTORY_RE = re.compile(r"^(?P<down>.+?) -> (?P<rev>[^\s,]+)(?: \([^)]*\))*, ")


def resolve_command(argv: list[str]) -> list[str]:
    """`alembic` from this interpreter's environment when it is not on PATH."""
    if argv == ["alembic"] and shutil.which("alembic") is None:
        local = Path(sys.executable).with_name("alembic")
        return [str(local)] if local.exists() else [sys.executable, "-m", "alembic"]
    return argv


@dataclass
class History:
    """The revision graph as `alembic history` prints it."""

    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    heads: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, history_out: str, heads_out: str) -> "History":
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

    def _env(self, dbname: str) -> dict[str, str]:
        env = {
            "POSTGRES_HOST": self.conn.host,
            "POSTGRES_PORT": str(self.conn.port),
            "POSTGRES_USER": self.conn.user,
            "POSTGRES_DB": dbname,
        }
        if self.conn.password:
            env["POSTGRES_PASSWORD"] = self.conn.password
        if self.pgoptions:
            env["PGOPTIONS"] = self.pgoptions
        return env

    def run(self, dbname: str, *args: str) -> CommandResult:
        argv = [part.replace("{db}", dbname) for part in resolve_command(self.command)] + list(args)
        return self.runner.run(
            argv, timeout=self.timeout, env_extra=self._env(dbname), cwd=self.cwd, what=f"alembic {args[0]}"
        )

    def stamp(self, dbname: str, rev: str) -> CommandResult:
        return self.run(dbname, "stamp", rev)

    def upgrade(self, dbname: str, rev: str) -> CommandResult:
        return self.run(dbname, "upgrade", rev)

    def current(self, dbname: str) -> CommandResult:
        return self.run(dbname, "current")

    def history(self, dbname: str) -> History:
        """Read the script directory only; no database is opened for these two."""
        hist = self.run(dbname, "history")
        heads = self.run(dbname, "heads")
        return History.parse(hist.stdout, heads.stdout)

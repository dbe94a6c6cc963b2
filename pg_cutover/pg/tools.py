"""pg_dump, pg_restore, psql, createdb and dropdb behind one small client.

Binaries are located in order: CUTOVER_PG_BIN, then PATH, then the bundled
binaries of the `pgserver` package. A client older than the server is refused:
pg_dump cannot dump a newer server, and a restore list from an older client can
silently miss object kinds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pg_cutover.errors import CommandFailed, PreflightError
from pg_cutover.pg.db import ConnInfo
from pg_cutover.process import CommandResult, Runner, exit_status, last_lines, redact
from pg_cutover.throughput import Count, LineCounter, Ticker, human_bytes, without_chatter
from pg_cutover.values import COMPRESSION_FORM, COMPRESSION_RE

TOOLS = ("pg_dump", "pg_restore", "psql", "createdb", "dropdb")
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def _pgserver_bin() -> Path | None:
    try:
        import pgserver._commands as commands  # optional extra, only for the embedded default
    except Exception:
        return None
    path = Path(commands.POSTGRES_BIN_PATH)
    return path if path.is_dir() else None


def client_major(pg_dump: Path, runner: Runner) -> int:
    out = runner.run([str(pg_dump), "--version"], timeout=30, what="pg_dump --version").stdout
    match = _VERSION_RE.search(out)
    if not match:
        raise PreflightError(f"Could not read the version of {pg_dump}: {out.strip()!r}.")
    return int(match.group(1))


def _default_candidates():
    """PATH first; pgserver's bundled binaries only looked up (and imported) when PATH has none fit."""
    on_path = shutil.which("pg_dump")
    if on_path:
        # Not resolved: Debian's /usr/bin/pg_dump is a symlink to a wrapper that lives alone.
        yield "PATH", Path(on_path).parent
    bundled = _pgserver_bin()
    if bundled:
        yield "pgserver", bundled


def locate_bin_dir(configured: Path | None, server_major: int, runner: Runner) -> tuple[Path, int]:
    """The first bin dir whose pg_dump is at least the server's major version."""
    if configured is not None:
        candidates = iter([("CUTOVER_PG_BIN", Path(configured))])
    else:
        candidates = _default_candidates()
    seen: list[str] = []
    for source, bin_dir in candidates:
        missing = [t for t in TOOLS if not (bin_dir / t).exists()]
        if missing:
            if source == "CUTOVER_PG_BIN":
                raise PreflightError(
                    f"CUTOVER_PG_BIN={str(bin_dir)!r} does not hold {', '.join(missing)}; expected the directory "
                    "of the PostgreSQL client binaries."
                )
            continue
        major = client_major(bin_dir / "pg_dump", runner)
        if major >= server_major:
            return bin_dir, major
        seen.append(f"{bin_dir} ({source}) is version {major}")
    if not seen:
        raise PreflightError(
            "pg_dump was not found: set CUTOVER_PG_BIN to the directory holding the PostgreSQL client "
            f"binaries (major version {server_major} or newer), or put them on PATH."
        )
    raise PreflightError(
        f"pg_dump is older than the server (version {server_major}): {'; '.join(seen)}; set CUTOVER_PG_BIN "
        f"to client binaries of major version {server_major} or newer."
    )


@dataclass
class PgClient:
    bin_dir: Path
    major: int
    conn: ConnInfo
    runner: Runner
    timeout: float = 3600

    def _tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _run(self, argv: list[str], *, what: str, timeout: float | None = None) -> CommandResult:
        return self.runner.run(
            argv, timeout=timeout or self.timeout, env_extra=self.conn.libpq_env(), what=what
        )

    def dump_argv(self, dbname: str, path: Path, *, compression: str | None = None) -> list[str]:
        argv = [self._tool("pg_dump"), "--no-password", "--dbname", dbname, "--file", str(path), "--format=custom"]
        return argv + compression_args(compression, self.major)

    def dump(self, dbname: str, path: Path, *, schema_only: bool = False, compression: str | None = None) -> CommandResult:
        if schema_only:
            argv = [self._tool("pg_dump"), "--no-password", "--dbname", dbname, "--file", str(path), "--schema-only"]
            return self._run(argv, what="pg_dump --schema-only")
        return self._run(self.dump_argv(dbname, path, compression=compression), what="pg_dump")

    def restore_argv(self, dbname: str, path: Path | None = None, *, jobs: int = 1, verbose: bool = False) -> list[str]:
        """Without a path pg_restore reads the archive from its standard input."""
        # --exit-on-error: a restore that "completes with errors ignored" is a failed restore.
        argv = [self._tool("pg_restore"), "--no-password", "--exit-on-error", "--dbname", dbname]
        if jobs > 1:
            argv += ["--jobs", str(jobs)]
        if verbose:
            argv.append("--verbose")
        return argv + ([str(path)] if path is not None else [])

    def restore(self, dbname: str, path: Path, *, jobs: int = 1, step: str = "pg_restore") -> CommandResult:
        """The archive file into `dbname`, saying every few seconds how many of its items are restored.

        The items come from pg_restore's own --verbose lines, the total from the archive's table of
        contents (`--list`, which reads the header only); its stderr without those lines is kept.
        """
        listed = {line.split(";", 1)[0].strip() for line in self.list_archive(path).stdout.splitlines()
                  if line.strip() and not line.startswith(";")}
        argv = self.restore_argv(dbname, path, jobs=jobs, verbose=True)
        started = time.monotonic()
        with tempfile.TemporaryFile() as stderr:
            items = LineCounter(stderr.fileno(), ids=listed)
            size = path.stat().st_size
            sample = lambda: Count(done=0, items=items.count(), items_total=len(listed),  # noqa: E731
                                   note=f"archive of {human_bytes(size)}")
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                        env=self.env())
            except FileNotFoundError:
                raise CommandFailed(f"pg_restore: program {argv[0]!r} was not found.") from None
            with Ticker(step, "", sample):
                try:
                    code = proc.wait(self.timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    code = None
            stderr.seek(0)
            err = redact(without_chatter(stderr.read().decode(errors="replace")), self.runner.secrets)
        if code is None:
            raise CommandFailed(f"pg_restore did not finish within {self.timeout:.0f} s and was stopped.", stderr=err)
        result = CommandResult(argv=[redact(a, self.runner.secrets) for a in argv], returncode=code, stdout="",
                               stderr=err, seconds=time.monotonic() - started)
        if code != 0:
            raise CommandFailed(f"pg_restore {exit_status(code)}: {last_lines(err)}", returncode=code, stderr=err)
        return result

    def dump_schema_archive(self, dbname: str, path: Path) -> CommandResult:
        """The schema alone, in the custom format pg_restore reads (pg_cutover.checks.equivalence's normal route)."""
        argv = [self._tool("pg_dump"), "--no-password", "--dbname", dbname, "--file", str(path), "--schema-only",
                "--format=custom"]
        return self._run(argv, what="pg_dump --schema-only --format=custom", timeout=600)

    def restore_schema(self, dbname: str, path: Path) -> CommandResult:
        """A schema archive into an empty database of the same server, owned by whoever restores it.

        Subscriptions would connect to their publishers and publications are not fingerprinted.
        """
        argv = self.restore_argv(dbname, path)[:-1] + ["--no-owner", "--no-privileges", "--no-subscriptions",
                                                       "--no-publications", "--no-security-labels", str(path)]
        return self._run(argv, what="pg_restore (schema)", timeout=600)

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.conn.libpq_env()}

    def list_archive(self, path: Path) -> CommandResult:
        return self._run([self._tool("pg_restore"), "--list", str(path)], what="pg_restore --list", timeout=600)

    def createdb(self, dbname: str) -> CommandResult:
        return self._run([self._tool("createdb"), "--no-password", dbname], what="createdb", timeout=120)

    def dropdb(self, dbname: str) -> CommandResult:
        # --force ends sessions still attached (a scratch copy left open by a reviewer).
        return self._run(
            [self._tool("dropdb"), "--no-password", "--if-exists", "--force", dbname], what="dropdb", timeout=120
        )

    def psql(self, dbname: str, command: str) -> CommandResult:
        return self._run(
            [self._tool("psql"), "--no-password", "--no-psqlrc", "--dbname", dbname, "--command", command],
            what="psql",
            timeout=120,
        )


def compression_args(value: str | None, client_major: int) -> list[str]:
    """pg_dump's compression flag for CUTOVER_DUMP_COMPRESSION; None keeps pg_dump's default."""
    if value is None or value == "":
        return []
    if not COMPRESSION_RE.fullmatch(value):
        raise PreflightError(f"CUTOVER_DUMP_COMPRESSION={value!r} is invalid; expected {COMPRESSION_FORM}.")
    if value.isdigit():
        return ["--compress", value]
    method, _, level = value.partition(":")
    if client_major < 16:
        if method != "gzip":
            raise PreflightError(f"CUTOVER_DUMP_COMPRESSION={value!r} needs pg_dump 16 or newer; this one is {client_major}.")
        return ["--compress", level or "6"]
    return ["--compress", value]


def archive_tables(listing: str) -> set[str]:
    """schema.table for every TABLE DATA entry of a `pg_restore --list` listing."""
    tables = set()
    for line in listing.splitlines():
        if line.startswith(";") or not line.strip():
            continue
        # e.g. "3345; 0 16390 TABLE DATA public beers postgres"
        match = re.search(r"\bTABLE DATA (\S+) (\S+) ", line + " ")
        if match:
            tables.add(f"{match.group(1)}.{match.group(2)}")
    return tables


__all__ = ["PgClient", "locate_bin_dir", "archive_tables", "CommandFailed"]

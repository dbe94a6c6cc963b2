"""Several alembic commands, in order, in one interpreter: `python alembic_driver.py stamp X -- upgrade Y -- current`.

Or warm, waiting for its commands: `python alembic_driver.py --serve` imports alembic and
SQLAlchemy, then reads one command per line on stdin (a JSON list of arguments) and runs
each as it comes, until end of input. Started while the cutover is busy elsewhere, the
interpreter start is off the write-pause window when the command is finally sent.

Starting Python, SQLAlchemy and the app's models costs more than a small migration
itself; running stamp, upgrade and current on the same database in one process pays
that once. Each command goes through alembic's own command line (`alembic.config.
CommandLine`), so it reads the same alembic.ini / ALEMBIC_CONFIG and prints what
`alembic <command>` prints. Every command's output is framed by marker lines on both
stdout and stderr, so the caller can keep one transcript per command as evidence.
The first command that fails ends the run: nothing after it runs, as with a shell `&&`.

Only the standard library and alembic are imported here: it runs under the
interpreter of the app's alembic, which need not have this project installed.
Used for one database per process only: apps read their database settings once at
import, so two databases in one interpreter could leak into each other.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

BEGIN = "@@cutover-alembic-begin"
END = "@@cutover-alembic-end"
SEPARATOR = "--"
# The driver's own command, beside alembic's: the revision graph as data (JSON on a line of its own
# after GRAPH_LINE), read with alembic's ScriptDirectory from the configuration `alembic heads` reads.
GRAPH = "@revision-graph"
GRAPH_LINE = "@@cutover-revision-graph"


def split_commands(argv: list[str]) -> list[list[str]]:
    commands: list[list[str]] = [[]]
    for arg in argv:
        if arg == SEPARATOR:
            commands.append([])
        else:
            commands[-1].append(arg)
    return [c for c in commands if c]


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF  # what the shell would see: alembic's sys.exit(-1) is 255
    print(code, file=sys.stderr)
    return 1


def _mark(line: str) -> None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
        stream.write(f"\n{line}\n")
        stream.flush()


def _graph_command_line():
    from alembic.config import CommandLine
    from alembic.script import ScriptDirectory

    class Graph(CommandLine):
        def run_cmd(self, config, options):  # main() has built the config as for any alembic command
            script = ScriptDirectory.from_config(config)
            parents = {}
            for rev in script.walk_revisions():
                down = rev.down_revision
                parents[rev.revision] = [] if down is None else [down] if isinstance(down, str) else list(down)
            print(GRAPH_LINE, json.dumps({"parents": parents, "heads": list(script.get_heads())}))

    return Graph(prog="alembic")


def run_one(index: int, argv: list[str]) -> int:
    from alembic.config import CommandLine

    _mark(f"{BEGIN} {index}")
    started = time.monotonic()
    try:
        if argv and argv[-1] == GRAPH:  # global options (-c, -n, -x) as given, then a read-only command
            _graph_command_line().main(argv=argv[:-1] + ["heads"])
        else:
            CommandLine(prog="alembic").main(argv=argv)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:  # a migration that raises: the traceback alembic's CLI would show
        traceback.print_exc()
        code = 1
    _mark(f"{END} {index} {code} {time.monotonic() - started:.3f}")
    return code


def run(commands: list[list[str]]) -> int:
    for index, argv in enumerate(commands):
        code = run_one(index, argv)
        if code != 0:
            return code
    return 0


def serve(commands) -> int:
    """Commands as they arrive, one JSON list per line; the first failure ends the session."""
    import alembic.config  # noqa: F401  the imports every command needs, paid before the first one
    import sqlalchemy  # noqa: F401

    try:
        import psycopg2  # noqa: F401  the usual PostgreSQL driver, when the app uses it
    except ImportError:
        pass
    for index, line in enumerate(commands):
        if not line.strip():
            return 0
        argv = json.loads(line)
        if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            print(f"not a command: {line.strip()[:200]}", file=sys.stderr)
            return 2
        code = run_one(index, argv)
        if code != 0:
            return code
    return 0


def main() -> int:
    # Run as a script, this file's directory (pg_cutover/migrations) would lead sys.path and
    # could shadow the app's own top-level modules.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    if sys.argv[1:] == ["--serve"]:
        # The command channel is a private copy of stdin; a migration that reads stdin gets nothing.
        channel = os.fdopen(os.dup(0), "r")
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        return serve(channel)
    commands = split_commands(sys.argv[1:])
    if not commands:
        print("usage: alembic_driver.py COMMAND [ARGS] [-- COMMAND [ARGS] ...]", file=sys.stderr)
        return 2
    return run(commands)


if __name__ == "__main__":
    sys.exit(main())

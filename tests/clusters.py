"""Places PostgreSQL can be put that the machine's shared server cannot be: a private cluster with
wal_level=logical, a tablespace on a tiny tmpfs. Both need root (this machine's tests run as root);
elsewhere the test says why it cannot run."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pg_cutover.launcher.embedded import free_port
from pg_cutover.pg.db import ConnInfo


def _server_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if os.geteuid() != 0 or not found or shutil.which("runuser") is None:
        pytest.skip("needs root, runuser and a PostgreSQL server installation under /usr/lib/postgresql "
                    "to start a private cluster")
    return found[0].parent


def _as_postgres(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, text=True,
                          timeout=120, **kwargs)


@contextmanager
def private_cluster(*settings: str) -> Iterator[ConnInfo]:
    """A throwaway cluster on a free loopback port, trust auth, with the given `-c name=value` settings."""
    bindir = _server_bin()
    home = Path(tempfile.mkdtemp(prefix="pgc-cluster-"))
    shutil.chown(home, "postgres", "postgres")
    data, port = home / "data", free_port()
    _as_postgres(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
    options = " ".join([f"-c port={port}", "-c listen_addresses=127.0.0.1", f"-c unix_socket_directories={home}",
                        *(f"-c {s}" for s in settings)])
    _as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l", str(home / "log"), "start")
    try:
        yield ConnInfo("127.0.0.1", port, "postgres")
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def tiny_tmpfs(megabytes: int) -> Iterator[Path]:
    """A tmpfs of `megabytes`, owned by postgres: a disk that really fills up."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mount = Path(tempfile.gettempdir()) / f"pgc-tmpfs-{uuid.uuid4().hex[:8]}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        shutil.chown(mount, "postgres", "postgres")
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        mount.rmdir()

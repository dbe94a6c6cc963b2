"""Embedded stand-ins for `make demo` and the tests: PostgreSQL and the example API.

Real components, started on this machine: the machine's PostgreSQL when it
answers on 127.0.0.1:5432, else a private server from the `pgserver` package;
the example backend under a real uvicorn on a free loopback port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_APP_DIR = REPO_ROOT / "examples" / "beer_backend_api"


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresTarget:
    host: str
    port: int
    user: str
    password: str | None = field(repr=False)
    embedded: bool
    bin_dir: Path | None = None

    def env(self) -> dict[str, str]:
        env = {"POSTGRES_HOST": self.host, "POSTGRES_PORT": str(self.port), "POSTGRES_USER": self.user}
        if self.password:
            env["POSTGRES_PASSWORD"] = self.password
        if self.bin_dir:
            env["CUTOVER_PG_BIN"] = str(self.bin_dir)
        return env


def start_postgres(data_dir: Path, *, prefer_local: bool = True) -> PostgresTarget:
    """The configured server (POSTGRES_HOST set), the machine's on 127.0.0.1:5432, or an embedded one."""
    if os.environ.get("POSTGRES_HOST"):
        return PostgresTarget(
            host=os.environ["POSTGRES_HOST"],
            port=int(os.environ.get("POSTGRES_PORT", "5432")),
            user=os.environ.get("POSTGRES_USER", "postgres"),
            password=os.environ.get("POSTGRES_PASSWORD") or None,
            embedded=False,
        )
    if prefer_local and port_open("127.0.0.1", 5432):
        return PostgresTarget("127.0.0.1", 5432, "postgres", None, embedded=False)
    import pgserver
    from pgserver._commands import POSTGRES_BIN_PATH

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    info = server.get_postmaster_info()
    # Kept on the module so the server lives as long as this process.
    _EMBEDDED.append(server)
    # pgserver ships client tools of its own (newer than a distro's), which must pair with its server.
    return PostgresTarget(str(info.socket_dir), info.port or 5432, "postgres", None, embedded=True,
                          bin_dir=Path(POSTGRES_BIN_PATH))


_EMBEDDED: list = []


@contextmanager
def _local_server(what: str, argv: list[str], port: int, probe_path: str, *, cwd: Path | None = None,
                  env: dict[str, str] | None = None, log_path: Path | None = None) -> Iterator[str]:
    """Start a loopback HTTP server process, wait until it answers, yield its URL, stop it on exit."""
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with code {proc.returncode} before answering")
            try:
                httpx.get(url + probe_path, timeout=1.0)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{what} did not answer on {url} within 30 s") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log_path:
            log.close()


@contextmanager
def example_api(db_env: dict[str, str], dbname: str, *, port: int | None = None,
                log_path: Path | None = None) -> Iterator[str]:
    """The example backend under uvicorn; yields its base URL and stops it on exit."""
    port = port or free_port()
    argv = [sys.executable, "-m", "uvicorn", "beer_app.main:app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning"]
    with _local_server("the example API", argv, port, "/docs", cwd=EXAMPLE_APP_DIR,
                       env={**os.environ, **db_env, "POSTGRES_DB": dbname}, log_path=log_path) as url:
        yield url


@contextmanager
def s3_server(port: int | None = None, log_path: Path | None = None) -> Iterator[str]:
    """moto's S3 server, a real HTTP endpoint on loopback; yields its URL and stops it on exit."""
    port = port or free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with _local_server("the S3 server", argv, port, "/moto-api/", log_path=log_path) as url:
        yield url

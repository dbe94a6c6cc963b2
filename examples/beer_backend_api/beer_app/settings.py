"""Database location, read from the same POSTGRES_* variables docker-compose sets.

Every caller (Alembic's env.py, the API, the seeder) goes through
``database_url()`` so the three can never disagree about where the database is.
The environment is read on every call: a cutover run changes POSTGRES_DB
between subprocesses, and nothing here may remember an old value.
"""

from __future__ import annotations

import os

from sqlalchemy.engine import URL

DRIVER = "postgresql+psycopg2"


class MissingDatabaseName(RuntimeError):
    """POSTGRES_DB is unset: refusing to guess which database to touch."""


def database_url(database: str | None = None) -> URL:
    """URL of ``database`` (default: $POSTGRES_DB) on the server named by POSTGRES_*.

    Built with ``URL.create`` rather than string formatting so that passwords
    containing ``@``, ``/``, ``%`` etc. need no escaping.  A POSTGRES_HOST
    starting with ``/`` is a unix-socket directory, which libpq only accepts
    as the ``host`` query parameter.
    """
    env = os.environ
    name = database if database is not None else env.get("POSTGRES_DB", "")
    if not name:
        raise MissingDatabaseName(
            "POSTGRES_DB is not set: export the name of the database to use "
            "(POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD are optional)"
        )
    host: str | None = env.get("POSTGRES_HOST") or "127.0.0.1"
    port = int(env.get("POSTGRES_PORT") or 5432)
    query: dict[str, str] = {}
    if host.startswith("/"):
        query["host"] = host
        host = None
    return URL.create(
        DRIVER,
        username=env.get("POSTGRES_USER") or "postgres",
        # An empty password means "none" (trust / peer / .pgpass), not "".
        password=env.get("POSTGRES_PASSWORD") or None,
        host=host,
        port=port,
        database=name,
        query=query,
    )


def redact(message: str) -> str:
    """``message`` with the configured password masked, for errors shown to clients."""
    password = os.environ.get("POSTGRES_PASSWORD")
    if password:
        message = message.replace(password, "***")
    return message

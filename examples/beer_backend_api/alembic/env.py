"""Alembic environment for the beer backend API.

The database comes only from the POSTGRES_* environment variables, read when
this file runs (see beer_app.settings.database_url), so each alembic process
targets whatever POSTGRES_DB its caller exported.
"""

from __future__ import annotations

import sys
from logging.config import fileConfig
from pathlib import Path

from alembic import context
from alembic.util import CommandError
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

# Importable even when alembic runs from another directory with -c.
_APP_DIR = str(Path(__file__).resolve().parents[1])
if _APP_DIR not in sys.path:
    sys.path.insert(0, _APP_DIR)

from beer_app.models import Base  # noqa: E402
from beer_app.settings import MissingDatabaseName  # noqa: E402
from beer_app.settings import database_url as _database_url  # noqa: E402

config = context.config

# A caller driving alembic in-process can keep its own logging setup by
# setting config.attributes["configure_logger"] = False.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> URL:
    # CommandError makes the alembic CLI print one FAILED line, not a traceback.
    try:
        return _database_url()
    except MissingDatabaseName as exc:
        raise CommandError(str(exc)) from None


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``--sql``); the URL only picks the dialect."""
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # NullPool: a migration run is one short process; never leave idle
    # connections behind that would block a later RENAME/DROP DATABASE.
    engine = create_engine(database_url(), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=target_metadata)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

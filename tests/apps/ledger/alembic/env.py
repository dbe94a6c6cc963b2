"""The ledger's alembic environment: the URL goes into the config, as many apps do it."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config
from sqlalchemy.pool import NullPool

from ledger_app.settings import database_url

config = context.config
config.set_main_option("sqlalchemy.url", database_url().replace("%", "%%"))


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                poolclass=NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

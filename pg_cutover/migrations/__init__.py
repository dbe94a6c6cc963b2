"""Alembic: the driver that runs inside alembic, the runner and warm session, lint of the upgrade SQL, lock retries."""

"""`python -m late_app.bootstrap`: the app's first schema on $POSTGRES_DB, as its first release made it."""

from __future__ import annotations

from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from late_app.initial_models import metadata
from late_app.settings import database_url

if __name__ == "__main__":
    engine = create_engine(database_url(), poolclass=NullPool)
    metadata.create_all(engine)
    engine.dispose()
    print("initial schema created")

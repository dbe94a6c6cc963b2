"""The database URL from the POSTGRES_* environment the caller exports."""

from __future__ import annotations

import os

from sqlalchemy.engine import URL


def database_url() -> URL:
    env = os.environ
    return URL.create("postgresql+psycopg2", username=env.get("POSTGRES_USER", "postgres"),
                      password=env.get("POSTGRES_PASSWORD") or None, host=env.get("POSTGRES_HOST", "127.0.0.1"),
                      port=int(env.get("POSTGRES_PORT", "5432")), database=env["POSTGRES_DB"])

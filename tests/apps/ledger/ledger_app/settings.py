"""The ledger reads one DSN-shaped URL it builds itself, as many apps' env.py files do."""

from __future__ import annotations

import os
from urllib.parse import quote


def database_url() -> str:
    env = os.environ
    password = env.get("POSTGRES_PASSWORD")
    auth = quote(env.get("POSTGRES_USER", "postgres"), safe="") + (f":{quote(password, safe='')}" if password else "")
    return (f"postgresql+psycopg2://{auth}@{env.get('POSTGRES_HOST', '127.0.0.1')}:{env.get('POSTGRES_PORT', '5432')}"
            f"/{env['POSTGRES_DB']}")

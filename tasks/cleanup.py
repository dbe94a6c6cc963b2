"""Runbook section 7: drop the scratch copy after a successful run."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from pg_cutover.pg.tools import PgClient


@task(name="scratch-drop", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, timeout_seconds=600)
def drop_scratch(pg: PgClient, scratch_db: str) -> str:
    return pg.dropdb(scratch_db).transcript()

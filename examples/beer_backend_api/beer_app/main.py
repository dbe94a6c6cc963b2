"""The beer backend API.

It must keep answering while pg-cutover renames the database away, restores
it and upgrades it underneath, so:
  * the engine is created lazily, in the serving process, from POSTGRES_*;
  * pool_pre_ping replaces connections the cutover terminated, and a short
    pool_recycle stops idle connections from living on indefinitely;
  * ``/`` only needs count(*) and alembic_version, which exist (or are
    detected as absent) at the legacy schema and at head alike;
  * a database that cannot be reached gives 503, never a traceback or the
    password.

    POSTGRES_DB=beer_pilot uvicorn beer_app.main:app --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from beer_app.settings import MissingDatabaseName, database_url, redact

_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine() -> Engine:
    """The process's engine, created on first use (never at import time)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = create_engine(
                database_url(),
                pool_pre_ping=True,
                pool_recycle=30,
                pool_size=2,
                max_overflow=3,
                pool_timeout=5,
                connect_args={"connect_timeout": 3, "application_name": "beer_backend_api"},
            )
        return _engine


def dispose_engine() -> None:
    """Close every pooled connection and forget the engine (tests, shutdown)."""
    global _engine
    with _engine_lock:
        if _engine is not None:
            _engine.dispose()
            _engine = None


@asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    dispose_engine()  # close pooled connections so the database can be renamed/dropped


app = FastAPI(
    title="Beer backend API",
    description="Example pilot app for pg-cutover: breweries, beers and reviews.",
    version="0.3.0",
    lifespan=_lifespan,
)


def _unavailable(exc: Exception) -> JSONResponse:
    # The driver's own message says what failed ("connection refused",
    # "database ... does not exist") without SQLAlchemy's SQL echo; the
    # password is masked in case a driver ever quotes the DSN.
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    message = redact(lines[0] if lines else type(exc).__name__)
    return JSONResponse(status_code=503, content={"status": "unavailable", "error": message})


_STATUS_SQL = text(
    """
    SELECT to_regclass('public.alembic_version') IS NOT NULL AS versioned,
           to_regclass('public.breweries') IS NOT NULL AS has_breweries
    """
)


@app.get("/")
def status() -> Any:
    """Liveness plus where the schema is: the Alembic revision (null before cutover)."""
    try:
        with get_engine().connect() as conn:
            versioned, has_breweries = conn.execute(_STATUS_SQL).one()
            revision = None
            if versioned:
                revision = conn.execute(
                    text("SELECT version_num FROM alembic_version ORDER BY version_num LIMIT 1")
                ).scalar_one_or_none()
            breweries = (
                conn.execute(text("SELECT count(*) FROM breweries")).scalar_one()
                if has_breweries
                else None
            )
    except (SQLAlchemyError, MissingDatabaseName) as exc:
        return _unavailable(exc)
    # Models a backend release that breaks on a schema revision (set per deployment, used by
    # pg-cutover's tests to make a post-migration health check fail for real).
    incompatible = os.environ.get("BEER_APP_INCOMPATIBLE_WITH")
    if incompatible and revision == incompatible:
        return JSONResponse(status_code=500, content={
            "status": "error", "error": f"this app version does not support schema revision {revision}"})
    return {
        "status": "ok",
        "database": os.environ.get("POSTGRES_DB"),
        "revision": revision,
        "breweries": breweries,
    }


@app.get("/breweries")
def list_breweries(limit: int = Query(10, ge=1, le=100)) -> Any:
    """The first breweries by id; includes ``slug`` once migration 0002 has run."""
    try:
        with get_engine().connect() as conn:
            # SELECT * so the same query serves the legacy schema and head.
            rows = conn.execute(
                text("SELECT * FROM breweries ORDER BY id LIMIT :limit"), {"limit": limit}
            ).mappings().all()
    except (SQLAlchemyError, MissingDatabaseName) as exc:
        return _unavailable(exc)
    return jsonable_encoder([dict(row) for row in rows])

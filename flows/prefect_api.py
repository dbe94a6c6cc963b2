"""Whether the Prefect API answers, asked before a rollback depends on it.

A rollback is the path that must work when everything else is failing; it runs as a
Prefect flow only when the API answers its health check within seconds, and without
Prefect (pg_cutover.flows.rollback.rollback_without_prefect) otherwise.
"""

from __future__ import annotations

HEALTH_TIMEOUT = 5.0


def unreachable(timeout: float = HEALTH_TIMEOUT) -> str | None:
    """None when the configured Prefect API answers GET /health with 200; else why not, in a few words."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return "PREFECT_API_URL is not set"
    try:
        response = httpx.get(url.rstrip("/") + "/health", timeout=timeout)
    except httpx.HTTPError as exc:
        return f"{url} did not answer ({type(exc).__name__})"
    return None if response.status_code == 200 else f"{url}/health answered {response.status_code}"

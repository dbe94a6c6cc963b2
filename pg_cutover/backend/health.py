"""HTTP health checks of the backend (runbook 5.2 and 6.4)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from pg_cutover.errors import StepFailed


@dataclass
class HealthResult:
    url: str
    status: int | None
    seconds: float
    body: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def probe(base_url: str, paths: list[str], *, timeout: float = 10.0) -> list[HealthResult]:
    results = []
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        for path in paths:
            url = base_url + path
            started = time.monotonic()
            try:
                response = client.get(url)
                results.append(
                    HealthResult(url, response.status_code, time.monotonic() - started, response.text[:300])
                )
            except httpx.HTTPError as exc:
                results.append(HealthResult(url, None, time.monotonic() - started, "", f"{type(exc).__name__}: {exc}"))
    return results


def check(base_url: str, paths: list[str], *, wait_seconds: float = 0.0, interval: float = 1.0) -> list[HealthResult]:
    """Every path answers 2xx, polling up to wait_seconds (a backend may still be starting)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        results = probe(base_url, paths)
        if all(r.ok for r in results) or time.monotonic() >= deadline:
            break
        time.sleep(interval)
    bad = [r for r in results if not r.ok]
    if bad:
        raise StepFailed(
            "Health check failed: "
            + "; ".join(f"{r.url} answered {r.status if r.status is not None else r.error}" for r in bad)
        )
    return results

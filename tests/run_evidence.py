"""Everything a run left in the Prefect API for a reader of its UI: every artifact and every log line.

Read for the run and the runs it started (the rollback, a fleet's cutovers), unkeyed artifacts included.
"""

from __future__ import annotations

import asyncio
from uuid import UUID


def run_family(client, flow_run_id: UUID):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    async def family():
        ids, todo = [flow_run_id], [flow_run_id]
        while todo:
            children = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=todo)))
            todo = [r.id for r in children if r.id not in ids]
            ids += todo
        return ids

    return family()


def everything_shown(flow_run_id: UUID) -> list[str]:
    """Each artifact's key, description and data, and each log message, as text."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    async def read():
        await APILogHandler.aflush()  # this process's log lines still in the batch
        async with get_client() as client:
            ids = await run_family(client, flow_run_id)
            texts: list[str] = []
            of_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
            while True:  # a page at a time: the API returns at most its default limit per call
                page = await client.read_artifacts(artifact_filter=of_run, offset=len(texts))
                if not page:
                    break
                texts += [f"artifact {a.key} {a.type}: {a.description or ''}\n{a.data}" for a in page]
            logs: list[str] = []
            while True:
                page = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)),
                                              offset=len(logs))
                if not page:
                    break
                logs += [f"log {log.name}: {log.message}" for log in page]
            return texts + logs

    return asyncio.run(read())

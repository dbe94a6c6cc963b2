"""Runbook section 1: the maintenance window checklist as a gate."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from cutover.errors import PreflightError
from tasks.evidence import publish_markdown


class Checklist(BaseModel):
    """The five boxes of runbook section 1; each must be ticked before production is touched."""

    window_approved: bool = Field(False, description="Maintenance window announced and approved")
    writes_paused: bool = Field(False, description="Writes paused (admin/operator informed)")
    operator_and_reviewer_present: bool = Field(False, description="Migration operator and reviewer both present")
    backup_storage_confirmed: bool = Field(False, description="Backup storage path confirmed with enough free space")
    rollback_owner_assigned: bool = Field(False, description="Rollback owner assigned")

    @classmethod
    def all_confirmed(cls) -> "Checklist":
        return cls(**{name: True for name in cls.model_fields})

    def unchecked(self) -> list[str]:
        return [name for name, value in self.model_dump().items() if not value]


@task(name="checklist-gate", cache_policy=NO_CACHE)
def checklist_gate(database: str, approved_by: str | None, checklist: Checklist, dry_run: bool) -> dict:
    missing = checklist.unchecked()
    rows = "\n".join(
        f"| {'x' if getattr(checklist, name) else ' '} | {field.description} |"
        for name, field in Checklist.model_fields.items()
    )
    publish_markdown(
        database,
        "checklist",
        f"# Maintenance window checklist\n\nApproved by: **{approved_by or 'nobody'}**"
        f"{' (dry run: production is not touched)' if dry_run else ''}\n\n| done | item |\n|---|---|\n{rows}\n",
        "Runbook section 1, as answered for this run",
    )
    if not dry_run:
        if not approved_by or not approved_by.strip():
            raise PreflightError("approved_by is empty; expected the name of the person who approved this maintenance window. Nothing was changed.")
        if missing:
            raise PreflightError(f"The maintenance checklist is not complete ({', '.join(missing)}); nothing was changed.")
    return {"approved_by": approved_by, **checklist.model_dump()}

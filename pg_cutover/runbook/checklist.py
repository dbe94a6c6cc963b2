"""Runbook section 1's checklist: the five boxes an operator ticks before production is touched."""

from __future__ import annotations

from pydantic import BaseModel, Field

ITEMS = {
    "window_approved": "Maintenance window announced and approved",
    "writes_paused": "Writes paused (admin/operator informed)",
    "operator_and_reviewer_present": "Migration operator and reviewer both present",
    "backup_storage_confirmed": "Backup storage path confirmed with enough free space",
    "rollback_owner_assigned": "Rollback owner assigned",
}


class Checklist(BaseModel):
    """The five boxes of runbook section 1; each must be ticked before production is touched."""

    window_approved: bool = Field(False, description=ITEMS["window_approved"])
    writes_paused: bool = Field(False, description=ITEMS["writes_paused"])
    operator_and_reviewer_present: bool = Field(False, description=ITEMS["operator_and_reviewer_present"])
    backup_storage_confirmed: bool = Field(False, description=ITEMS["backup_storage_confirmed"])
    rollback_owner_assigned: bool = Field(False, description=ITEMS["rollback_owner_assigned"])

    @classmethod
    def all_confirmed(cls) -> "Checklist":
        return cls(**{name: True for name in ITEMS})

    def unchecked(self) -> list[str]:
        return [name for name in ITEMS if not getattr(self, name)]

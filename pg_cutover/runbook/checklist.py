"""Runbook section 1's checklist: the five boxes an operator ticks before production is touched."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

ITEMS = {
    "window_approved": "Maintenance window announced and approved",
    "writes_paused": "Writes paused (admin/operator informed)",
    "operator_and_reviewer_present": "Migration operator and reviewer both present",
    "backup_storage_confirmed": "Backup storage path confirmed with enough free space",
    "rollback_owner_assigned": "Rollback owner assigned",
}


class Checklist(BaseModel):
    """The five boxes of runbook section 1; each must be ticked before production is touched."""

    # A flow parameter of this type is drawn from its JSON schema: the run form shows this title and the
    # docstring above it, and each box's title and description.
    model_config = ConfigDict(title="Checklist (runbook section 1)")

    window_approved: bool = Field(False, title="Window approved", description=ITEMS["window_approved"])
    writes_paused: bool = Field(False, title="Writes paused", description=ITEMS["writes_paused"])
    operator_and_reviewer_present: bool = Field(False, title="Operator and reviewer present",
                                                description=ITEMS["operator_and_reviewer_present"])
    backup_storage_confirmed: bool = Field(False, title="Backup storage confirmed",
                                           description=ITEMS["backup_storage_confirmed"])
    rollback_owner_assigned: bool = Field(False, title="Rollback owner assigned",
                                          description=ITEMS["rollback_owner_assigned"])

    @classmethod
    def all_confirmed(cls) -> "Checklist":
        return cls(**{name: True for name in ITEMS})

    def unchecked(self) -> list[str]:
        return [name for name in ITEMS if not getattr(self, name)]

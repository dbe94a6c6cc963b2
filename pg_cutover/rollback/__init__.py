"""Runbook section 6: restore from backup, decided from the manifest, and the refusal to lose late writes."""

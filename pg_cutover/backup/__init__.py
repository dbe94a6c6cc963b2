"""Runbook section 1: the full backup, its verification, the off-site mirror and retention."""

"""The clone strategy's database operations: its preconditions, the clone, the swap and the swap back.

The clone strategy upgrades a file-level copy of the paused database and swaps the names, so
the write-pause window holds a copy and an upgrade, and a rollback is two renames.
"""

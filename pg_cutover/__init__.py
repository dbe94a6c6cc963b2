"""pg-cutover: the runbook as software.

The domain library is the subpackages below by concern (pg, migrations, backup, storage, checks,
runbook, rollback, backend) and the shared modules beside them; it imports neither Prefect nor
the flows, tasks or launcher (tests/test_import_contract.py). `pg_cutover.tasks` and
`pg_cutover.flows` (the repository's tasks/ and flows/) wrap it in Prefect; `pg_cutover.launcher`
holds the command line and what it starts before Prefect is imported.
"""

"""Outside the domain: the command line, the temporary Prefect server, heartbeats, the embedded demo services."""

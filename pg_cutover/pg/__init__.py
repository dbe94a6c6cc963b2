"""PostgreSQL itself: connections and catalog reads, the pg_dump/pg_restore client, database-level properties."""

"""A test app that started with create_all and only later adopted Alembic: its first revision
alters tables that no revision creates (issue 17)."""

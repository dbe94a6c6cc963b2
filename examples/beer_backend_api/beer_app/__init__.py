"""Example pilot app: a small FastAPI beer catalogue on PostgreSQL.

The legacy version of this app built its database with SQLAlchemy's
``create_all``; pg-cutover moves such a database onto Alembic.
"""

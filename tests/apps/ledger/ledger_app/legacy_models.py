"""The ledger's schema as its legacy pilot was built: `create_all` of these models, no Alembic.

It holds the constructs PostgreSQL prints differently after a dump and restore, or
that catalog comparisons easily get wrong: varchar IN checks (a non-native Enum and
a CheckConstraint), a native enum, a domain, server defaults with casts, functions
and a sequence, expression and partial indexes, identity and serial keys, a
generated column, a view and foreign keys with actions.
"""

from __future__ import annotations

from sqlalchemy import (DDL, BigInteger, CheckConstraint, Column, Computed, DateTime, Enum, ForeignKey, Identity,
                        Index, Integer, MetaData, Numeric, Sequence, String, Text, event, func, text)
from sqlalchemy.dialects.postgresql import DOMAIN, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

VIEW_SQL = ("CREATE VIEW active_account AS SELECT id, name, kind FROM account "
            "WHERE lifecycle_stage IN ('active') AND kind = 'person'")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


POSINT = DOMAIN("posint", Integer, check="VALUE > 0", constraint_name="posint_positive")
ORDER_NO = Sequence("order_no_seq", start=1000, metadata=Base.metadata)


class Account(Base):
    __tablename__ = "account"

    id = Column(Integer, primary_key=True)  # serial
    uid = Column(UUID(as_uuid=True), server_default=func.gen_random_uuid(), nullable=False, unique=True)
    name = Column(String(80), nullable=False)
    lifecycle_stage = Column(Enum("active", "deleted", name="lifecycle", native_enum=False, create_constraint=True,
                                  length=20), nullable=False, server_default="active")
    kind = Column(String(10), nullable=False, server_default="person")
    created_at = Column(DateTime(timezone=True), server_default=func.now(), nullable=False)
    settings = Column(JSONB, server_default=text("'{}'::jsonb"), nullable=False)

    __table_args__ = (
        CheckConstraint("kind IN ('person', 'company')", name="kind"),
        Index("ix_account_lower_name", func.lower(name)),
    )


class Entry(Base):
    __tablename__ = "entry"

    id = Column(BigInteger, Identity(), primary_key=True)
    account_id = Column(ForeignKey("account.id", ondelete="CASCADE", onupdate="CASCADE"), nullable=False)
    order_no = Column(BigInteger, server_default=ORDER_NO.next_value(), nullable=False)
    status = Column(Enum("open", "paid", "void", name="entry_status"), nullable=False, server_default="open")
    quantity = Column(POSINT, nullable=False, server_default="1")
    unit_price = Column(Numeric(12, 2), nullable=False, server_default=text("0"))
    total = Column(Numeric(14, 2), Computed("quantity * unit_price", persisted=True))
    note = Column(Text)

    __table_args__ = (
        Index("ix_entry_open", "account_id", postgresql_where=text("status = 'open'")),
    )


event.listen(Base.metadata, "after_create", DDL(VIEW_SQL))
event.listen(Base.metadata, "before_drop", DDL("DROP VIEW IF EXISTS active_account"))

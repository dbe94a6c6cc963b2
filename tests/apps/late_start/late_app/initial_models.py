"""The app's first schema, from before it had migrations; laid down by create_all."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table

metadata = MetaData()

item = Table(
    "item", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(40), nullable=False),
)

tag = Table(
    "tag", metadata,
    Column("id", Integer, primary_key=True),
    Column("item_id", Integer, ForeignKey("item.id", ondelete="CASCADE"), nullable=False),
    Column("label", String(20), nullable=False),
)

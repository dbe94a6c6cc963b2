"""The models as the legacy pilot had them when ``create_all`` built its database.

Frozen: this is the schema that exists in the wild.  Migration 0001_baseline
must reproduce exactly what ``Base.metadata.create_all()`` makes from this
file, so do not "tidy" names or types here.  Unnamed constraints are left
unnamed on purpose: PostgreSQL named them (breweries_pkey, breweries_name_key,
beers_brewery_id_fkey, ...), and those are the names the baseline must match.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Brewery(Base):
    __tablename__ = "breweries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    city: Mapped[str | None] = mapped_column(String(100), nullable=True)
    founded_year: Mapped[int | None] = mapped_column(Integer, nullable=True)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=true())
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class Beer(Base):
    __tablename__ = "beers"
    __table_args__ = (
        UniqueConstraint("brewery_id", "name", name="uq_beers_brewery_name"),
        Index("ix_beers_style", "style"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    brewery_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("breweries.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    style: Mapped[str] = mapped_column(String(50), nullable=False)
    abv: Mapped[Decimal | None] = mapped_column(Numeric(4, 2), nullable=True)
    # The legacy app forgot nullable=False here; the baseline keeps that wart.
    created_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, server_default=func.now()
    )


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (Index("ix_reviews_beer_id", "beer_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    beer_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("beers.id", ondelete="CASCADE"), nullable=False
    )
    reviewer: Mapped[str] = mapped_column(String(100), nullable=False)
    rating: Mapped[int] = mapped_column(Integer, nullable=False)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

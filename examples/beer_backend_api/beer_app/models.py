"""The models at head (0003_review_constraints): what the app and autogenerate see.

A separate declarative base from legacy_models: the two describe different
points in the schema's history and must never share a MetaData.
Changes since the legacy schema:
  0002_brewery_slug        breweries.slug varchar(220) NOT NULL, uq_breweries_slug
  0003_review_constraints  ck_reviews_rating_range, ix_reviews_created_at
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    CheckConstraint,
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
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Brewery(Base):
    __tablename__ = "breweries"
    __table_args__ = (UniqueConstraint("slug", name="uq_breweries_slug"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    city: Mapped[str | None] = mapped_column(String(100), nullable=True)
    founded_year: Mapped[int | None] = mapped_column(Integer, nullable=True)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=true())
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    # No server default: new rows must get a slug from beer_app.slug in the app.
    slug: Mapped[str] = mapped_column(String(220), nullable=False)

    beers: Mapped[list[Beer]] = relationship(back_populates="brewery", passive_deletes=True)


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
    created_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, server_default=func.now()
    )

    brewery: Mapped[Brewery] = relationship(back_populates="beers")
    reviews: Mapped[list[Review]] = relationship(back_populates="beer", passive_deletes=True)


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint("rating BETWEEN 1 AND 5", name="ck_reviews_rating_range"),
        Index("ix_reviews_beer_id", "beer_id"),
        Index("ix_reviews_created_at", "created_at"),
    )

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

    beer: Mapped[Beer] = relationship(back_populates="reviews")

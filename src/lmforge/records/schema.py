"""The records' tables, as SQLAlchemy 2.0 declarative classes: the one description of the schema
that the store queries and that the Alembic migrations must reproduce exactly (the tests compare
`alembic upgrade head` with this metadata on SQLite and PostgreSQL).

Deleting a request deletes its feedback and unlinks the review items mined from it (they keep a
copy of the text) by the foreign keys themselves, so retention is one DELETE on either backend.
A review item is unique per (queue, task, sha256 of its text): the digest, not the text, because a
PostgreSQL B-tree index refuses entries above about 2.7 kB.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

VERSION_TABLE = "records_schema_version"
"""Alembic's version table, named for the records so that a database shared with another Alembic
project keeps the two histories apart."""


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on both backends: PostgreSQL stores `timestamptz`, SQLite has no
    time zones, so it stores UTC without one and gets it back as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} (expected a timezone-aware one)")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    """Every constraint named by convention, so that a later migration can name what it alters
    (SQLite's batch mode recreates tables and needs the names)."""

    metadata = MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })


class RequestRow(Base):
    __tablename__ = "requests"
    __table_args__ = (Index(None, "created_at"), Index(None, "experiment"))

    id: Mapped[str] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column()
    model_version: Mapped[str] = mapped_column()
    route: Mapped[str] = mapped_column()
    task: Mapped[str] = mapped_column()
    input_text: Mapped[str] = mapped_column(Text)
    output: Mapped[dict] = mapped_column(JSON)
    latency_ms: Mapped[float] = mapped_column(Double)
    status: Mapped[int] = mapped_column()
    confidence: Mapped[float | None] = mapped_column(Double)
    head: Mapped[str | None] = mapped_column()
    experiment: Mapped[str | None] = mapped_column()
    variant: Mapped[str | None] = mapped_column()
    user: Mapped[str | None] = mapped_column("user_id")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FeedbackRow(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"), index=True)
    rating: Mapped[float | None] = mapped_column(Double)
    label: Mapped[str | None] = mapped_column()
    spans: Mapped[list | None] = mapped_column(JSON(none_as_null=True))
    author: Mapped[str | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReviewItemRow(Base):
    __tablename__ = "review_items"
    __table_args__ = (UniqueConstraint("queue", "task", "text_sha256"),
                      Index(None, "queue", "status", "priority"))

    id: Mapped[int] = mapped_column(primary_key=True)
    queue: Mapped[str] = mapped_column()
    task: Mapped[str] = mapped_column()
    text: Mapped[str] = mapped_column(Text)
    text_sha256: Mapped[str] = mapped_column(String(64))
    labels: Mapped[list] = mapped_column(JSON)
    prediction: Mapped[dict] = mapped_column(JSON)
    source: Mapped[str] = mapped_column()
    priority: Mapped[float] = mapped_column(Double)
    reason: Mapped[str] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(ForeignKey("requests.id", ondelete="SET NULL"))
    model_version: Mapped[str | None] = mapped_column()
    status: Mapped[str] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CorrectionRow(Base):
    __tablename__ = "corrections"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id", ondelete="CASCADE"), unique=True)
    author: Mapped[str] = mapped_column()
    accepted: Mapped[bool] = mapped_column()
    label: Mapped[str | None] = mapped_column()
    spans: Mapped[list | None] = mapped_column(JSON(none_as_null=True))
    edits: Mapped[int] = mapped_column()
    seconds: Mapped[float | None] = mapped_column(Double)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

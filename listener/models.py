"""The three tables: events (the call log), items (one per source and key) and actions (the work).

SQLAlchemy Core tables, not ORM classes: every query in the project is Core,
and the worker, which runs jobs in its own process, stays 8 MiB smaller
without ``sqlalchemy.orm`` (the benchmark's memory target counts the worker).
The migrations in ``listener/migrations`` create exactly this schema
(``tests/test_models.py`` compares them).
"""
from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

JsonType = JSON().with_variant(JSONB(), "postgresql")
# BigInteger ids on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()


def _timestamp(name: str, *, nullable: bool = False) -> Column:
    return Column(name, DateTime(timezone=True), nullable=nullable)


items = Table(
    "items", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("source", String(64), nullable=False),
    Column("key", String(255), nullable=False),
    Column("state", String(32)),
    Column("data", JsonType, nullable=False, default=dict),
    _timestamp("created_at"),
    _timestamp("updated_at"),
    UniqueConstraint("source", "key", name="uq_items_source_key"),
    Index("ix_items_source_state", "source", "state"),
)

# One call to a webhook endpoint that was authenticated and well formed.
events = Table(
    "events", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("source", String(64), nullable=False),
    Column("endpoint", String(128), nullable=False),
    _timestamp("received_at"),
    Column("status", String(16), nullable=False),  # accepted, duplicate, ignored
    Column("reason", Text),
    Column("change", String(64)),
    Column("item_id", ForeignKey("items.id")),
    # "<source>:<key>:<once>" for accepted events with an identity in meaning.
    Column("dedupe_key", String(400), unique=True),
    Column("duplicate_of", Id),
    Column("payload", JsonType, nullable=False, default=dict),
    Column("remote_addr", String(64)),
    # The only secondary index but the dedupe key's: each is written by every webhook's commit, and the admin
    # API's filters on source, status and endpoint read the log newest first until a page is full (0002).
    Index("ix_events_item", "item_id"),
)

# The work an item causes, and the record of every attempt at it (the transfer log).
actions = Table(
    "actions", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("item_id", ForeignKey("items.id"), nullable=False),
    Column("event_id", ForeignKey("events.id")),
    Column("kind", String(32), nullable=False),
    Column("target", Text, nullable=False, default=""),
    Column("workflow", String(128)),
    Column("once_key", String(255)),
    Column("status", String(16), nullable=False),  # queued, running, done, failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("bytes_done", BigInteger, nullable=False, default=0),
    Column("bytes_total", BigInteger),
    Column("speed_bps", Float),
    Column("error", Text),
    _timestamp("not_before", nullable=True),
    _timestamp("created_at"),
    _timestamp("updated_at"),
    _timestamp("started_at", nullable=True),
    _timestamp("finished_at", nullable=True),
    UniqueConstraint("item_id", "once_key", name="uq_actions_item_once"),
    Index("ix_actions_status", "status"),
    # No index on item_id alone: uq_actions_item_once begins with it (migration 0003).
)

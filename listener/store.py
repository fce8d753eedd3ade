"""Recording a delivery: one transaction for the event, the item's new state and its actions.

The item row is upserted and locked first, so deliveries about the same item
are serialised (on PostgreSQL by the row lock, on SQLite by BEGIN IMMEDIATE):
duplicate checks and "both halves seen" decisions see each other's effects.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from handlers.base import ActionRequest, Event, Ignored, ItemView
from listener.db import writer
from listener.models import actions, events, items
from listener.sources import Source
from listener.workflows import workflow_actions


@dataclass(frozen=True)
class Recorded:
    status: str  # accepted, duplicate, ignored
    event_id: int
    reason: str | None = None
    item_id: int | None = None
    action_ids: list[int] = field(default_factory=list)  # new actions, to hand over after commit


@dataclass(frozen=True)
class Delivery:
    """A call as it arrived, for the call log."""

    source: Source
    endpoint: str
    payload: Mapping[str, Any]
    received_at: datetime
    remote_addr: str | None = None


class EventStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = writer(engine)
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        self._insert = dialect.insert

    def record(self, delivery: Delivery, outcome: Event | Ignored, *, replay_of: int | None = None) -> Recorded:
        """Record one delivery. ``replay_of``: an admin's replay of that event, past the duplicate check
        (its actions still exist at most once per ``once`` key, so done work does not run again)."""
        with self.engine.begin() as conn:
            if isinstance(outcome, Ignored):
                reason = f"replay of event {replay_of}: {outcome.reason}" if replay_of else outcome.reason
                event_id = self._log(conn, delivery, status="ignored", reason=reason)
                return Recorded("ignored", event_id, reason=reason)
            return self._record_event(conn, delivery, outcome, replay_of)

    def _record_event(self, conn: Connection, delivery: Delivery, event: Event,
                      replay_of: int | None = None) -> Recorded:
        source = delivery.source
        item_id, state, data = self._lock_item(conn, source.name, event.key, delivery.received_at)
        dedupe_key = f"{source.name}:{event.key}:{event.once}" if event.once and not replay_of else None
        if dedupe_key:
            original = conn.execute(select(events.c.id).where(events.c.dedupe_key == dedupe_key)).scalar()
            if original is not None:
                self._log(conn, delivery, status="duplicate", item_id=item_id, change=event.change,
                          duplicate_of=original)
                return Recorded("duplicate", original, item_id=item_id)

        transition = source.handler.apply(ItemView(state, data), event, source.context)
        reason = f"replay of event {replay_of}" if replay_of else None
        event_id = self._log(conn, delivery, status="accepted", item_id=item_id, change=event.change,
                             dedupe_key=dedupe_key, reason=reason)
        conn.execute(
            update(items)
            .where(items.c.id == item_id)
            .values(state=transition.state, data=transition.data, updated_at=delivery.received_at)
        )
        requested = transition.actions + workflow_actions(
            source.handler, transition.entered, transition.data, source.context.workflows
        )
        action_ids = add_actions(conn, self._insert, item_id, event_id, requested, delivery.received_at)
        return Recorded("accepted", event_id, reason=reason, item_id=item_id, action_ids=action_ids)

    def _lock_item(self, conn: Connection, source: str, key: str, now: datetime) -> tuple[int, str | None, dict]:
        stmt = self._insert(items).values(source=source, key=key, state=None, data={}, created_at=now, updated_at=now)
        # DO UPDATE (not DO NOTHING) so the row is returned, and locked on PostgreSQL, either way.
        stmt = stmt.on_conflict_do_update(index_elements=["source", "key"], set_={"key": stmt.excluded.key})
        row = conn.execute(stmt.returning(items.c.id, items.c.state, items.c.data)).one()
        return row.id, row.state, dict(row.data or {})

    def _log(self, conn: Connection, delivery: Delivery, *, status: str, reason: str | None = None,
             item_id: int | None = None, change: str | None = None, dedupe_key: str | None = None,
             duplicate_of: int | None = None) -> int:
        return conn.execute(
            insert(events)
            .values(
                source=delivery.source.name,
                endpoint=delivery.endpoint,
                received_at=delivery.received_at,
                status=status,
                reason=reason,
                change=change,
                item_id=item_id,
                dedupe_key=dedupe_key,
                duplicate_of=duplicate_of,
                payload=dict(delivery.payload),
                remote_addr=delivery.remote_addr,
            )
            .returning(events.c.id)
        ).scalar_one()


def add_actions(conn: Connection, insert_for_dialect: Any, item_id: int, event_id: int | None,
                requested: list[ActionRequest], now: datetime) -> list[int]:
    """Insert the requested actions that do not exist yet; return the ids of the new ones.

    ``once`` actions exist at most once per item (a unique constraint backs this);
    others are coalesced with an identical action that is still queued.
    """
    new_ids = []
    for request in requested:
        values = dict(item_id=item_id, event_id=event_id, kind=request.kind, target=request.target,
                      workflow=request.workflow, once_key=request.once, status="queued", attempts=0,
                      bytes_done=0, created_at=now, updated_at=now)
        if request.once is None:
            if _queued_twin(conn, item_id, request):
                continue
            new_ids.append(conn.execute(insert(actions).values(**values).returning(actions.c.id)).scalar_one())
            continue
        stmt = insert_for_dialect(actions).values(**values)
        stmt = stmt.on_conflict_do_nothing(index_elements=["item_id", "once_key"]).returning(actions.c.id)
        new_id = conn.execute(stmt).scalar()
        if new_id is not None:
            new_ids.append(new_id)
    return new_ids


def _queued_twin(conn: Connection, item_id: int, request: ActionRequest) -> bool:
    twin = select(actions.c.id).where(
        and_(
            actions.c.item_id == item_id,
            actions.c.kind == request.kind,
            actions.c.target == request.target,
            actions.c.workflow.is_(None) if request.workflow is None else actions.c.workflow == request.workflow,
            actions.c.status == "queued",
            actions.c.attempts == 0,
        )
    )
    return conn.execute(twin.limit(1)).first() is not None

"""The shapes SPEC 6 gives for events, items and actions in the admin API."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from listener.db import as_utc


def _time(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat() if value else None


def event_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "source": row.source,
        "endpoint": row.endpoint,
        "received_at": _time(row.received_at),
        "status": row.status,
        "reason": row.reason,
        "item_id": row.item_id,
        "change": row.change,
        "duplicate_of": row.duplicate_of,
    }


def item_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "source": row.source,
        "key": row.key,
        "state": row.state,
        "data": row.data or {},
        "created_at": _time(row.created_at),
        "updated_at": _time(row.updated_at),
    }


def action_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "item_id": row.item_id,
        "target": row.target,
        "workflow": row.workflow,
        "status": row.status,
        "attempts": row.attempts,
        "bytes_done": row.bytes_done,
        "bytes_total": row.bytes_total,
        "speed_bps": row.speed_bps,
        "error": row.error,
        "not_before": _time(row.not_before),
        "started_at": _time(row.started_at),
        "finished_at": _time(row.finished_at),
    }

"""The shapes SPEC 6 gives for events, items and actions in the admin API, with secrets masked."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from listener.db import as_utc
from listener.redact import redact, redact_data, redact_nullable


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
        "reason": redact_nullable(row.reason),
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
        "data": redact_data(row.data or {}),
        "created_at": _time(row.created_at),
        "updated_at": _time(row.updated_at),
    }


def action_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "item_id": row.item_id,
        "target": redact(row.target),
        "workflow": row.workflow,
        "status": row.status,
        "attempts": row.attempts,
        "bytes_done": row.bytes_done,
        "bytes_total": row.bytes_total,
        "speed_bps": row.speed_bps,
        "error": redact_nullable(row.error),
        "not_before": _time(row.not_before),
        "started_at": _time(row.started_at),
        "finished_at": _time(row.finished_at),
    }

"""The admin API's two writes (SPEC 4 and 6): retry an action, replay an event.

Neither can make a ``done`` action run again by accident:

- ``POST /api/actions/<id>/retry`` puts back only an action that ``failed``,
  or one waiting for its next scheduled attempt (run now instead). Its
  attempts are kept. A ``done``, ``running`` or already waiting action is a
  ``409`` saying why.
- ``POST /api/events/<id>/replay`` runs the stored payload through its
  source's handler again and records it as a new event ("replay of event N"),
  past the duplicate check. The actions it causes go through the same
  ``once`` rule as any event: an action that exists (done or not) is not
  created again, so only work that never existed (a workflow added since,
  say) follows.
"""
from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import redis
from flask import current_app, request
from flask_restful import Api
from sqlalchemy import or_, select, update

from handlers.base import Rejected, WebhookRequest
from listener.admin import AdminResource
from listener.db import as_utc, writer
from listener.models import actions, events
from listener.outbox import Outbox, Pending, job_id
from listener.serialize import action_json
from listener.store import Delivery, EventStore

log = logging.getLogger(__name__)


def _error(status: int, message: str) -> tuple[dict[str, Any], int]:
    return {"status": "error", "message": message}, status


class ActionRetry(AdminResource):
    def post(self, action_id: int):  # noqa: ANN201
        engine = writer(current_app.extensions["listener.engine"])
        now = datetime.now(UTC)
        retryable = or_(actions.c.status == "failed",
                        (actions.c.status == "queued") & (actions.c.not_before > now))
        with engine.begin() as conn:
            before = conn.execute(select(actions).where(actions.c.id == action_id)).first()
            if before is None:
                return _error(404, f"no action {action_id}")
            row = conn.execute(
                update(actions).where(actions.c.id == action_id, retryable)
                .values(status="queued", not_before=None, finished_at=None, updated_at=now)
                .returning(*actions.c)
            ).first()
        if row is None:
            return _error(409, _why_not(before))
        outbox: Outbox = current_app.extensions["listener.outbox"]
        if before.status == "queued":
            _cancel_scheduled(outbox, job_id(action_id, before.attempts))
        handed_over = outbox.hand_over([Pending(action_id, row.attempts)])
        log.info("listener.admin.retry action=%s kind=%s was=%s attempts=%s handed_over=%s",
                 action_id, row.kind, before.status, row.attempts, handed_over)
        return {"status": "queued", "action": action_json(row)}


def _why_not(action: Any) -> str:
    if action.status == "done":
        return f"action {action.id} is done; it does not run again"
    if action.status == "running":
        return f"action {action.id} is running (attempt {action.attempts}); wait for it to finish or fail"
    return f"action {action.id} is already queued to run"


def _cancel_scheduled(outbox: Outbox, scheduled_id: str) -> None:
    """Take the action's scheduled attempt off RQ's schedule; it is handed over again to run now."""
    try:
        registry = outbox.queue.scheduled_job_registry
        if registry.remove(scheduled_id):
            outbox.redis.delete(f"rq:job:{scheduled_id}")
    except redis.RedisError as error:
        # The scheduled job may still fire later; the runner's claim makes it a no-op if the action ran.
        log.warning("listener.admin.retry_unschedule_failed job=%s error=%s", scheduled_id, error)


class EventReplay(AdminResource):
    def post(self, event_id: int):  # noqa: ANN201
        runtime = current_app.extensions["listener.runtime"]
        with current_app.extensions["listener.engine"].connect() as conn:
            event = conn.execute(select(events).where(events.c.id == event_id)).first()
        if event is None:
            return _error(404, f"no event {event_id}")
        source = runtime.sources.get(event.source)
        if source is None:
            return _error(409, f"event {event_id} came from source {event.source}, which is no longer configured")
        payload = dict(event.payload or {})
        try:
            # Parsed as at its first receipt: a scoopa link's validity counts from then.
            outcome = source.handler.parse(WebhookRequest(endpoint=event.endpoint, method="POST", payload=payload,
                                                          received_at=as_utc(event.received_at)))
        except Rejected as problem:
            return _error(409, f"event {event_id} cannot be replayed: {problem}")
        store: EventStore = current_app.extensions["listener.store"]
        delivery = Delivery(source=source, endpoint=event.endpoint, payload=payload, received_at=datetime.now(UTC),
                            remote_addr=request.remote_addr)
        recorded = store.record(delivery, outcome, replay_of=event_id)
        current_app.extensions["listener.outbox"].hand_over_new(recorded.action_ids)
        log.info("listener.admin.replay event=%s new_event=%s status=%s actions=%s",
                 event_id, recorded.event_id, recorded.status, recorded.action_ids)
        answer = {"status": recorded.status, "event_id": recorded.event_id, "replay_of": event_id,
                  "actions": recorded.action_ids}
        if recorded.reason:
            answer["reason"] = recorded.reason
        return answer


def register_admin_actions(api: Api) -> None:
    api.add_resource(ActionRetry, "/api/actions/<int:action_id>/retry")
    api.add_resource(EventReplay, "/api/events/<int:event_id>/replay")

"""The webhook endpoints: one flask-restful resource per handler endpoint.

Checks run in a fixed order, each with its own answer and log key
(``listener.<source>.<what>``): allowed address (403), token (401), rate
limit (429), body size (413), body (400), handler (400 or 200 ignored), then
one database transaction (503 if the database cannot take it), then 200.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Request, Response, request
from flask_restful import Api, Resource
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import RequestEntityTooLarge

from handlers.base import Rejected, WebhookRequest
from listener.auth import Forbidden, Unauthorized, check_address, check_token, presented_token
from listener.body import BadBody, TooLarge, clean_fields, parse_json_object, read_limited
from listener.db import is_unavailable
from listener.metrics import count_webhook
from listener.outbox import Outbox
from listener.ratelimit import RateLimiter
from listener.sources import Source
from listener.store import Delivery, EventStore, Recorded

log = logging.getLogger("listener")

RETRY_AFTER_SECONDS = 5
# Metric labels for the answers that are not a 200.
_ERROR_NAMES = {400: "rejected", 401: "unauthorized", 403: "forbidden", 413: "too_large", 429: "rate_limited",
                503: "unavailable"}


Answer = tuple[dict[str, Any], int, dict[str, str]]  # body, status code, headers


def error(status: int, message: str, **headers: str) -> Answer:
    return {"status": "error", "message": message}, status, headers


@dataclass(frozen=True)
class Recorder:
    """What a webhook needs besides its request: the store, the outbox and the rate limiter, the app's own."""

    store: EventStore
    outbox: Outbox
    rate_limiter: RateLimiter


class WebhookResource(Resource):
    def __init__(self, source: Source, endpoint: str, recorder: Recorder) -> None:
        self.source = source
        self.endpoint = endpoint
        self.recorder = recorder

    def get(self):  # noqa: ANN201 - flask-restful answers
        return self._receive()

    def post(self):  # noqa: ANN201
        return self._receive()

    def _receive(self) -> Response:
        started = time.perf_counter()
        body, status, headers = self._answer_call()
        count_webhook(self.source.name, body["status"] if status == 200 else _ERROR_NAMES.get(status, "error"),
                      time.perf_counter() - started)
        # A response of our own, as flask-restful's JSON representation would make it (a dict dumped, then a
        # newline), without its content negotiation: every answer here is JSON.
        return Response(json.dumps(body) + "\n", status, headers, mimetype="application/json")

    def _answer_call(self) -> Answer:
        source = self.source
        # The request itself, not Flask's proxy to it: each attribute read through the proxy looks it up again.
        call: Request = request._get_current_object()  # type: ignore[attr-defined]
        try:
            check_address(source.allow_ips, call.remote_addr)
            # Without a query string there are no args to parse (werkzeug would build an empty MultiDict).
            check_token(source.token, presented_token(call.headers, call.args if call.query_string else {}))
        except Forbidden as refusal:
            log.warning("listener.%s.forbidden endpoint=%s addr=%s", source.name, self.endpoint, call.remote_addr)
            return error(403, str(refusal))
        except Unauthorized as refusal:
            log.warning("listener.%s.unauthorized endpoint=%s addr=%s reason=%s",
                        source.name, self.endpoint, call.remote_addr, refusal)
            return error(401, str(refusal))

        rate = source.config.rate_limit
        if rate is not None:
            wait = self.recorder.rate_limiter.retry_after(source.name, rate.calls, rate.per_seconds)
            if wait is not None:
                log.warning("listener.%s.rate_limited endpoint=%s", source.name, self.endpoint)
                return error(429, f"rate limit of {rate.calls} calls per {rate.per_seconds:g} s exceeded",
                             **{"Retry-After": str(wait)})

        limit = source.config.max_body_bytes
        length = call.content_length
        if length is not None and length > limit:
            return error(413, f"body: larger than the limit of {limit} bytes")
        received_at = datetime.now(UTC)
        try:
            payload, payload_text = self._payload(call, limit)
            outcome = source.handler.parse(
                WebhookRequest(endpoint=self.endpoint, method=call.method, payload=payload, received_at=received_at)
            )
        except TooLarge as problem:
            return error(413, str(problem))
        except (BadBody, Rejected) as problem:
            log.info("listener.%s.rejected endpoint=%s reason=%s", source.name, self.endpoint, problem)
            return error(400, str(problem))

        delivery = Delivery(source=source, endpoint=self.endpoint, payload=payload, payload_text=payload_text,
                            received_at=received_at, remote_addr=call.remote_addr)
        try:
            recorded = self.recorder.store.record(delivery, outcome)
        except DBAPIError as failure:
            if is_unavailable(failure):
                log.error("listener.%s.database_unavailable endpoint=%s error=%s",
                          source.name, self.endpoint, failure.orig)
                return error(503, "database unavailable, retry later", **{"Retry-After": str(RETRY_AFTER_SECONDS)})
            log.warning("listener.%s.unstorable endpoint=%s error=%s", source.name, self.endpoint, failure.orig)
            return error(400, "body: cannot be stored")

        self.recorder.outbox.hand_over_new(recorded.action_ids)
        return self._answer(recorded, outcome)

    def _payload(self, call: Request, limit: int) -> tuple[dict[str, Any], str | None]:
        if self.source.handler.BODY == "query":
            fields = dict(call.args)
            if call.method == "POST":
                call.max_content_length = limit
                try:
                    fields.update(call.form)
                except RequestEntityTooLarge:
                    raise TooLarge(f"body: larger than the limit of {limit} bytes") from None
            return clean_fields(fields), None
        # Parsed whatever Content-Type says: senders differ (seed 003 forces it too).
        return parse_json_object(read_limited(_body_stream(call), limit))

    def _answer(self, recorded: Recorded, outcome: Any) -> Answer:
        key = getattr(outcome, "key", None)
        log.info("listener.%s.%s endpoint=%s key=%s event=%s actions=%s reason=%s", self.source.name,
                 recorded.status, self.endpoint, key, recorded.event_id, recorded.action_ids, recorded.reason)
        if recorded.status == "ignored":
            return {"status": "ignored", "reason": recorded.reason, "event_id": recorded.event_id}, 200, {}
        return {"status": recorded.status, "event_id": recorded.event_id}, 200, {}


def _body_stream(call: Request) -> Any:
    """The body's stream. A server that ends the body itself (``wsgi.input_terminated``: gunicorn, at the
    Content-Length or the last chunk) gives the stream werkzeug's ``request.stream`` would, without Flask's
    and werkzeug's checks around it (a tenth of a webhook's own work); ``read_limited`` enforces the limit."""
    if call.environ.get("wsgi.input_terminated"):
        return call.environ["wsgi.input"]
    return call.stream


def register_webhooks(api: Api, sources: dict[str, Source], recorder: Recorder) -> None:
    for source in sources.values():
        for path, methods in source.handler.ENDPOINTS.items():
            # A resource class per endpoint, routed for its methods only: anything else is a 405.
            name = f"Webhook_{source.name}_{path.strip('/').replace('-', '_')}"
            resource = type(name, (WebhookResource,), {"methods": set(methods)})
            api.add_resource(resource, path, endpoint=f"webhook:{source.name}:{path}",
                             resource_class_kwargs={"source": source, "endpoint": path, "recorder": recorder})
        if source.token is None:
            log.warning("listener.%s.open source %s has no token: anyone can call %s", source.name,
                        source.name, ", ".join(source.handler.ENDPOINTS))

"""The Flask application: webhooks, admin API and health checks."""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from flask_restful import Api
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from listener.admin import register_admin
from listener.db import get_engine
from listener.health import health
from listener.logs import configure_logging
from listener.metrics import metrics
from listener.openapi import openapi
from listener.outbox import Outbox
from listener.ratelimit import RateLimiter
from listener.runtime import Runtime
from listener.status_page import status_page
from listener.store import EventStore
from listener.webhooks import Recorder, register_webhooks


class JsonApi(Api):
    """Every error, including 404 and 405 from routing, answered as JSON in one shape."""

    def handle_error(self, e: Exception) -> Any:
        if isinstance(e, HTTPException):
            response = self.make_response({"status": "error", "message": e.description}, e.code)
            for name, value in e.get_headers():
                if name.lower() not in ("content-type", "content-length"):
                    response.headers[name] = value
            return response
        return super().handle_error(e)


def create_app(runtime: Runtime | None = None) -> Flask:
    runtime = runtime or Runtime.load()
    configure_logging(runtime.settings)
    app = Flask("listener")
    app.config["LISTENER_ADMIN_TOKEN"] = runtime.settings.admin_token
    app.config["ERROR_404_HELP"] = False
    if runtime.settings.proxy_hops:
        # Behind a PaaS router the caller's address is in X-Forwarded-For (for allow_ips).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=runtime.settings.proxy_hops)  # type: ignore[method-assign]

    app.extensions["listener.runtime"] = runtime
    app.extensions["listener.engine"] = runtime.engine
    # Its own engine, without a ping per checkout: the store retries a dropped connection itself.
    app.extensions["listener.store"] = EventStore(get_engine(runtime.settings.database_url, pre_ping=False))
    fast_redis = runtime.redis(fast_fail=True)
    app.extensions["listener.outbox"] = Outbox(fast_redis, runtime.settings.queue_name)
    app.extensions["listener.rate_limiter"] = RateLimiter(fast_redis)

    api = JsonApi(app, catch_all_404s=True)
    register_webhooks(api, runtime.sources, Recorder(app.extensions["listener.store"],
                                                    app.extensions["listener.outbox"],
                                                    app.extensions["listener.rate_limiter"]))
    register_admin(api)
    app.register_blueprint(health)
    app.register_blueprint(metrics)
    app.register_blueprint(openapi)
    app.register_blueprint(status_page)
    logging.getLogger("listener").info("listener.app.ready sources=%s", ",".join(runtime.sources))
    return app

"""Liveness and readiness for load balancers and PaaS health checks."""
from __future__ import annotations

from flask import Blueprint, current_app
from sqlalchemy import text

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz():  # noqa: ANN201
    return {"status": "ok"}


@health.get("/readyz")
def readyz():  # noqa: ANN201
    checks = {}
    try:
        with current_app.extensions["listener.engine"].connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:  # noqa: BLE001 - any failure means "not ready"
        checks["database"] = f"unavailable: {type(error).__name__}"
    try:
        current_app.extensions["listener.outbox"].redis.ping()
        checks["redis"] = "ok"
    except Exception as error:  # noqa: BLE001
        checks["redis"] = f"unavailable: {type(error).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return {"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503

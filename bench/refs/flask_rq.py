"""What people write first: a plain Flask view that enqueues one RQ job per webhook.

It stores nothing (a job lost with Redis is a webhook lost), and the jobs are
never run here: only the enqueue is measured. REDIS_URL comes from the bench.
"""
from __future__ import annotations

import os

from flask import Flask, request
from redis import Redis
from rq import Queue

app = Flask("flask_rq")
queue = Queue("bench-flask-rq", connection=Redis.from_url(os.environ["REDIS_URL"]))


def handle_create(payload: dict) -> None:
    """The job people would write next; never executed by the bench."""


@app.post("/create")
def create():  # noqa: ANN201
    payload = request.get_json(force=True)
    job = queue.enqueue("bench.refs.flask_rq.handle_create", payload)
    return {"status": "accepted", "job_id": job.id}

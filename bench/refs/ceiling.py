"""The framework's ceiling: a flask-restful resource that only parses the JSON and answers.

No database, no Redis, no validation: what Flask + flask-restful + gunicorn
cost per webhook on this machine, and so the most the listener could reach.
"""
from __future__ import annotations

from flask import Flask, request
from flask_restful import Api, Resource


class Create(Resource):
    def post(self):  # noqa: ANN201
        payload = request.get_json(force=True)
        return {"status": "accepted", "object_id": payload.get("object_id")}


app = Flask("ceiling")
Api(app).add_resource(Create, "/create")

"""Webhooks sent straight through the listener's WSGI app, in this process: what ``instructions.py`` counts.

    python bench/wsgi_calls.py APP_ROOT WORKDIR MODE N

MODE ``create``: N ``POST /create``, each for a new asset (the ingest benchmark's request);
``pair``: N assets, each a ``/create`` then a ``/proxy`` (CLOSED) that starts an analysis (event to
action's). No gunicorn and no sockets: the app itself, its SQLite database and Redis (``REDIS_URL``).
The first run in WORKDIR migrates the database. ``BENCH_DATABASE_URL``, if set, is the database instead
(a PostgreSQL one, to profile that path). Exits 1 unless every call was answered 200.
``BENCH_ICONIK_URL``, if set, is iconik's API in the config (``worker_calls.py`` runs the analyses).
"""
from __future__ import annotations

import copy
import io
import json
import os
import sys
import uuid
from pathlib import Path

# The bench's own modules, imported before the app root goes first on the path.
from common import listener_env, migrate, use_app_root, write_config
from ingest import iconik_config
from loadgen import HOOK_TOKEN


def use_listener(app_root: Path, workdir: Path) -> None:
    """Make this process a listener process of the ingest benchmark's config and environment, on a SQLite
    database in ``workdir`` (migrated on first use), with the code of ``app_root``."""
    use_app_root(app_root)
    sys.path.insert(0, str(app_root))
    os.chdir(app_root)
    workdir.mkdir(parents=True, exist_ok=True)
    api = os.environ.get("BENCH_ICONIK_URL")
    config = iconik_config(api) if api else iconik_config()
    sqlite_path = workdir / "var" / "listener.db"
    database_url = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{sqlite_path}"
    os.environ.update(listener_env(  # no gunicorn, so no port
        workdir=workdir, database_url=database_url,
        redis_url=os.environ["REDIS_URL"], config_path=write_config(workdir / "listener.yaml", config),
        port=0))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(workdir / "metrics")  # set by gunicorn.conf.py otherwise
    (workdir / "metrics").mkdir(exist_ok=True)
    if not sqlite_path.exists():  # SQLite: the first run in workdir; PostgreSQL: every run, a no-op at head
        migrate(os.environ)


def quiet_logs() -> None:
    """The log lines are formatted as always, and written where they cost no terminal."""
    import logging

    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - for the life of the process


def main() -> int:
    app_root, workdir, mode, count = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    use_listener(app_root, workdir)

    from wsgi import app  # noqa: PLC0415 - from the app root given

    quiet_logs()

    fixtures = app_root / "tests" / "fixtures" / "iconik"
    create = json.loads((fixtures / "create__asset.json").read_text())
    proxy = json.loads((fixtures / "proxy__closed.json").read_text())
    statuses: dict[str, int] = {}

    def start_response(status: str, _headers: list, _exc_info: object = None) -> None:
        statuses[status] = statuses.get(status, 0) + 1

    def post(path: str, body: dict) -> None:
        data = json.dumps(body).encode()
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(data), "wsgi.errors": sys.stderr, "wsgi.multithread": False,
            "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.version": (1, 0),
            "wsgi.input_terminated": True,  # as gunicorn sets it
            "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(data)), "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1:8000", "HTTP_USER_AGENT": "iconik-webhook-bench",
            "HTTP_X_LISTENER_TOKEN": HOOK_TOKEN,
        }
        b"".join(app(environ, start_response))

    salt = uuid.uuid4().hex[:8]
    for number in range(count):
        asset = f"{salt}-{number:04d}-4000-8000-000000000000"
        body = copy.deepcopy(create)
        body["data"]["id"] = body["object_id"] = asset
        post("/create", body)
        if mode == "pair":
            body = copy.deepcopy(proxy)
            body["data"]["asset_id"] = body["object_id"] = asset
            body["data"]["id"] = f"{asset}-proxy"
            post("/proxy", body)
    expected = count * (2 if mode == "pair" else 1)
    if statuses != {"200 OK": expected}:
        print(f"answers: {statuses}, expected {expected} x 200 OK", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

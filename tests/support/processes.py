"""The listener as real processes: ``python -m listener run``, or the Procfile's web and worker."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.support.backends import free_port

ROOT = Path(__file__).resolve().parents[2]
# An access log line of a test's own polling: GET of the admin API or of /healthz, answered 200.
_POLLING = re.compile(r'"GET /(api/|healthz)[^"]*" 200 ')


class ListenerProcesses:
    """Starts the listener with a config of its own; ``mode`` is "run" (the supervisor) or "procfile"."""

    def __init__(self, tmp_path: Path, database_url: str, redis_url: str | None, config: dict[str, Any],
                 admin_token: str, mode: str = "run", extra_env: dict[str, str] | None = None) -> None:
        self.dir = tmp_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = tmp_path / "listener.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTENER_", "REDIS_", "DATABASE_"))}
        self.env.update(PORT=str(self.port), DATABASE_URL=database_url, LISTENER_CONFIG=str(self.config_path),
                        LISTENER_ADMIN_TOKEN=admin_token, LISTENER_VAR_DIR=str(tmp_path / "var"),
                        LISTENER_QUEUE="listener-e2e", WEB_CONCURRENCY="2", PYTHONUNBUFFERED="1")
        if redis_url:
            self.env["REDIS_URL"] = redis_url
        self.env.update(extra_env or {})
        self.admin_token = admin_token
        self.mode = mode
        self.processes: dict[str, subprocess.Popen] = {}
        self.log_path = tmp_path / "listener.log"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes[name] = process
        return process

    def start(self) -> ListenerProcesses:
        python = sys.executable
        if self.mode == "run":
            self._spawn("run", [python, "-m", "listener", "run"])
        else:
            subprocess.run([python, "-m", "listener", "migrate"], cwd=ROOT, env=self.env, check=True)
            self.start_web()
            self.start_worker()
        try:
            self.wait_ready()
        except BaseException:
            # A test gets no object to stop when starting fails: the processes that did start (the web, when
            # the worker exited) would outlive the test and answer on its port, with its database.
            self.stop()
            raise
        return self

    def start_web(self) -> None:
        self._spawn("web", [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"])

    def start_worker(self, name: str = "worker") -> subprocess.Popen:
        return self._spawn(name, [sys.executable, "-m", "listener", "worker"])

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.failure_logs()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the listener did not start:\n{self.failure_logs()}")

    def logs(self, tail: int | None = 4000, *, polling: bool = True) -> str:
        """What the processes printed: the last ``tail`` characters of each log, or all of it.

        ``polling=False`` leaves out the access log's lines of a test's own polling, for a failure's message: a
        test that polls the admin API every 50 ms fills the web's log with them, and the tail of a failed wait
        showed nothing else.
        """
        def kept(text: str) -> str:
            if not polling:
                text = "\n".join(line for line in text.splitlines() if not _POLLING.search(line))
            return text[-tail if tail else 0:]

        return "\n".join(f"--- {path.name}\n{kept(path.read_text(errors='replace'))}"
                         for path in sorted(self.dir.glob("*.log")))

    def failure_logs(self) -> str:
        return self.logs(6000, polling=False)

    def admin(self, path: str) -> Any:
        answer = requests.get(self.url + path, headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=10)
        answer.raise_for_status()
        return answer.json()

    def wait_for(self, predicate: Any, timeout: float = 30, interval: float = 0.1) -> Any:
        """Poll ``predicate()`` until it returns something truthy; fail with the logs otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"condition not met within {timeout}s\n{self.failure_logs()}")

    def stop(self, name: str | None = None, sig: int = signal.SIGTERM, timeout: float = 30) -> dict[str, int]:
        """Stop one process (or all) with ``sig``; returns their exit codes."""
        codes = {}
        for process_name in [name] if name else list(self.processes):
            process = self.processes.pop(process_name)
            if process.poll() is None:
                if sig == signal.SIGKILL:
                    kill_tree(process.pid)  # RQ's work horse has a session of its own
                else:
                    process.send_signal(sig)
            try:
                codes[process_name] = process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                codes[process_name] = process.wait()
        return codes


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, its_parent in parents.items() if its_parent == parent]
        found += children
        frontier += children
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything below it at once, as a machine going away would."""
    for target in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)

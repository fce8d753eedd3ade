"""Transfers under faults (issue: reliability), with real processes and real peers.

The Procfile's web and worker processes run against a throttled HTTP file
server and pyftpdlib servers. A worker is killed with SIGKILL mid-download and
mid-upload, or stopped as a PaaS does (SIGTERM, then SIGKILL after its grace
period): the action is put back and finished, resuming with ``Range`` / ``REST``,
the extra attempt is on the record, and no partial file ever carries the final
name. A full FTP server is retried on the workflow's schedule with its answer
in the transfer log. Hostile host names and file names are refused or tamed.

Heartbeats are every 0.5 s here, so a dead worker's action is put back within
about 1.5 s of its last beat (plus up to 5 s for the dispatcher's lease, when
the dead worker held it).
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
import requests

from jobs.file_names import MAX_NAME_BYTES
from jobs.safe_url import is_public
from tests.conftest import TOKENS, base_config, load_fixture
from tests.support.files import FileServer, make_file
from tests.support.processes import ListenerProcesses, descendants

ADMIN = "admin-transfer-faults"
FAST_HEARTBEAT = {"LISTENER_HEARTBEAT_SECONDS": "0.5"}
MIB = 1024 * 1024
PROGRESS = 256 * 1024  # bytes an attempt must have reported before the worker is killed


# --- peers and processes ---------------------------------------------------------------------------------------

@pytest.fixture
def files(file_server: FileServer) -> FileServer:
    return file_server


@pytest.fixture
def listener(tmp_path: Path, database_url: str, redis_url: str, clean: None) -> Iterator[Callable[..., Listener]]:
    started: list[Listener] = []

    def start(config: dict[str, Any], env: dict[str, str] | None = None) -> Listener:
        (tmp_path / "listener").mkdir()
        processes = ListenerProcesses(tmp_path / "listener", database_url, redis_url, config, ADMIN,
                                      mode="procfile", extra_env=FAST_HEARTBEAT | (env or {}))
        started.append(Listener(processes.start()))
        return started[-1]

    yield start
    for live in started:
        live.processes.stop()


class Listener:
    def __init__(self, processes: ListenerProcesses) -> None:
        self.processes = processes

    def post(self, body: dict[str, Any], path: str = "/scoopa") -> requests.Response:
        return requests.post(self.processes.url + path, json=body, timeout=10,
                             headers={"Authorization": f"Bearer {TOKENS['scoopa']}"})

    def accept(self, body: dict[str, Any], path: str = "/scoopa") -> None:
        answer = self.post(body, path)
        assert answer.status_code == 200 and answer.json()["status"] == "accepted", answer.text

    def actions(self, **filters: Any) -> list[dict[str, Any]]:
        """The transfer log, GET /api/actions (newest first)."""
        query = "&".join(f"{name}={quote(str(value))}" for name, value in filters.items())
        return self.processes.admin(f"/api/actions?limit=200&{query}")["items"]

    def action(self, **filters: Any) -> dict[str, Any] | None:
        found = self.actions(**filters)
        assert len(found) <= 1, found
        return found[0] if found else None

    def wait_action(self, check: Callable[[dict[str, Any]], bool], timeout: float = 30, **filters: Any) -> dict:
        return self.processes.wait_for(lambda: (a := self.action(**filters)) is not None and check(a) and a,
                                       timeout=timeout, interval=0.05)

    def settled(self, timeout: float = 40, **filters: Any) -> list[dict[str, Any]]:
        def check() -> list[dict[str, Any]] | None:
            found = self.actions(**filters)
            return found if found and all(a["status"] in ("done", "failed") for a in found) else None

        return self.processes.wait_for(check, timeout=timeout, interval=0.1)

    def log(self, name: str) -> str:
        return (self.processes.dir / f"{name}.log").read_text(errors="replace")


def scoopa_file(file_id: int, name: str, size: int, url: str, folder_id: int = 62251) -> dict[str, Any]:
    payload = load_fixture("scoopa", "new_file__video")
    payload.update(file_id=file_id, file_name=name, file_size_in_bytes=size, download_url=url, folder_id=folder_id)
    return payload


def scoopa_config(downloads: Path, **overrides: Any) -> dict[str, Any]:
    config = base_config(download_dir=str(downloads), **overrides)
    config["sources"]["scoopa"].update(download=True, allow_private_hosts=True)  # the peers are on 127.0.0.1
    return config


def push_to(server: str, target_dir: str, **flow: Any) -> dict[str, Any]:
    return {"name": f"to-{server}", "source": "scoopa", "action": "ftp_push", "ftp_server": server,
            "target_dir": target_dir} | flow


class FinalNameWatcher:
    """Looks at a final name as a watch folder would, noting every size seen there."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sizes: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                self.sizes.add(self.path.stat().st_size)
            time.sleep(0.002)

    def stop(self) -> set[int]:
        self._stop.set()
        self._thread.join()
        return self.sizes


def kill_worker(live: Listener, name: str = "worker") -> None:
    """SIGKILL a worker and everything below it (its work horse, its scheduler), as a lost machine would."""
    assert live.processes.processes[name].poll() is None, f"{name} had already stopped"
    live.processes.stop(name, sig=signal.SIGKILL)


def wait_stable(path: Path, quiet: float = 0.5, timeout: float = 10) -> int:
    """The size of ``path`` once it has not changed for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = path.stat().st_size if path.exists() else -1
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return size
        time.sleep(0.05)
    raise AssertionError(f"{path} kept changing for {timeout}s")


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]


def resumed_offset(range_header: str | None) -> int:
    assert range_header and range_header.startswith("bytes=") and range_header.endswith("-"), range_header
    return int(range_header.removeprefix("bytes=").removesuffix("-"))


# --- 1. a worker killed mid-transfer ---------------------------------------------------------------------------

def test_worker_killed_mid_download_another_worker_resumes_with_range(tmp_path, files, listener):
    size, name = 4 * MIB, "killed-download.mxf"
    content = make_file(files.root / name, size)
    files.throttle_bps = 1_000_000  # four seconds for the whole file: the kill lands in the middle
    downloads = tmp_path / "downloads"
    live = listener(scoopa_config(downloads))
    final = downloads / name
    watcher = FinalNameWatcher(final)
    live.accept(scoopa_file(2001, name, size, files.url("throttle", name)))

    running = live.wait_action(lambda a: a["status"] == "running" and a["bytes_done"] >= PROGRESS, kind="download")
    live.processes.start_worker("worker-2")  # another worker, idle: the job stays with the first
    kill_worker(live)

    # The worker is dead: the partial file is there under its temporary name, the final name is not.
    partial = downloads / f".{name}.{running['id']}.part"
    have = wait_stable(partial, quiet=0.3)
    assert 0 < have < size
    assert not final.exists()
    assert live.action(kind="download")["status"] == "running"  # left behind, until its heartbeat is missed
    files.throttle_bps = 0  # the rest at full speed

    done = live.wait_action(lambda a: a["status"] in ("done", "failed"), timeout=30, kind="download")
    assert (done["status"], done["attempts"], done["error"]) == ("done", 2, None)  # the extra attempt, on record
    assert done["bytes_done"] == done["bytes_total"] == size
    assert final.read_bytes() == content
    assert sorted(os.listdir(downloads)) == [name]  # the partial file became the final one
    assert watcher.stop() <= {size}  # never seen under its final name unfinished
    first, second = files.served(name)
    assert (first.status, first.range) == (200, None)
    offset = resumed_offset(second.range)
    assert second.status == 206 and 0 < offset == have <= first.bytes_sent < size
    assert second.bytes_sent == size - offset  # the rest, not the whole file again
    assert first.bytes_sent + second.bytes_sent < 2 * size
    assert "listener.action.abandoned" in live.log("worker-2")
    print(f"\n[download SIGKILL] size={size} first attempt served={first.bytes_sent} partial={have} "
          f"range={second.range} second attempt served={second.bytes_sent} "
          f"total served={first.bytes_sent + second.bytes_sent} attempts={done['attempts']}")


def test_worker_killed_mid_upload_restarted_worker_resumes_with_rest(tmp_path, files, ftp_server, listener):
    # Bigger than what the sockets buffer (a few MiB here) so the upload is cut with most of it still to send.
    size, name = 8 * MIB, "killed-upload.mxf"
    content = make_file(files.root / name, size)
    ftp = ftp_server("playout", read_limit=500_000)
    incoming = ftp.root / "incoming"
    incoming.mkdir()
    live = listener(scoopa_config(tmp_path / "downloads", ftp_servers={"playout": ftp.config()},
                                  workflows=[push_to("playout", "/incoming")]))
    final, part = incoming / name, incoming / f"{name}.part"
    watcher = FinalNameWatcher(final)
    live.accept(scoopa_file(2002, name, size, files.url("ranged", name)))

    live.wait_action(lambda a: a["status"] == "running" and a["bytes_done"] >= PROGRESS and part.exists(),
                     kind="ftp_push")
    kill_worker(live)
    ftp.set_read_limit(0)  # what the dead worker left in the socket buffers arrives; nothing more comes
    have = wait_stable(part, quiet=2.5)  # longer than pyftpdlib's throttle pauses (up to 2 s)
    assert 0 < have < size
    assert not final.exists()  # no partial file under the final name on the server
    assert live.action(kind="ftp_push")["status"] == "running"

    live.processes.start_worker("worker")  # the same worker, restarted
    done = live.wait_action(lambda a: a["status"] in ("done", "failed"), timeout=30, kind="ftp_push")
    assert (done["status"], done["attempts"], done["error"]) == ("done", 2, None), done
    assert final.read_bytes() == content
    assert sorted(os.listdir(incoming)) == [name]
    assert watcher.stop() <= {size}
    assert ftp.record.uploads() == [("APPE", f"{name}.part"), ("STOR", f"{name}.part")]  # the second from REST
    rests = [int(offset) for offset in ftp.record.args_of("REST")]
    assert rests and set(rests) == {have}  # the second attempt appended to what the server had
    assert ftp.record.bytes_received == size  # every byte once: the second attempt sent only the rest
    assert (ftp.record.args_of("RNFR"), ftp.record.args_of("RNTO")) == ([f"{name}.part"], [name])
    print(f"\n[upload SIGKILL] size={size} on the server after the kill={have} REST={rests} "
          f"second attempt sent={size - have} total received={ftp.record.bytes_received} "
          f"attempts={done['attempts']}")


# --- 2. a full FTP server --------------------------------------------------------------------------------------

def test_full_ftp_server_is_retried_on_schedule_and_its_answer_is_in_the_transfer_log(tmp_path, files, ftp_server,
                                                                                         listener):
    size, name = 4 * MIB, "full.mov"
    content = make_file(files.root / name, size)
    # One server out of space for two attempts (the upload command answered 452), then freed; another that runs out
    # of space during every upload (552 on the control connection, the data connection closed), as a disk filling
    # up does.
    freed = ftp_server("freed", full_first_stors=2)
    stays_full = ftp_server("stays-full", cut_first_uploads=100, cut_at=300_000,
                            cut_reply="552 Requested file action aborted: exceeded storage allocation (test server).")
    schedules = {"to-freed": [1.5, 2.0, 2.0], "to-stays-full": [1.5, 2.0]}
    live = listener(scoopa_config(
        tmp_path / "downloads", ftp_servers={"freed": freed.config(), "stays-full": stays_full.config()},
        workflows=[push_to(server, "/", retry=schedules[f"to-{server}"]) for server in ("freed", "stays-full")]))
    live.accept(scoopa_file(2003, name, size, files.url("ranged", name)))

    waits: dict[str, dict[int, tuple[str, float]]] = {"to-freed": {}, "to-stays-full": {}}

    def both_settled() -> bool:  # reading the transfer log on the way: each wait for the next attempt
        pushes = live.actions(kind="ftp_push")
        for push in pushes:
            if push["status"] == "queued" and push["error"]:
                not_before = datetime.fromisoformat(push["not_before"]).timestamp()
                waits[push["workflow"]][push["attempts"]] = (push["error"], not_before)
        return len(pushes) == 2 and all(push["status"] in ("done", "failed") for push in pushes)

    live.processes.wait_for(both_settled, timeout=45, interval=0.05)
    pushes = {push["workflow"]: push for push in live.actions(kind="ftp_push")}

    # Freed after two refusals: done on the third attempt, each refusal readable while it waited.
    ok = pushes["to-freed"]
    assert (ok["status"], ok["attempts"], ok["error"]) == ("done", 3, None)
    assert (freed.root / name).read_bytes() == content
    assert sorted(waits["to-freed"]) == [1, 2]
    assert all("452 Insufficient storage space" in error for error, _ in waits["to-freed"].values())
    assert_on_schedule(freed.record.upload_times(), waits["to-freed"], schedules["to-freed"])

    # Still full when the schedule is used up: failed, with the server's own answer as the last error.
    failed = pushes["to-stays-full"]
    assert (failed["status"], failed["attempts"]) == ("failed", 3)
    assert "552 Requested file action aborted: exceeded storage allocation" in failed["error"], failed["error"]
    assert sorted(waits["to-stays-full"]) == [1, 2]
    assert all("552 Requested" in error for error, _ in waits["to-stays-full"].values())
    assert_on_schedule(stays_full.record.upload_times(), waits["to-stays-full"], schedules["to-stays-full"])
    assert sorted(os.listdir(stays_full.root)) == [f"{name}.part"]  # never under the final name
    for workflow, push in pushes.items():
        stors = (freed if workflow == "to-freed" else stays_full).record.upload_times()
        print(f"\n[full FTP] {workflow}: status={push['status']} attempts={push['attempts']} "
              f"schedule={schedules[workflow]} seconds between attempts={[round(gap, 2) for gap in gaps(stors)]}"
              f"\n  errors while waiting={[error for error, _ in waits[workflow].values()]}"
              f"\n  last error={push['error']!r}")


def assert_on_schedule(stors: list[float], waits: dict[int, tuple[str, float]], schedule: list[float]) -> None:
    """Attempt k waited ``schedule[k-1]`` after failing, and the next one came when that wait was over.

    RQ keeps scheduled times in whole seconds (rounded down) and looks for due jobs every second: the next
    attempt starts between the second its ``not_before`` falls in and a few seconds after it.
    """
    assert len(stors) == len(waits) + 1, (stors, waits)
    for attempt, (_, not_before) in waits.items():
        failed_at, next_at = stors[attempt - 1], stors[attempt]
        assert 0 <= not_before - failed_at - schedule[attempt - 1] < 1.0, (attempt, not_before, failed_at, schedule)
        assert math.floor(not_before) <= next_at <= not_before + 3, (attempt, not_before, next_at)


# --- SIGTERM, then SIGKILL after the grace period ---------------------------------------------------------------

@pytest.mark.parametrize("to", ["worker", "every process"])
def test_sigterm_then_sigkill_mid_download_puts_the_action_back(tmp_path, files, listener, to):
    """A PaaS restart: SIGTERM, then SIGKILL when the grace period ends before the transfer does.

    ``worker``: only the worker process gets SIGTERM (a process manager): RQ waits for the job, which keeps
    going (and beating) until the SIGKILL. ``every process``: as Heroku does, the work horse gets SIGTERM too
    and stops at once. Either way the action is put back and another worker finishes it.
    """
    size, name = 4 * MIB, "restart.mxf"
    content = make_file(files.root / name, size)
    files.throttle_bps = 400_000  # ten seconds for the whole file, longer than the grace period
    downloads = tmp_path / "downloads"
    live = listener(scoopa_config(downloads))
    watcher = FinalNameWatcher(downloads / name)
    live.accept(scoopa_file(2004, name, size, files.url("throttle", name)))
    live.wait_action(lambda a: a["status"] == "running" and a["bytes_done"] > 0, kind="download")
    live.processes.start_worker("worker-2")

    worker = live.processes.processes["worker"]
    tree = [worker.pid, *descendants(worker.pid)]  # the worker, its work horse, its scheduler
    for pid in tree if to == "every process" else [worker.pid]:
        os.kill(pid, signal.SIGTERM)
    before = live.action(kind="download")["bytes_done"]
    time.sleep(3)  # the grace period
    during = live.action(kind="download")
    if to == "worker":  # RQ's warm shutdown: the job carries on
        assert worker.poll() is None
        assert during["status"] == "running" and during["bytes_done"] > before
    assert not (downloads / name).exists()
    # The grace period is over: SIGKILL for whatever is left, including what the worker's exit orphaned.
    for pid in tree + descendants(worker.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    live.processes.stop("worker", sig=signal.SIGKILL)
    files.throttle_bps = 0

    done = live.wait_action(lambda a: a["status"] in ("done", "failed"), timeout=30, kind="download")
    assert (done["status"], done["attempts"], done["error"]) == ("done", 2, None)
    assert (downloads / name).read_bytes() == content
    assert sorted(os.listdir(downloads)) == [name]
    assert watcher.stop() <= {size}
    first, second = files.served(name)
    offset = resumed_offset(second.range)
    assert 0 < offset <= first.bytes_sent and second.bytes_sent == size - offset
    assert "listener.action.abandoned" in live.log("worker-2")
    print(f"\n[SIGTERM to {to}] bytes at SIGTERM={before} after the grace period={during['bytes_done']} "
          f"status then={during['status']} range={second.range} served={first.bytes_sent}+{second.bytes_sent} "
          f"attempts={done['attempts']}")


# --- 3. hostile input ------------------------------------------------------------------------------------------

def loopback_names() -> list[str]:
    """Host names and odd address spellings that resolve, offline, to this machine or a private address.

    The shorthand IPv4 forms are glibc's (inet_aton); a name this machine cannot resolve is left out, and
    so is its own name when that resolves to a public address.
    """
    candidates = ["localhost", "LocalHost", "localhost.", socket.gethostname(),
                  "127.1", "2130706433", "0x7f.0.0.1", "[::ffff:127.0.0.1]"]
    names = []
    for name in candidates:
        try:
            infos = socket.getaddrinfo(name.strip("[]").rstrip("."), 80, type=socket.SOCK_STREAM)  # as safe_url does
        except OSError:
            continue
        if not any(is_public(info[4][0]) for info in infos):
            names.append(name)
    assert {"localhost", "localhost."} <= set(names), names
    return names


def test_host_names_resolving_to_private_addresses_are_refused_unless_allowed(tmp_path, files, listener):
    content = make_file(files.root / "inside.mov", 5000)
    config = scoopa_config(tmp_path / "downloads")
    # The same handler on /scoopa-strict, keeping the default allow_private_hosts: false.
    config["sources"]["scoopa_strict"] = {"token": TOKENS["scoopa"], "handler": "tests.jobs.strict_scoopa",
                                          "download": True}
    live = listener(config)
    hosts = loopback_names()
    for number, host in enumerate(hosts):
        live.accept(scoopa_file(3000 + number, f"x{number}.mov", len(content),
                                f"http://{host}:{files.port}/ranged/inside.mov"), "/scoopa-strict")
    refused = live.settled(source="scoopa_strict")
    assert len(refused) == len(hosts)
    for action in refused:
        assert (action["status"], action["attempts"]) == ("failed", 1), action  # no retry can change it
        assert "private, loopback, link-local or reserved address" in action["error"], action["error"]
        assert "allow_private_hosts: true" in action["error"]
    assert files.requests == []  # refused before connecting

    # The source that allows private hosts fetches by name: the connection goes to the address it checked.
    live.accept(scoopa_file(3100, "allowed.mov", len(content), f"http://localhost:{files.port}/ranged/inside.mov"))
    [allowed] = live.settled(source="scoopa")
    assert (allowed["status"], allowed["attempts"]) == ("done", 1), allowed
    assert (tmp_path / "downloads" / "allowed.mov").read_bytes() == content
    print(f"\n[private hosts] refused: {hosts}")


HOSTILE_NAMES = [
    "../../../escape.mov",
    "/etc/cron.d/absolute.mov",
    "..\\..\\windows.mov",
    "crlf\r\nDELE victim.mov",  # an FTP command smuggled into STOR
    "tab\tbell\x07esc\x1b[31m.mov",
    "x" * 300 + ".mov",
    "é" * 150 + ".mov",  # 300 bytes of UTF-8
    "clip\u202e4pm.exe",  # RTL override: shown as "clipexe.mp4"
    "..\uff0f..\uff0fsecret.mov",  # fullwidth solidus
    "\uff0e\uff0e\uff0fwide-dots.mov",  # fullwidth full stops: "../" once NFKC-folded
    "e\u0301\u200b\u2066zero-width.mov",  # decomposed accent, zero-width space, isolate
    "%2e%2e%2fencoded.mov",
    "..",
]


def test_hostile_file_names_land_inside_target_dir_on_the_ftp_server(tmp_path, files, ftp_server, listener):
    ftp = ftp_server("playout")
    target = ftp.root / "incoming" / "news"
    target.mkdir(parents=True)
    (target / "victim.mov").write_bytes(b"keep me")
    (ftp.root / "outside.txt").write_bytes(b"keep me too")
    downloads = tmp_path / "work" / "downloads"
    live = listener(scoopa_config(downloads, ftp_servers={"playout": ftp.config()},
                                  workflows=[push_to("playout", "/incoming/news")]))

    contents = {}
    for number, name in enumerate(HOSTILE_NAMES):
        served = f"hostile-{number}.bin"
        contents[name] = make_file(files.root / served, 1000 + number)
        live.accept(scoopa_file(4000 + number, name, 1000 + number, files.url("ranged", served)))
    # NUL cannot be stored (PostgreSQL refuses it in text) and no platform sends it: refused at the door.
    nul = live.post(scoopa_file(4999, "nul\x00.mov", 10, files.url("ranged", "hostile-0.bin")))
    assert nul.status_code == 400 and "NUL" in nul.json()["message"]

    actions = live.settled(timeout=50)
    assert len(actions) == 2 * len(HOSTILE_NAMES)
    assert all(a["status"] == "done" for a in actions), [(a["kind"], a["error"]) for a in actions]

    # On the FTP server: every file directly in target_dir, whole, under a tame name; nothing else touched.
    on_server = {path.relative_to(ftp.root).as_posix(): path for path in ftp.root.rglob("*") if path.is_file()}
    outside = sorted(path for path in on_server if not path.startswith("incoming/news/"))
    assert outside == ["outside.txt"], outside
    assert (ftp.root / "outside.txt").read_bytes() == b"keep me too"
    assert (target / "victim.mov").read_bytes() == b"keep me"  # no DELE got through
    assert "DELE" not in {command for command, _ in ftp.record.commands}
    pushed = {path.name: path.read_bytes() for path in target.iterdir() if path.name != "victim.mov"}
    assert sorted(pushed.values()) == sorted(contents.values())  # each file once, whole
    for name in pushed:
        assert_tame(name)
    # And locally, inside download_dir only.
    local = sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*")
                   if path.is_file() and path.is_relative_to(tmp_path / "work"))
    assert all(path.startswith("work/downloads/") and path.count("/") == 2 for path in local), local
    assert sorted((downloads / path.split("/")[-1]).read_bytes() for path in local) == sorted(contents.values())
    print("\n[hostile names] on the FTP server: " + ", ".join(sorted(repr(n[:40]) for n in pushed)))


def assert_tame(name: str) -> None:
    assert name not in ("", ".", "..") and ".." not in name and not name.startswith("."), repr(name)
    assert "/" not in name and "\\" not in name, repr(name)
    assert not any(unicodedata.category(char).startswith("C") for char in name), repr(name)  # control, format
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES, len(name.encode("utf-8"))


# --- found on the way ------------------------------------------------------------------------------------------

# RQ's scheduler lock outlives a SIGKILLed worker (TTL 61 s) and the other workers try to take it again only
# every 10 minutes; the dispatcher moves retries that are overdue from RQ's schedule to the queue.
def test_a_killed_worker_does_not_hold_up_the_retry_schedule(tmp_path, files, listener, redis_url):
    live = listener(scoopa_config(tmp_path / "downloads", retry=[1.0]))
    queue = live.processes.env["LISTENER_QUEUE"]
    connection = redis.Redis.from_url(redis_url)
    holder = live.processes.wait_for(lambda: connection.get(f"rq:scheduler-lock:{queue}"), timeout=10)
    assert int(holder) == live.processes.processes["worker"].pid  # the first worker runs RQ's scheduler
    live.processes.start_worker("worker-2")
    live.processes.wait_for(lambda: "listener.worker.start" in live.log("worker-2"), timeout=20)
    kill_worker(live)

    live.accept(scoopa_file(5001, "later.mov", 10, files.url("status", "503")))  # fails, retried in 1 s
    # 30 s: should the killed worker have been handed the job before Redis saw its connection close, the
    # dispatcher puts the job back once its lease has expired (5 s) and the job has waited 5 s.
    live.wait_action(lambda a: a["attempts"] == 1 and a["status"] == "queued", timeout=30, kind="download")
    done = live.wait_action(lambda a: a["status"] == "failed", timeout=10, kind="download")
    assert done["attempts"] == 2

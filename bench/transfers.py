"""Parts 3 and 4: one large file downloaded from a local nginx, then pushed to a local vsftpd.

The listener does it as a scoopa file would make it: a POST /scoopa announces
the file (``download: true``, ``allow_private_hosts: true``), the download
action fetches it from nginx; a workflow then pushes it to vsftpd with the
ftp_push action. Each action's time is its own (started_at to finished_at in
the transfer log), measured against ``curl`` moving the same file to the same
place. There are several rounds, each a curl run and a listener run, and they
alternate who goes first; the medians are compared. The listener runs once for
all rounds, each round announcing a new file id. One worker process runs the
jobs and is watched for peak memory (``memwatch``; a horse, if the worker forks
one per job, is watched instead).

Both parts need job modules that may not exist yet: without ``jobs/download.py``
(or ``jobs/ftp_push.py``) the part says so and measures only curl.
"""
from __future__ import annotations

import os
import pwd
import shutil
import statistics
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from common import (
    PYTHON,
    BenchError,
    Processes,
    admin_list,
    app_root,
    free_port,
    http_json,
    listener_env,
    migrate,
    say,
    start_gunicorn,
    start_redis,
    wait_for_port,
    write_config,
)
from event_to_action import wait_for_workers
from loadgen import HOOK_TOKEN
from memwatch import HorseWatch
from report import PartResult, Target, fmt

MIB = 1024 * 1024
FTP_USER, FTP_PASSWORD = "anonymous", "bench@example.com"


def missing_module(kind: str) -> str | None:
    path = app_root() / "jobs" / f"{kind}.py"
    return None if path.exists() else f"not available yet: jobs/{kind}.py missing"


def make_file(path: Path, size: int) -> None:
    """Random bytes (nothing compresses or dedupes them), written once per run."""
    chunk = os.urandom(4 * MIB)
    with open(path, "wb") as handle:
        left = size
        while left > 0:
            handle.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
    path.chmod(0o644)


def start_nginx(procs: Processes, root: Path, workdir: Path) -> int:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise BenchError("nginx not found: apt-get install -y nginx")
    port = free_port()
    temp = workdir / "nginx-temp"
    temp.mkdir()
    conf = workdir / "nginx.conf"
    conf.write_text(f"""daemon off;
worker_processes 1;
pid {workdir / 'nginx.pid'};
error_log {workdir / 'nginx-error.log'} warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    types {{ application/mxf mxf; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        location / {{ root {root}; }}
    }}
}}
""")
    started = procs.start("nginx", [nginx, "-c", str(conf), "-p", str(workdir)])
    wait_for_port(port, started.process)
    return port


def start_vsftpd(procs: Processes, ftp_root: Path, workdir: Path) -> int:
    vsftpd = shutil.which("vsftpd") or "/usr/sbin/vsftpd"
    if not Path(vsftpd).exists():
        raise BenchError("vsftpd not found: apt-get install -y vsftpd")
    try:
        ftp_user = pwd.getpwnam("ftp")
    except KeyError:
        raise BenchError("vsftpd needs the system user 'ftp' (its Debian package creates it)") from None
    ftp_root.mkdir(mode=0o755)
    incoming = ftp_root / "incoming"
    incoming.mkdir(mode=0o755)
    os.chown(incoming, ftp_user.pw_uid, ftp_user.pw_gid)  # anonymous uploads land here; the root stays read-only
    Path("/var/run/vsftpd/empty").mkdir(parents=True, exist_ok=True)
    port, pasv = free_port(), free_port()
    conf = workdir / "vsftpd.conf"
    conf.write_text(f"""listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={port}
background=NO
anonymous_enable=YES
local_enable=NO
write_enable=YES
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_other_write_enable=YES
anon_umask=022
no_anon_password=YES
anon_root={ftp_root}
ftp_username=ftp
pasv_enable=YES
pasv_address=127.0.0.1
pasv_min_port={pasv}
pasv_max_port={pasv + 20}
connect_from_port_20=NO
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
xferlog_enable=YES
vsftpd_log_file={workdir / 'vsftpd-transfers.log'}
max_clients=16
max_per_ip=16
secure_chroot_dir=/var/run/vsftpd/empty
""")
    conf.chmod(0o600)
    started = procs.start("vsftpd", [vsftpd, str(conf)])
    wait_for_port(port, started.process)
    return port


def timed(argv: list[str], timeout: float) -> float:
    began = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    elapsed = time.monotonic() - began
    if result.returncode != 0:
        raise BenchError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()[-400:]}")
    return elapsed


def curl_download(url: str, out: Path, timeout: float) -> float:
    out.unlink(missing_ok=True)
    return timed(["curl", "-sS", "--fail", "-o", str(out), url], timeout)


def settle_disk() -> None:
    """Write out whatever earlier steps left dirty (the source file, deleted files' blocks) before a round.

    Without it each round inherited a different backlog: vsftpd took the same
    1 GiB upload at 287 MB/s right after the source file was written and at
    1,091 MB/s two steps later, and the mean of curl's runs swung with it.
    """
    os.sync()


def make_durable(path: Path) -> float:
    """fsync ``path``, as the listener's download does before its file is pushed; the seconds it took."""
    started = time.perf_counter()
    with open(path, "rb") as file:
        os.fsync(file.fileno())
    return time.perf_counter() - started


def curl_upload(path: Path, port: int, name: str, ftp_root: Path, timeout: float) -> float:
    elapsed = timed(["curl", "-sS", "--fail", "-T", str(path), "--user", f"{FTP_USER}:{FTP_PASSWORD}",
                     f"ftp://127.0.0.1:{port}/incoming/{name}"], timeout)
    uploaded = ftp_root / "incoming" / name
    if not uploaded.exists() or uploaded.stat().st_size != path.stat().st_size:
        raise BenchError("curl -T left no complete file on the FTP server")
    uploaded.unlink()
    return elapsed


def _epoch(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def wait_for_action(base_url: str, kind: str, seen: set[int], timeout: float) -> dict[str, Any]:
    """The first finished action of ``kind`` whose id is not in ``seen`` (the earlier rounds' actions)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = admin_list(base_url, f"/api/actions?kind={kind}")
        finished = [row for row in rows if row["status"] in ("done", "failed") and row["id"] not in seen]
        if finished:
            seen.add(finished[0]["id"])
            return finished[0]
        time.sleep(0.2)
    raise BenchError(f"no {kind} action finished within {timeout:g}s")


class ListenerRig:
    """The listener (gunicorn and one worker) on SQLite, started once for every round of the transfer parts.

    Each round posts a scoopa webhook for a new file id, so the same file is
    downloaded again under a new name and pushed again.
    """

    def __init__(self, options: Any, workdir: Path, nginx_port: int, ftp_port: int | None, ftp_root: Path) -> None:
        self.workdir, self.nginx_port, self.ftp_port, self.ftp_root = workdir, nginx_port, ftp_port, ftp_root
        self.procs = Processes(workdir)
        self.seen: dict[str, set[int]] = {"download": set(), "ftp_push": set()}
        self.kinds = ["download"] + (["ftp_push"] if ftp_port is not None else [])

    def start(self) -> ListenerRig:
        redis_url, _ = start_redis(self.procs)
        port = free_port()
        config: dict[str, Any] = {
            "download_dir": str(self.workdir / "downloads"),
            "sources": {"scoopa": {"token": HOOK_TOKEN, "download": True, "allow_private_hosts": True}},
        }
        if self.ftp_port is not None:
            config["ftp_servers"] = {"bench": {"host": "127.0.0.1", "port": self.ftp_port, "username": FTP_USER,
                                               "password": FTP_PASSWORD, "passive": True}}
            config["workflows"] = [{"name": "bench-push", "source": "scoopa", "action": "ftp_push",
                                    "ftp_server": "bench", "target_dir": "/incoming"}]
        config_path = write_config(self.workdir / "listener.yaml", config)
        database = f"sqlite:///{self.workdir / 'var' / 'listener.db'}"
        env = listener_env(workdir=self.workdir, database_url=database, redis_url=redis_url,
                           config_path=config_path, port=port)
        migrate(env)
        start_gunicorn(self.procs, "gunicorn", "wsgi:app", env, port)
        self.worker = self.procs.start("worker", [PYTHON, "-m", "listener", "worker"], env=env)
        wait_for_workers(redis_url, 1)
        time.sleep(2)  # the worker starts its scheduler process after registering; the watch ignores it
        self.watch = HorseWatch(self.worker.pid).start()
        self.base = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if getattr(self, "watch", None) is not None:
            self.watch.stop()
        self.procs.stop_all()

    def round(self, number: int, source_file: Path) -> dict[str, Any]:
        """One file through download (and ftp_push): each action's figures; the files are removed after."""
        size = source_file.stat().st_size
        name = f"bench_NEWS_{number}.mxf"
        payload = {"origin": "scoopa", "platform": "mediapool", "file_id": number, "file_name": name,
                   "file_type": "video/mxf", "file_size_in_bytes": size, "folder_id": 62251,
                   "folder_name": "News", "download_url": f"http://127.0.0.1:{self.nginx_port}/{source_file.name}"}
        posted = time.time()
        status, answer = http_json("POST", f"{self.base}/scoopa", payload, headers={"X-Listener-Token": HOOK_TOKEN})
        if status != 200 or answer.get("status") != "accepted":
            raise BenchError(f"POST /scoopa answered {status}: {answer}")
        limit = max(120.0, size / MIB)  # bounded: a 1 GiB file gives up after ~17 min
        results: dict[str, Any] = {"posted": posted, "name": name}
        for kind in self.kinds:
            action = wait_for_action(self.base, kind, self.seen[kind], limit)
            start, end = _epoch(action["started_at"]), _epoch(action["finished_at"])
            process = self.watch.job_process(start, end) if start and end else None
            results[kind] = {
                "status": action["status"], "error": action["error"], "attempts": action["attempts"],
                "seconds": (end - start) if start and end else None,
                "after_webhook_s": (end - posted) if end else None,
                "bytes_done": action["bytes_done"], "bytes_total": action["bytes_total"],
                "job_peak_rss_mib": process.peak_rss_kib / 1024 if process else None,
                "job_start_rss_mib": process.start_rss_kib / 1024 if process else None,
                "job_peak_private_mib": process.peak_private_kib / 1024 if process else None,
            }
            if action["status"] != "done":
                break
        downloaded = [p for p in (self.workdir / "downloads").glob("*") if p.is_file()]
        results["downloaded_sizes"] = [p.stat().st_size for p in downloaded]
        pushed = [p for p in (self.ftp_root / "incoming").glob("*") if p.is_file()]
        results["pushed"] = {p.name: p.stat().st_size for p in pushed}
        for path in downloaded + pushed:
            path.unlink()
        results["worker_peak_rss_mib"] = self.watch.worker_peak_kib / 1024
        return results


def run(options: Any, scratch: Path) -> list[PartResult]:
    size = options.file_size
    label = f"{size / MIB / 1024:g} GiB" if size >= 1024 * MIB else f"{size / MIB:g} MiB"
    rounds = options.transfer_rounds
    download = PartResult(
        key="download", title=f"3. Download: a {label} file from a local nginx on loopback, to local disk, "
                              f"{rounds} rounds",
        columns=["transfer", "median s", "MiB/s", "vs curl", "each round s", "job peak RSS MiB", "job private MiB"])
    push = PartResult(
        key="ftp-push", title=f"4. FTP push: the same {label} file to a local vsftpd (passive), on loopback, "
                              f"{rounds} rounds",
        columns=["transfer", "median s", "MiB/s", "vs curl", "each round s", "job peak RSS MiB", "job private MiB"])
    parts = [p for p in (download, push) if p.key in options.parts]
    download_missing, push_missing = missing_module("download"), missing_module("ftp_push")

    workdir = scratch / "transfers"
    workdir.mkdir()
    workdir.chmod(0o755)
    files = workdir / "files"
    files.mkdir(mode=0o755)
    source = files / "bench_NEWS_1.mxf"
    say(f"transfers: writing a {label} file of random bytes")
    make_file(source, size)
    procs = Processes(workdir)
    timeout = max(120.0, size / MIB)
    curls: dict[str, list[float]] = {"download": [], "download_fsynced": [], "ftp_push": []}
    listener_rounds: list[dict[str, Any]] = []
    rig: ListenerRig | None = None
    try:
        nginx_port = start_nginx(procs, files, workdir)
        ftp_root = workdir / "ftp"
        ftp_port = start_vsftpd(procs, ftp_root, workdir) if push in parts else None
        url = f"http://127.0.0.1:{nginx_port}/{source.name}"
        curl_out = workdir / "curl-download.bin"
        timed(["curl", "-sS", "--fail", "-o", "/dev/null", url], timeout)  # warm the page cache

        def curl_round() -> None:
            # curl does what the listener does, in the same order: download, then push what it downloaded.
            # Its download time, the target's reference, is curl's alone (no fsync). Then the file is fsynced,
            # as the listener's download is: each push starts with the disk in the same state, and curl's
            # download with its fsync is shown beside it, the same work as the listener's (no target).
            elapsed = curl_download(url, curl_out, timeout)
            synced = make_durable(curl_out)
            if download in parts:
                curls["download"].append(elapsed)
                curls["download_fsynced"].append(elapsed + synced)
            if push in parts and ftp_port is not None:
                curls["ftp_push"].append(curl_upload(curl_out, ftp_port, "curl-ref.bin", ftp_root, timeout))
            curl_out.unlink(missing_ok=True)

        if download_missing is None:
            wanted_push = push in parts and push_missing is None
            rig = ListenerRig(options, _subdir(workdir, "listener"), nginx_port,
                              ftp_port if wanted_push else None, ftp_root).start()
        # Rounds alternate who goes first (curl, listener; listener, curl; ...). The disk's state differs from
        # one step to the next (the same curl -T took 0.9 s and 2.9 s at two places of one sequence), so a fixed
        # order would charge that to whoever always stands at the slow place.
        for number in range(1, rounds + 1):
            order = ("curl", "listener") if number % 2 else ("listener", "curl")
            for who in order:
                settle_disk()
                if who == "curl":
                    say(f"transfers: round {number}, curl")
                    curl_round()
                elif rig is not None:
                    say(f"transfers: round {number}, listener download" + (" + ftp_push" if rig.ftp_port else ""))
                    listener_rounds.append(rig.round(number, source))
    except BenchError as error:
        for part in parts:
            part.notes.append(f"failed: {error}")
        return parts
    finally:
        if rig is not None:
            rig.stop()
        procs.stop_all()
        source.unlink(missing_ok=True)

    for part, kind, missing in ((download, "download", download_missing), (push, "ftp_push", push_missing)):
        if part not in parts:
            continue
        times = curls[kind]
        reference = statistics.median(times) if times else None
        if reference is not None:
            part.rows.append([f"curl{' -T' if kind == 'ftp_push' else ''}", fmt(reference, 2),
                              fmt(size / MIB / reference, 0), "1.00x", _each(times), "", ""])
        part.raw["curl_s"] = times
        fsynced = curls["download_fsynced"] if kind == "download" else []
        fsynced_median = statistics.median(fsynced) if fsynced else None
        if fsynced_median is not None and reference:
            part.rows.append(["curl, then fsync (no target)", fmt(fsynced_median, 2),
                              fmt(size / MIB / fsynced_median, 0), f"{fsynced_median / reference:.2f}x",
                              _each(fsynced), "", ""])
            part.raw["curl_fsync_s"] = fsynced
        if missing or (kind == "ftp_push" and download_missing):
            reason = missing or f"needs the download first: {download_missing}"
            part.rows.append([f"listener {kind} action", reason, "", "", "", "", ""])
            part.notes.append(f"listener {kind}: {reason}")
            part.targets += [Target(f"{kind}: time vs curl", None, "<=", 1.05, "x", note=reason),
                             Target(f"{kind}: job peak RSS", None, "<=", 64.0, " MiB", note=reason)]
            continue
        figures = [result[kind] for result in listener_rounds if kind in result]
        part.raw["listener"] = figures
        failed = [f for f in figures if f["status"] != "done"]
        for figure in failed:
            part.notes.append(f"listener {kind}: {figure['status']} after {figure['attempts']} attempt(s): "
                              f"{figure['error']}")
        if not figures:
            part.notes.append(f"listener {kind}: no action ran (the download before it did not finish)")
        seconds = [f["seconds"] for f in figures if f["status"] == "done" and f["seconds"]]
        ok = bool(seconds) and not failed and len(figures) == len(listener_rounds)
        median = statistics.median(seconds) if seconds else None
        ratio = median / reference if median and reference else None
        peak = max((f["job_peak_rss_mib"] for f in figures if f["job_peak_rss_mib"] is not None), default=None)
        private = max((f["job_peak_private_mib"] for f in figures if f["job_peak_private_mib"] is not None),
                      default=None)
        part.rows.append([f"listener {kind} action" + ("" if ok else " (not all done)"), fmt(median, 2),
                          fmt(size / MIB / median, 0) if median else "-", f"{ratio:.2f}x" if ratio else "-",
                          _each(seconds), fmt(peak, 1), fmt(private, 1)])
        if median and fsynced_median:
            part.notes.append(f"listener download against curl's download and fsync, the same work (no target): "
                              f"{median / fsynced_median:.2f}x. The target's curl never waits for the disk; the "
                              "listener's download and this row do, so a disk's slow moments fall on them alone")
        if figures:
            part.notes.append(f"listener {kind}: RSS {fmt(figures[0]['job_start_rss_mib'], 1)} MiB when the first "
                              f"action started; worker peak RSS {fmt(listener_rounds[-1]['worker_peak_rss_mib'], 1)} "
                              "MiB over all rounds (job peak RSS: the worker's own when it runs jobs itself, else the "
                              "work horse's)")
        part.targets += [
            Target(f"{kind}: time vs curl", ratio if ok else None, "<=", 1.05, "x",
                   note=f"median of {len(seconds)} rounds against curl's median of {len(times)}"),
            Target(f"{kind}: job peak RSS", peak if ok else None, "<=", 64.0, " MiB",
                   note="VmHWM of the process that ran the job"),
        ]
    for result in listener_rounds:
        if result.get("downloaded_sizes") and result["downloaded_sizes"] != [size]:
            download.notes.append(f"{result['name']}: downloaded file sizes {result['downloaded_sizes']}, "
                                  f"expected [{size}]")
        if push in parts and push_missing is None and result.get("pushed") != {result["name"]: size}:
            push.notes.append(f"FTP server held {result.get('pushed')}, expected {{{result['name']!r}: {size}}}")
    for part in parts:
        part.notes.append("rounds alternate who goes first (round 1 curl, round 2 the listener, ...), each after "
                          "os.sync(); the ratio is of the medians")
    return parts


def _each(times: list[float]) -> str:
    return " / ".join(fmt(t, 2) for t in times)


def _subdir(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir(mode=0o755)
    return path

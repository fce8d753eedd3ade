"""Parts 3 and 4: one large file downloaded from a local nginx, then pushed to a local vsftpd.

The listener does it as a scoopa file would make it: a POST /scoopa announces
the file (``download: true``, ``allow_private_hosts: true``), the download
action fetches it from nginx; a workflow then pushes it to vsftpd with the
ftp_push action. Each action's time is its own (started_at to finished_at in
the transfer log), measured against ``curl`` moving the same file to the same
place before and after it (their mean). One worker process runs the jobs and
is watched for peak memory (``memwatch``; a horse, if the worker forks one per
job, is watched instead).

Both parts need job modules that may not exist yet: without ``jobs/download.py``
(or ``jobs/ftp_push.py``) the part says so and measures only curl.
"""
from __future__ import annotations

import os
import pwd
import shutil
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


def make_durable(path: Path) -> None:
    """fsync ``path``, as the listener's download does before its file is pushed."""
    with open(path, "rb") as file:
        os.fsync(file.fileno())


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


def wait_for_action(base_url: str, kind: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = admin_list(base_url, f"/api/actions?kind={kind}")
        finished = [row for row in rows if row["status"] in ("done", "failed")]
        if finished:
            return finished[0]
        time.sleep(0.2)
    raise BenchError(f"no {kind} action finished within {timeout:g}s")


def listener_transfers(options: Any, workdir: Path, source_file: Path, nginx_port: int, ftp_port: int | None,
                       ftp_root: Path) -> dict[str, Any]:
    """One scoopa file through download (and ftp_push when ``ftp_port``): the actions, the peak memory."""
    procs = Processes(workdir)
    try:
        redis_url, _ = start_redis(procs)
        port = free_port()
        config: dict[str, Any] = {
            "download_dir": str(workdir / "downloads"),
            "sources": {"scoopa": {"token": HOOK_TOKEN, "download": True, "allow_private_hosts": True}},
        }
        if ftp_port is not None:
            config["ftp_servers"] = {"bench": {"host": "127.0.0.1", "port": ftp_port, "username": FTP_USER,
                                               "password": FTP_PASSWORD, "passive": True}}
            config["workflows"] = [{"name": "bench-push", "source": "scoopa", "action": "ftp_push",
                                    "ftp_server": "bench", "target_dir": "/incoming"}]
        config_path = write_config(workdir / "listener.yaml", config)
        database = f"sqlite:///{workdir / 'var' / 'listener.db'}"
        env = listener_env(workdir=workdir, database_url=database, redis_url=redis_url, config_path=config_path,
                           port=port)
        migrate(env)
        start_gunicorn(procs, "gunicorn", "wsgi:app", env, port)
        worker = procs.start("worker", [PYTHON, "-m", "listener", "worker"], env=env)
        wait_for_workers(redis_url, 1)
        time.sleep(2)  # the worker starts its scheduler process after registering; the watch ignores it
        watch = HorseWatch(worker.pid).start()
        base = f"http://127.0.0.1:{port}"
        size = source_file.stat().st_size
        payload = {"origin": "scoopa", "platform": "mediapool", "file_id": 1, "file_name": "bench_NEWS_1.mxf",
                   "file_type": "video/mxf", "file_size_in_bytes": size, "folder_id": 62251,
                   "folder_name": "News", "download_url": f"http://127.0.0.1:{nginx_port}/{source_file.name}"}
        posted = time.time()
        status, answer = http_json("POST", f"{base}/scoopa", payload, headers={"X-Listener-Token": HOOK_TOKEN})
        if status != 200 or answer.get("status") != "accepted":
            raise BenchError(f"POST /scoopa answered {status}: {answer}")
        limit = max(120.0, size / MIB)  # bounded: a 1 GiB file gives up after ~17 min
        results: dict[str, Any] = {"posted": posted, "worker": worker.pid}
        kinds = ["download"] + (["ftp_push"] if ftp_port is not None else [])
        try:
            for kind in kinds:
                action = wait_for_action(base, kind, limit)
                start, end = _epoch(action["started_at"]), _epoch(action["finished_at"])
                process = watch.job_process(start, end) if start and end else None
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
        finally:
            watch.stop()
        results["worker_peak_rss_mib"] = watch.worker_peak_kib / 1024
        results["horses"] = [vars(horse) for horse in watch.horses.values()]
        downloaded = [p for p in (workdir / "downloads").glob("*") if p.is_file()]
        results["downloaded_sizes"] = [p.stat().st_size for p in downloaded]
        for path in downloaded:
            path.unlink()
        pushed = [p for p in (ftp_root / "incoming").glob("*") if p.is_file()]
        results["pushed"] = {p.name: p.stat().st_size for p in pushed}
        for path in pushed:
            path.unlink()
        return results
    finally:
        procs.stop_all()


def run(options: Any, scratch: Path) -> list[PartResult]:
    size = options.file_size
    label = f"{size / MIB / 1024:g} GiB" if size >= 1024 * MIB else f"{size / MIB:g} MiB"
    download = PartResult(
        key="download", title=f"3. Download: a {label} file from a local nginx on loopback, to local disk",
        columns=["transfer", "time s", "MiB/s", "vs curl", "job peak RSS MiB", "job private MiB"])
    push = PartResult(
        key="ftp-push", title=f"4. FTP push: the same {label} file to a local vsftpd (passive), on loopback",
        columns=["transfer", "time s", "MiB/s", "vs curl", "job peak RSS MiB", "job private MiB"])
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
    try:
        nginx_port = start_nginx(procs, files, workdir)
        ftp_root = workdir / "ftp"
        ftp_port = start_vsftpd(procs, ftp_root, workdir) if push in parts else None
        url = f"http://127.0.0.1:{nginx_port}/{source.name}"
        curl_out = workdir / "curl-download.bin"
        timed(["curl", "-sS", "--fail", "-o", "/dev/null", url], timeout)  # warm the page cache
        curls: dict[str, list[float]] = {"download": [], "ftp_push": []}

        def reference_round() -> None:
            settle_disk()
            # curl does what the listener does, in the same order: download, then push what it downloaded.
            # Its download time is curl's alone (no fsync). Before its push the file is fsynced, untimed,
            # as the listener's download is: each push then starts with the disk in the same state. (Pushed
            # with nothing written before, curl -T measured 0.8 to 1.0 s for 1 GiB here; pushed after a
            # durable 1 GiB download, vsftpd's own writes are slowed by the disk's backlog, for both.)
            elapsed = curl_download(url, curl_out, timeout)
            if download in parts:
                curls["download"].append(elapsed)
            if push in parts and ftp_port is not None:
                make_durable(curl_out)
                curls["ftp_push"].append(curl_upload(curl_out, ftp_port, "curl-ref.bin", ftp_root, timeout))
            curl_out.unlink(missing_ok=True)

        say("transfers: curl reference")
        reference_round()
        listener: dict[str, Any] = {}
        if download_missing is None:
            say("transfers: listener download" + (" + ftp_push" if push_missing is None else ""))
            wanted_push = push in parts and push_missing is None
            settle_disk()
            listener = listener_transfers(options, _subdir(workdir, "listener"),
                                          source, nginx_port, ftp_port if wanted_push else None, ftp_root)
            say("transfers: curl reference again")
            reference_round()
    except BenchError as error:
        for part in parts:
            part.notes.append(f"failed: {error}")
        return parts
    finally:
        procs.stop_all()
        source.unlink(missing_ok=True)

    for part, kind, missing in ((download, "download", download_missing), (push, "ftp_push", push_missing)):
        if part not in parts:
            continue
        times = curls[kind]
        reference = sum(times) / len(times) if times else None
        if reference is not None:
            part.rows.append([f"curl{' -T' if kind == 'ftp_push' else ''} (mean of {len(times)})",
                              fmt(reference, 2), fmt(size / MIB / reference, 0), "1.00x", "", ""])
        figures = listener.get(kind)
        if missing or (kind == "ftp_push" and download_missing):
            reason = missing or f"needs the download first: {download_missing}"
            part.rows.append([f"listener {kind} action", reason, "", "", "", ""])
            part.notes.append(f"listener {kind}: {reason}")
            part.targets += [Target(f"{kind}: time vs curl", None, "<=", 1.05, "x", note=reason),
                             Target(f"{kind}: job peak RSS", None, "<=", 64.0, " MiB", note=reason)]
            continue
        if figures is None:
            part.notes.append(f"listener {kind}: no action ran (the download before it did not finish)")
            continue
        part.raw["listener"] = {**figures, "horses": listener.get("horses")}
        part.raw["curl_s"] = times
        seconds = figures["seconds"]
        ratio = seconds / reference if seconds and reference else None
        part.rows.append([f"listener {kind} action ({figures['status']})", fmt(seconds, 2),
                          fmt(size / MIB / seconds, 0) if seconds else "-", f"{ratio:.2f}x" if ratio else "-",
                          fmt(figures["job_peak_rss_mib"], 1), fmt(figures["job_peak_private_mib"], 1)])
        if figures["status"] != "done":
            part.notes.append(f"listener {kind}: {figures['status']} after {figures['attempts']} attempt(s): "
                              f"{figures['error']}")
        part.notes.append(f"listener {kind}: RSS {fmt(figures['job_start_rss_mib'], 1)} MiB when the action "
                          f"started; worker peak RSS {fmt(listener.get('worker_peak_rss_mib'), 1)} MiB (job peak "
                          "RSS: the worker's own when it runs jobs itself, else the work horse's)")
        ok = figures["status"] == "done"
        part.targets += [
            Target(f"{kind}: time vs curl", ratio if ok else None, "<=", 1.05, "x"),
            Target(f"{kind}: job peak RSS", figures["job_peak_rss_mib"] if ok else None, "<=", 64.0, " MiB",
                   note="VmHWM of the process that ran the job"),
        ]
    if listener:
        if listener.get("downloaded_sizes") and listener["downloaded_sizes"] != [size]:
            download.notes.append(f"downloaded file sizes {listener['downloaded_sizes']}, expected [{size}]")
        if push in parts and push_missing is None and listener.get("pushed") != {source.name: size}:
            push.notes.append(f"FTP server holds {listener.get('pushed')}, expected {{{source.name!r}: {size}}}")
    return parts


def _subdir(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir(mode=0o755)
    return path

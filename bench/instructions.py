"""Instructions per webhook, counted by valgrind's callgrind: a figure that load on the machine does not move.

    .venv/bin/python bench/instructions.py                  # the work tree
    .venv/bin/python bench/instructions.py --ref HEAD~1     # and a commit, side by side

The benchmarks' requests per second move by 10 % from run to run on a shared
2-core machine; a change worth 3 % is lost in that. Callgrind counts the
instructions a process executes instead (user space only), the same for the
same code and input whatever else runs. ``wsgi_calls.py`` sends webhooks
straight through the WSGI app on SQLite, twice: ``--warm`` of them, then
``--warm + --requests``; the difference over ``--requests`` is the cost of one
webhook, without start-up, imports and first-call caches. Mode ``job`` counts
the worker instead: ``wsgi_calls.py`` queues the analyses, uncounted, and
``worker_calls.py`` runs them against ``iconik_stub.py``. Not counted: gunicorn
(the same for every revision), the kernel, Redis and other processes.

Needs valgrind (a Debian package) and redis-server; every run has its own Redis
and its own directory, removed afterwards.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
from common import PYTHON, ROOT, BenchError, Processes, export_commit, free_port, start_redis, wait_for_port

CALLS = Path(__file__).with_name("wsgi_calls.py")
JOBS = Path(__file__).with_name("worker_calls.py")
MODES = {"create": "POST /create, a new asset each",
         "pair": "/create + /proxy (CLOSED) of one asset, which starts an analysis",
         "job": "an analysis run by the worker (its RQ job, claim, request to iconik, finish)"}


def count_instructions(app_root: Path, mode: str, workdir: Path, redis_url: str, warm: int, requests: int,
                       iconik_url: str) -> int:
    """Instructions of one ``mode`` call (a pair counts as one), from two callgrind runs."""
    env = {"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "BENCH_ICONIK_URL": iconik_url}

    def counted(count: int) -> list[str]:
        """The command whose run makes ``count`` of the calls. Webhooks share ``workdir``'s database (the first
        run migrates it); a job's analyses are first queued, uncounted, in a directory and a Redis of their own."""
        if mode != "job":
            return [PYTHON, str(CALLS), str(app_root), str(workdir), mode, str(count)]
        where = workdir / f"jobs-{count}"
        redis.Redis.from_url(redis_url).flushdb()
        subprocess.run([PYTHON, str(CALLS), str(app_root), str(where), "pair", str(count)], env=env, check=True,
                       capture_output=True, timeout=600)
        return [PYTHON, str(JOBS), str(app_root), str(where), str(count)]

    # Migrates, and compiles the bytecode.
    subprocess.run(counted(20), env=env, check=True, capture_output=True, timeout=300)
    totals = []
    for count in (warm, warm + requests):
        out = workdir / f"callgrind.{mode}.{count}"
        run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *counted(count)],
                             env=env, capture_output=True, text=True, timeout=1800)
        if run.returncode != 0:
            raise BenchError(f"{mode} x {count} failed: {run.stderr.strip()[-600:]}")
        collected = re.search(r"Collected : (\d+)", run.stderr)
        if not collected:
            raise BenchError(f"no instruction count in valgrind's output: {run.stderr.strip()[-300:]}")
        totals.append(int(collected.group(1)))
    return (totals[1] - totals[0]) // requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", metavar="REV", help="also count this commit (exported with git archive)")
    parser.add_argument("--modes", default="create,pair,job", help=f"comma-separated, of: {', '.join(MODES)}")
    parser.add_argument("--warm", type=int, default=100, help="calls before the counted ones (default 100)")
    parser.add_argument("--requests", type=int, default=500, help="calls counted (default 500)")
    options = parser.parse_args()
    modes = [mode for mode in options.modes.split(",") if mode]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    if not shutil.which("valgrind"):
        print("valgrind not installed: apt-get install -y valgrind", file=sys.stderr)
        return 2

    scratch = Path(tempfile.mkdtemp(prefix="listener-instructions-"))
    procs = Processes(scratch)
    try:
        roots = {"work tree": ROOT}
        if options.ref:
            commit = export_commit(options.ref, scratch / "ref")
            roots = {f"{options.ref} ({commit})": scratch / "ref", "work tree": ROOT}
        redis_url, _pid = start_redis(procs)
        stub_port = free_port()
        stub = procs.start("iconik-stub", [PYTHON, str(Path(__file__).with_name("iconik_stub.py")),
                                           "--port", str(stub_port)])
        wait_for_port(stub_port, stub.process)
        redis_base = redis_url.rsplit("/", 1)[0]  # each revision and mode its own Redis database (of 16)
        runs = [(name, root, mode) for name, root in roots.items() for mode in modes]
        jobs = {(name, mode): (root, mode, scratch / f"{index}-{mode}", f"{redis_base}/{index}")
                for index, (name, root, mode) in enumerate(runs)}
        with ThreadPoolExecutor(max_workers=2) as pool:  # valgrind runs one thread: two at a time on 2 cores
            futures = {key: pool.submit(count_instructions, *args, options.warm, options.requests,
                                        f"http://127.0.0.1:{stub_port}")
                       for key, args in jobs.items()}
            counts = {key: future.result() for key, future in futures.items()}
    except BenchError as problem:
        print(f"instructions: {problem}", file=sys.stderr)
        return 2
    finally:
        procs.stop_all()
        shutil.rmtree(scratch, ignore_errors=True)

    names = list(roots)
    print(f"instructions per call through the WSGI app (callgrind, user space), SQLite, "
          f"{options.requests} calls counted after {options.warm}")
    print(f"| call | {' | '.join(names)} |{' change |' if len(names) == 2 else ''}")
    print(f"| --- |{' ---: |' * (len(names) + (len(names) == 2))}")
    for mode in modes:
        figures = [counts[(name, mode)] for name in names]
        change = f" {100 * (figures[1] - figures[0]) / figures[0]:+.1f} % |" if len(figures) == 2 else ""
        print(f"| {MODES[mode]} | {' | '.join(f'{figure:,}' for figure in figures)} |{change}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmarks of the listener against references, in one run on one machine (issue 6).

    .venv/bin/python bench/run.py                      # everything, full size (5 to 20 minutes)
    .venv/bin/python bench/run.py --quick              # a smoke run with tiny sizes (about 2 minutes)
    .venv/bin/python bench/run.py --only ingest,event-to-action

Parts: ingest, event-to-action, download, ftp-push. Prints a table of the
figures, the references beside them, the ratios and whether each target is
met; ``--json`` also writes them as JSON, ``--markdown`` prints Markdown.
All traffic goes to 127.0.0.1; every run is bounded in time.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    ROOT,
    BenchError,
    export_commit,
    machine_description,
    say,
    scratch_dir,
    use_app_root,
)
from machine import MachineSpeed  # noqa: E402
from report import PartResult, render  # noqa: E402

PARTS = ("ingest", "event-to-action", "download", "ftp-push")
INGEST_APPS = ("ceiling", "flask_rq", "sqlite", "postgresql")


def size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def listed(allowed: tuple[str, ...]):  # noqa: ANN201 - an argparse type
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
        return names

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 s wrk runs, 200 assets, a 32 MiB file")
    parser.add_argument("--only", type=listed(PARTS), default=list(PARTS), metavar="PARTS",
                        help=f"comma-separated parts to run ({', '.join(PARTS)}); default all")
    parser.add_argument("--duration", type=float,
                        help="seconds of each measured wrk run; ingest: of each app, in slices (default 10)")
    parser.add_argument("--warmup", type=float,
                        help="seconds of wrk warm-up before each; ingest: of each app, once (default 3)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads for ingest (default 1)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="ingest: measure every app for this many times --duration in all (default 1)")
    parser.add_argument("--slice", type=float, default=2.0,
                        help="ingest: seconds of each app's turn; the apps take turns until each has had its "
                             "measured time (default 2)")
    parser.add_argument("--ingest-apps", type=listed(INGEST_APPS), default=list(INGEST_APPS),
                        dest="ingest_subjects", metavar="APPS",
                        help=f"which ingest rows to measure ({', '.join(INGEST_APPS)})")
    parser.add_argument("--assets", type=int, help="assets for event to action (default 5000)")
    parser.add_argument("--e2a-databases", type=listed(("sqlite", "postgresql")), default=["sqlite", "postgresql"],
                        metavar="DBS", help="databases for event to action (default sqlite,postgresql)")
    parser.add_argument("--e2a-limit", type=float,
                        help="give up event to action after this many seconds (default assets / 10, at least 60)")
    parser.add_argument("--file-size", type=size, help="file for download and FTP push (default 1G)")
    parser.add_argument("--transfer-rounds", type=int,
                        help="download and FTP push: rounds of curl and the listener, alternating who goes first "
                             "(default 3; 2 with --quick)")
    parser.add_argument("--postgres-url", dest="postgres_admin_url",
                        default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL URL allowed to create databases")
    parser.add_argument("--postgres-database", default="bench",
                        help="the database the bench drops and creates (default bench; never 'test')")
    parser.add_argument("--profile", metavar="DIR",
                        help="record the listener's ingest runs with py-spy into DIR and summarise them")
    parser.add_argument("--ref", metavar="REV",
                        help="benchmark the listener of this commit (exported with git archive) instead of the "
                             "work tree, e.g. HEAD while others edit the tree")
    parser.add_argument("--profile-gil", action="store_true",
                        help="with --profile: sample only threads holding the GIL (Python CPU time, no waits)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, databases)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    options = parser.parse_args(argv)
    quick = options.quick
    options.duration = options.duration or (2.0 if quick else 10.0)
    options.warmup = options.warmup or (1.0 if quick else 3.0)
    options.assets = options.assets or (200 if quick else 5000)
    options.file_size = options.file_size or (32 * 1024**2 if quick else 1024**3)
    options.transfer_rounds = options.transfer_rounds or (2 if quick else 3)
    options.parts = options.only
    return options


def describe_code(options: argparse.Namespace) -> str:
    if options.ref:
        return f"commit {options.commit} (--ref {options.ref}, exported; the work tree is not used)"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "listener", "jobs", "handlers", "config",
                                "gunicorn.conf.py", "wsgi.py"], cwd=ROOT, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "the work tree"
    return f"the work tree at {commit}" + (" with uncommitted changes to the app" if dirty else "")


def header(options: argparse.Namespace, speed: MachineSpeed) -> list[str]:
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0].strip() \
        if shutil.which("wrk") else "wrk not installed"
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    return [
        f"listener benchmarks{' (QUICK smoke run: tiny sizes, not figures to quote)' if options.quick else ''}",
        f"when: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; code: {describe_code(options)}",
        f"machine: {machine_description()}, {platform.system()} {platform.release()}; load average at the end "
        f"{load} (anything else running on the machine lowers the figures)",
        speed.describe(),
        f"load generator: {wrk.split(' Copyright')[0]}, on the same machine: with 2 cores it competes with the "
        "servers for CPU, so every figure is lower than on a separate client",
    ]


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    started = time.monotonic()
    speed = MachineSpeed().start()
    results: list[PartResult] = []
    with scratch_dir(options.keep) as scratch:
        if options.ref:
            options.commit = export_commit(options.ref, scratch / "app")
            use_app_root(scratch / "app")
        if "ingest" in options.parts:
            import ingest

            results.append(ingest.run(options, scratch))
        if "event-to-action" in options.parts:
            import event_to_action

            results.append(event_to_action.run(options, scratch))
        if "download" in options.parts or "ftp-push" in options.parts:
            import transfers

            results.extend(transfers.run(options, scratch))
    if options.profile:
        from profile_summary import report

        for path in sorted(Path(options.profile).glob("ingest-*.txt")):
            print(report(path, top=30, under="Flask.wsgi_app"), end="\n\n")
    lines = header(options, speed)
    lines.append(f"took: {time.monotonic() - started:.0f} s")
    print(render(results, lines, markdown=options.markdown))
    if options.json:
        Path(options.json).write_text(json.dumps({"header": lines, "parts": [r.as_json() for r in results]},
                                                 indent=2, default=str))
    missed = [t for r in results for t in r.targets if t.met is False]
    return 1 if missed and options.strict else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        say(f"error: {error}")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)

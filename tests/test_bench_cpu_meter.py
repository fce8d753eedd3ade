"""The benchmark's CPU meter with a child reaped between its snapshots, as gunicorn recycles a worker."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from cpuacct import CpuMeter  # noqa: E402 - the bench's modules import each other by their bare names

BURN = textwrap.dedent("""
    import time
    def burn(seconds):
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass
""")

# A parent whose child burns 0.4 s of CPU, says so, waits to be told to go on, burns 0.4 s more and exits; the
# parent reaps it, says so, and waits for its stdin to close.
PARENT = textwrap.dedent("""
    import subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    print(child.stdout.readline().strip(), flush=True)
    sys.stdin.readline()
    child.stdin.write("go\\n")
    child.stdin.flush()
    child.wait()
    print("reaped", flush=True)
    sys.stdin.read()
""")
CHILD = BURN + textwrap.dedent("""
    import sys
    burn(0.4)
    print("burned", flush=True)
    sys.stdin.readline()
    burn(0.4)
""")


def test_a_child_reaped_between_the_snapshots_counts_only_its_cpu_since_the_first():
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert parent.stdout.readline().strip() == "burned"
        meter = CpuMeter(trees=[parent.pid]).start()
        parent.stdin.write("go on\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "reaped"
        used = meter.stop()
    finally:
        parent.stdin.close()
        parent.wait(10)
    # 0.4 s since the first snapshot; counting the child's whole life again through its parent would say 0.8.
    assert 0.3 < used < 0.6, used


def test_a_child_born_and_reaped_between_the_snapshots_counts_whole():
    script = BURN + "burn(0.3)\n"
    holder = subprocess.Popen([sys.executable, "-c", "import subprocess, sys\nsys.stdin.readline()\n"
                               f"subprocess.run([sys.executable, '-c', {script!r}])\nprint('done', flush=True)\n"
                               "sys.stdin.read()\n"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        meter = CpuMeter(trees=[holder.pid]).start()
        holder.stdin.write("start\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "done"
        used = meter.stop()
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert 0.3 <= used < 0.6, used

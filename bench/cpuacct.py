"""CPU time spent by the processes serving a run, from /proc: a figure that other load on the machine
does not change much, unlike requests per second.

A run's server CPU is the user + system time, between two snapshots, of a
process tree (gunicorn's master and workers), plus any extra processes (the
app's private redis-server) and the PostgreSQL backends connected to the
app's database (they do the app's SQL work in processes of their own).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command: state is field 3; utime 14, stime 15, cutime 16, cstime 17 (1-based, man 5 proc).
    return sum(int(value) for value in fields[11:15])


def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                try:
                    todo += [int(child) for child in (task / "children").read_text().split()]
                except OSError:
                    continue
        except OSError:
            continue
    return found


def postgres_backends(admin_url: str, database: str) -> list[int]:
    import psycopg

    with psycopg.connect(admin_url, connect_timeout=5) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                            (database,)).fetchall()
    return [row[0] for row in rows]


class CpuMeter:
    """``start()`` then ``stop()``: CPU seconds used in between by the trees and processes given.

    A process's own ticks include those of its children that it has reaped (``cutime``, ``cstime``): that is
    how the CPU of a process born and gone between the two snapshots is counted. A child that was already
    there at ``start()`` and is reaped before ``stop()`` (a gunicorn worker recycled after ``max_requests``)
    then arrives in its parent's ticks with its whole life's CPU; what it had used by ``start()`` is taken
    off again, or a recycled worker would count its earlier runs a second time.
    """

    def __init__(self, trees: Iterable[int] = (), processes: Iterable[int] = ()) -> None:
        self.trees = list(trees)
        self.processes = list(processes)
        self._before: dict[int, int] = {}
        self._before_in_trees: set[int] = set()

    def _snapshot(self, extra: Iterable[int] = ()) -> tuple[dict[int, int], set[int]]:
        in_trees = {pid for root in self.trees for pid in _tree(root)}
        pids = in_trees | set(self.processes) | set(extra)
        return {pid: ticks for pid in pids if (ticks := _ticks(pid)) is not None}, in_trees

    def start(self, extra: Iterable[int] = ()) -> CpuMeter:
        self._before, self._before_in_trees = self._snapshot(extra)
        return self

    def stop(self, extra: Iterable[int] = ()) -> float:
        after, _ = self._snapshot(extra)
        used = sum(ticks - self._before.get(pid, 0) for pid, ticks in after.items())
        # Gone from a tree: reaped by its parent in the tree, whose ticks now hold the child's whole life.
        reaped = self._before_in_trees - after.keys()
        used -= sum(self._before.get(pid, 0) for pid in reaped)
        return used / TICKS

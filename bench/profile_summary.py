"""Summarise a py-spy ``--format raw`` profile: the functions with the largest share of samples.

    python bench/profile_summary.py PROFILE.txt [--top 25] [--under wsgi_app]

py-spy (not idle samples) writes one line per distinct stack, ``frame;frame;... count``,
each frame ``function (file:line)``. Inclusive share: samples whose stack passes
through the function; self share: samples where it is the innermost frame.
"""
from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")


def _name(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match.group('function')} ({path})"


def summarise(path: Path, under: str | None = None) -> tuple[int, Counter, Counter]:
    total = 0
    inclusive: Counter = Counter()
    own: Counter = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_name(frame) for frame in stack.split(";") if frame]
        if under is not None:
            starts = [i for i, frame in enumerate(frames) if frame.startswith(under + " ")]
            if not starts:
                continue
            frames = frames[starts[0]:]
        samples = int(count)
        total += samples
        for name in set(frames):
            inclusive[name] += samples
        own[frames[-1]] += samples
    return total, inclusive, own


def report(path: Path, top: int = 25, under: str | None = None) -> str:
    total, inclusive, own = summarise(path, under)
    if not total:
        return f"{path}: no samples"
    lines = [f"{path.name}: {total:,} samples" + (f" under {under}" if under else "")]
    lines.append("  inclusive  self   function")
    for name, count in inclusive.most_common(top):
        lines.append(f"  {100 * count / total:7.1f}%  {100 * own[name] / total:5.1f}%  {name}")
    lines.append("  -- most self time --")
    for name, count in own.most_common(top // 2):
        lines.append(f"  {100 * inclusive[name] / total:7.1f}%  {100 * count / total:5.1f}%  {name}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--under", help="only stacks through this function, counted from it (e.g. Flask.wsgi_app)")
    arguments = parser.parse_args()
    print(report(arguments.profile, arguments.top, arguments.under))

"""File names from webhooks made safe to use on disk and on FTP servers (SPEC 4).

A name arrives from the sender: it may hold path separators, ``..``, control
characters (a CR/LF would even end an FTP command), or be empty. What is kept
is the last path component with those removed; a clash with an existing file
gets a suffix (``name (1).mov``) instead of overwriting it.
"""
from __future__ import annotations

import os
import unicodedata
from pathlib import Path

MAX_NAME_BYTES = 200  # leaves room under the usual 255-byte limit for a suffix and ".part"


def safe_file_name(name: str, fallback: str) -> str:
    """The name without directories, ``..``, control characters or leading dots; ``fallback`` if nothing is left."""
    # NFKC: fullwidth and other lookalike slashes and dots become the real ones, and are then removed
    # (a server that folds Unicode itself would otherwise read "..／" as "../").
    name = unicodedata.normalize("NFKC", str(name))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    # Categories C*: control, format, surrogate, private use and unassigned characters.
    name = "".join(char for char in name if not unicodedata.category(char).startswith("C"))
    while ".." in name:
        name = name.replace("..", ".")
    name = name.strip().strip(".").strip()
    name = _truncate(name)
    return name or fallback


def _truncate(name: str) -> str:
    if len(name.encode("utf-8")) <= MAX_NAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or len(extension) > 16:
        stem, extension = name, ""
    room = MAX_NAME_BYTES - len(extension.encode("utf-8")) - (1 if extension else 0)
    stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip(". ")
    return f"{stem}.{extension}" if extension else stem


def with_suffix_number(name: str, number: int) -> str:
    """``clip.mov`` -> ``clip (2).mov``."""
    if number == 0:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem:
        return f"{name} ({number})"
    return f"{stem} ({number}).{extension}"


def move_into_place(source: Path, directory: Path, name: str) -> Path:
    """Move ``source`` to ``directory/name``, or ``name (n)`` when taken; never overwrites.

    A hard link claims a name atomically (it fails if the name exists), so two
    workers finishing files of the same name at once both keep theirs.
    """
    for number in range(10_000):
        candidate = directory / with_suffix_number(name, number)
        try:
            os.link(source, candidate)
        except FileExistsError:
            continue
        except OSError:
            # A file system without hard links: check, then rename (a small race, but no link support).
            if candidate.exists():
                continue
            os.replace(source, candidate)
            return candidate
        source.unlink()
        return candidate
    raise FileExistsError(f"no free name for {name} in {directory}")

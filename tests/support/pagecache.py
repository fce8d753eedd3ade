"""How much of a file is in the page cache: Linux's mincore() on a mapping of it, through ctypes.

Only where the file's pages can leave the cache: a file on tmpfs lives in it (its pages are the file), so
``skip_unless_pages_drop`` skips, with the reason, a test that needs the kernel to drop pages elsewhere.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import sys
from pathlib import Path

import pytest

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
if _libc is not None:
    _libc.mmap.restype = ctypes.c_void_p
    _libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    _libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    _libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_MAP_FAILED = ctypes.c_void_p(-1).value
_MEMORY_FILESYSTEMS = {"tmpfs", "ramfs", "overlay"}  # overlay: its upper layer may be tmpfs


def cached_bytes(path: Path) -> int:
    """Bytes of ``path`` in the page cache now (whole pages, the last one counted whole)."""
    size = path.stat().st_size
    if size == 0:
        return 0
    fd = os.open(path, os.O_RDONLY)
    try:
        address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address == _MAP_FAILED:
            raise OSError(ctypes.get_errno(), f"mmap {path}")
        try:
            pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
            vector = ctypes.create_string_buffer(pages)
            if _libc.mincore(address, size, vector) != 0:
                raise OSError(ctypes.get_errno(), f"mincore {path}")
            return sum(byte & 1 for byte in vector.raw) * mmap.PAGESIZE
        finally:
            _libc.munmap(address, size)
    finally:
        os.close(fd)


def filesystem_type(path: Path) -> str:
    """The type of the filesystem ``path`` is on, from /proc/self/mounts (the longest mount point above it)."""
    resolved, best, kind = str(path.resolve()), "", ""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _device, point, fs_type = line.split()[:3]
        point = point.replace("\\040", " ")
        if (resolved == point or resolved.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fs_type
    return kind


def skip_unless_pages_drop(path: Path) -> None:
    """Skip the test unless pages of files under ``path`` can leave the page cache (Linux, not a memory filesystem)."""
    if _libc is None:
        pytest.skip("the page cache as Linux keeps it (mincore, sync_file_range)")
    kind = filesystem_type(path)
    if kind in _MEMORY_FILESYSTEMS:
        pytest.skip(f"{path} is on {kind}, whose files live in the page cache")


def device_read_ahead(path: Path) -> int:
    """Bytes the kernel reads ahead on the block device ``path`` is on (0 when there is none to ask)."""
    device = os.stat(path).st_dev
    base = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}")
    for queue in (base / "queue", base / ".." / "queue"):  # a disk, or a partition of one
        try:
            return int((queue / "read_ahead_kb").read_text()) * 1024
        except (OSError, ValueError):
            continue
    return 0

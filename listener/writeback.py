"""Writing a file's bytes to disk while more arrive, and keeping a large file out of the page cache (Linux).

Two users: a download (below) and an FTP push, which reads the file next; and
SQLite's write-ahead log (``listener.db``), whose checkpoint fsyncs it inside the
write lock that every web worker waits for.

A download is fsynced before it is renamed into place, so no torn file ever
appears under its final name. Written in one go at the end, that fsync wrote
the whole file after its last byte arrived; and the dirty pages piling up
before it made the kernel throttle the writes themselves (1.2 to 1.5 s for
1 GiB here, against 0.24 s with this). ``sync_file_range(SYNC_FILE_RANGE_WRITE)``
starts the writeback of a range and returns at once. It is Linux's own call,
which Python's ``os`` does not offer; elsewhere this does nothing and the
final fsync does it all.

A file the listener moves is read once after it is written (by a push), and
perhaps never again: its pages in the page cache would push out what is worth
keeping there (the database's), a media file being many times the rest. Once a
range is on disk, ``drop_written`` takes it out (``POSIX_FADV_DONTNEED``), so a
transfer of any size holds a few MiB of cache, recycled. On a virtual machine
that is also the fast way: a page the guest has not touched lately costs the
host a fault on first use, and a file written into the cache ran at 0.4 to
0.9 GB/s where one whose pages were recycled ran at 2 GB/s and more
(bench/README.md, the twenty-fourth round).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import sys
from typing import BinaryIO

_SYNC_FILE_RANGE_WAIT_BEFORE = 1
_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE_WAIT_AFTER = 4


def _load() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


_sync_file_range = _load()


def start_writeback(file: BinaryIO, start: int, end: int) -> None:
    """Ask the kernel to start writing bytes ``start`` to ``end`` of ``file`` to disk; do not wait."""
    file.flush()
    start_fd_writeback(file.fileno(), start, end - start)


def start_fd_writeback(fd: int, start: int = 0, length: int = 0) -> None:
    """``start_writeback`` on a descriptor; a ``length`` of 0 means to the end of the file, whatever its size."""
    if _sync_file_range is None:
        return
    # A failure only means the fsync that follows has more to do: nothing to report.
    _sync_file_range(fd, start, length, _SYNC_FILE_RANGE_WRITE)


def drop_written(fd: int, start: int = 0, length: int = 0) -> None:
    """Take bytes ``start`` to ``start + length`` of ``fd`` (0: to the end) out of the page cache, once on disk.

    Their writeback is started if need be and waited for: only clean pages can be dropped. Waiting is not
    durability (no metadata, no flush of the disk's cache): a writer still fsyncs when it is done. A write
    error is raised here, as the fsync would have raised it: the wait takes the error, and the fsync after it
    would not see it again.
    """
    if _sync_file_range is not None:
        flags = _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WRITE | _SYNC_FILE_RANGE_WAIT_AFTER
        if _sync_file_range(fd, start, length, flags) != 0:
            code = ctypes.get_errno()
            if code not in (errno.EINVAL, errno.ESPIPE, errno.ENOSYS):  # not a file this call serves
                raise OSError(code, f"writing the file out failed: {os.strerror(code)}")
    drop_read(fd, start, length)


def drop_read(fd: int, start: int = 0, length: int = 0) -> None:
    """Take bytes ``start`` to ``start + length`` of ``fd`` (0: to the end) out of the page cache, where they are
    clean (read, or written out): a reader's pages behind it, which it will not read again."""
    _advise(fd, start, length, "POSIX_FADV_DONTNEED")


def read_ahead(fd: int, start: int, length: int) -> None:
    """Start reading bytes ``start`` to ``start + length`` of ``fd`` into the page cache; do not wait.

    A reader that drops what it has read (``drop_read``) reads from the disk, a step at a time: asked for
    ahead, the disk's reads overlap the sending of what came before (1 GiB sent in 0.56 to 0.60 s from a
    file not in the cache, 16 MiB ahead; 0.85 to 1.9 s without; 0.49 to 0.54 s from the cache).
    """
    _advise(fd, start, length, "POSIX_FADV_WILLNEED")


def _advise(fd: int, start: int, length: int, advice: str) -> None:
    if hasattr(os, advice):  # posix_fadvise and its constants: not on every system
        with contextlib.suppress(OSError):  # advice only: a file that cannot take it is read and kept as ever
            os.posix_fadvise(fd, start, length, getattr(os, advice))

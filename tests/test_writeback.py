"""Starting a file's writeback (Linux's sync_file_range, called through ctypes), and dropping a file's pages."""
from __future__ import annotations

import ctypes
import errno
import os
import sys
import time

import pytest

from listener import writeback
from tests.support.pagecache import cached_bytes, skip_unless_pages_drop


def test_a_descriptors_writeback_is_started_for_the_range_asked(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(writeback, "_sync_file_range", lambda *args: calls.append(args) or 0)
    with open(tmp_path / "file", "wb") as file:
        file.write(b"x" * 10)
        writeback.start_writeback(file, 4, 10)
        writeback.start_fd_writeback(file.fileno())
        assert calls == [(file.fileno(), 4, 6, 2), (file.fileno(), 0, 0, 2)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_the_kernel_takes_the_call_as_bound(tmp_path):
    """Argument types as the C function has them: a wrong binding fails with EINVAL or EBADF, not silently."""
    with open(tmp_path / "file", "wb") as file:
        file.write(b"x" * 65536)
        file.flush()
        assert writeback._sync_file_range(file.fileno(), 0, 0, 2) == 0
        assert writeback._sync_file_range(-1, 0, 0, 2) == -1  # a bad descriptor is refused


MIB = 1024 * 1024


@pytest.fixture
def dropping_dir(tmp_path):
    skip_unless_pages_drop(tmp_path)
    return tmp_path


def test_written_bytes_leave_the_page_cache_once_on_disk(dropping_dir):
    path = dropping_dir / "file"
    with open(path, "wb") as file:
        file.write(os.urandom(4 * MIB))
        file.flush()
        assert cached_bytes(path) == 4 * MIB  # dirty, not yet written out
        writeback.drop_written(file.fileno(), 0, 2 * MIB)
        assert cached_bytes(path) == 2 * MIB  # the range asked for, not the rest
        writeback.drop_written(file.fileno())
        assert cached_bytes(path) == 0


def test_read_bytes_leave_the_page_cache_and_reading_ahead_brings_them_back(dropping_dir):
    path = dropping_dir / "file"
    path.write_bytes(os.urandom(4 * MIB))
    with open(path, "rb") as file:
        writeback.drop_written(file.fileno())  # clean and out of the cache: what a push starts from
        assert cached_bytes(path) == 0
        writeback.read_ahead(file.fileno(), MIB, 2 * MIB)
        deadline = time.monotonic() + 5
        while cached_bytes(path) < 2 * MIB and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cached_bytes(path) == 2 * MIB
        file.read()
        writeback.drop_read(file.fileno(), 0, 3 * MIB)
        assert cached_bytes(path) == MIB  # the last MiB, read and not dropped
        writeback.drop_read(file.fileno())
        assert cached_bytes(path) == 0


def test_a_write_error_met_while_waiting_is_raised_not_lost(monkeypatch, tmp_path):
    """The wait takes the error from the descriptor (an fsync after it would not report it again): it is raised."""
    def failing(*_args):
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(writeback, "_sync_file_range", failing)
    with open(tmp_path / "file", "wb") as file, pytest.raises(OSError, match="writing the file out failed") as raised:
        writeback.drop_written(file.fileno())
    assert raised.value.errno == errno.EIO


def test_a_file_the_call_does_not_serve_is_no_error(monkeypatch, tmp_path):
    def refusing(*_args):
        ctypes.set_errno(errno.EINVAL)
        return -1

    monkeypatch.setattr(writeback, "_sync_file_range", refusing)
    with open(tmp_path / "file", "wb") as file:
        writeback.drop_written(file.fileno())  # nothing raised: the fsync that follows does the work

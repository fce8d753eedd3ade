"""Starting a file's writeback: Linux's sync_file_range, called through ctypes."""
from __future__ import annotations

import sys

import pytest

from listener import writeback


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

"""Fixtures for the action tests: real file, FTP and HTTP peers, and running jobs until they settle."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rq import Queue, SimpleWorker

from listener.runtime import Runtime
from tests.conftest import load_fixture, rows
from tests.support.ftp import make_test_certificate
from tests.support.peers import RecordingServer


def settle(runtime: Runtime, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Run jobs in this process, scheduled retries included, until no action is queued or running.

    Returns the actions. Retries wait for their real ``not_before``: tests shorten
    the schedule in the config, nothing here bends time.
    """
    connection = runtime.redis()
    queue = Queue(runtime.settings.queue_name, connection=connection)
    deadline = time.monotonic() + timeout
    while True:
        # with_scheduler in burst mode: due scheduled jobs are enqueued first, then the queue is emptied.
        SimpleWorker([queue], connection=connection).work(burst=True, with_scheduler=True, logging_level="WARNING")
        actions = rows(runtime, "actions")
        if all(action["status"] in ("done", "failed") for action in actions):
            return actions
        if time.monotonic() > deadline:
            raise AssertionError(f"actions did not settle within {timeout}s: {actions}")
        time.sleep(0.05)


def scoopa_file(file_id: int | str, name: str, size: int, url: str, folder_id: int = 62251,
                **extra: Any) -> dict[str, Any]:
    """A scoopa webhook body for one new file (seed 000's dummy payload with our values)."""
    payload = load_fixture("scoopa", "new_file__video")
    payload.update(file_id=file_id, file_name=name, file_size_in_bytes=size, download_url=url, folder_id=folder_id)
    payload.update(extra)
    return payload


@pytest.fixture
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_test_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def recorder() -> Iterator[Callable[..., RecordingServer]]:
    started: list[RecordingServer] = []

    def start(**options: Any) -> RecordingServer:
        server = RecordingServer(**options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()

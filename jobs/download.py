"""Download a scoopa file to ``download_dir`` (SPEC 3 and 4), then let its workflows follow.

The file streams to a temporary name in chunks, so memory stays flat whatever
its size. An interrupted attempt leaves that partial file behind; the next
attempt asks for the rest with ``Range`` and appends it when the server
answers 206, or starts over when it answers 200 (no range support). Only when
the byte count matches ``file_size_in_bytes`` is the file renamed to its
final, sanitised name (suffixed on a clash), and the item enters
``downloaded`` with ``local_path`` set: its FTP pushes and other workflows
acting on ``downloaded`` are then created and handed over.

The URL, and every redirect, is checked by ``jobs.safe_url`` against the
source's ``allowed_hosts`` and ``allow_private_hosts``. A link past its 24 h
validity fails at once with a message saying so.
"""
from __future__ import annotations

import http.client
import logging
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from jobs import safe_url
from jobs.context import ActionContext
from jobs.errors import ActionError, PermanentError
from jobs.file_names import move_into_place, safe_file_name
from listener.chain import enter_state
from listener.writeback import drop_written, start_writeback

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024  # one buffer, reused: the worker's memory stays flat whatever the file's size
# Written data is handed to the disk in steps of this size, and a step is dropped from the page cache once the
# next one is written: the file holds two steps of the cache at most (listener.writeback says why).
WRITEBACK_BYTES = 8 * 1024 * 1024
TIMEOUT = (10.0, 60.0)  # connect, and between two reads
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


def run(context: ActionContext) -> None:
    item = context.item
    data: dict[str, Any] = item["data"] or {}
    url = str(data.get("download_url") or "")
    if not url:
        raise PermanentError("the item has no download_url")
    expected = int(data.get("file_size_in_bytes") or 0)
    _check_link_still_valid(data)

    source = context.config.sources.get(item["source"])
    policy = safe_url.Policy(allowed_hosts=tuple(source.allowed_hosts) if source else (),
                             allow_private=bool(source and source.allow_private_hosts))
    directory = Path(context.config.download_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    name = safe_file_name(str(data.get("file_name") or ""), fallback=f"file-{item['id']}")
    partial = directory / f".{name}.{context.action_id}.part"

    _download(context, url, policy, partial, expected)
    final = move_into_place(partial, directory, name)
    context.progress(expected, expected, force=True)
    log.info("listener.download.done action=%s key=%s path=%s bytes=%s", context.action_id, item["key"], final,
             expected)
    enter_state(context.runtime, item["id"], "downloaded",
                {"local_path": str(final), "downloaded_at": datetime.now(UTC).isoformat()},
                event_id=context.action.get("event_id"))


def _check_link_still_valid(data: dict[str, Any]) -> None:
    expires = data.get("download_url_expires_at")
    if not expires:
        return
    try:
        expires_at = datetime.fromisoformat(str(expires))
    except ValueError:
        return
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    if datetime.now(UTC) >= expires_at:
        raise PermanentError(
            f"the download link expired at {expires_at.isoformat(timespec='seconds')} (scoopa links are valid "
            "for 24 h after the webhook); ask scoopa to send the file again"
        )


def _download(context: ActionContext, url: str, policy: safe_url.Policy, partial: Path, expected: int) -> None:
    """Bring ``partial`` to exactly ``expected`` bytes, resuming what an earlier attempt left."""
    have = partial.stat().st_size if partial.exists() else 0
    if have > expected:
        have = 0
    if have == expected and partial.exists():
        return
    headers = {"Range": f"bytes={have}-"} if have else {}
    fetched = safe_url.fetch(url, policy, headers=headers, timeout=TIMEOUT)
    try:
        start = _start_offset(fetched, have, expected, url)
        if start is None:  # the server cannot give the rest: start over without Range
            fetched.close()
            fetched = safe_url.fetch(url, policy, timeout=TIMEOUT)
            start = _start_offset(fetched, 0, expected, url)
        if start == expected and fetched.status == 416:
            return
        with open(partial, "r+b" if partial.exists() else "wb") as file:
            file.seek(start)
            file.truncate(start)
            _stream(context, fetched, file, start, expected, url)
    finally:
        fetched.close()


def _start_offset(fetched: safe_url.Fetched, have: int, expected: int, url: str) -> int | None:
    """Where the response body goes in the file; None when a fresh request is needed."""
    status = fetched.status
    if status == 200:
        return 0
    if status == 206 and have:
        match = _CONTENT_RANGE.match(fetched.headers.get("Content-Range", ""))
        if match and int(match.group(1)) <= have:
            return int(match.group(1))
        return None
    if status == 416 and have:
        # Nothing left to send: what we have is the whole file, or something else (start over).
        return expected if have == expected else None
    message = f"{safe_url.redact(url)} answered {status} {fetched.response.reason or ''}".rstrip()
    if status in (408, 429) or status >= 500:
        raise ActionError(message)
    if status in (403, 404, 410):
        raise PermanentError(message + " (the link may have expired or the file been removed)")
    raise PermanentError(message)


def _chunks(response: urllib3.BaseHTTPResponse) -> Iterator[bytes | memoryview]:
    """The body, a chunk at a time; a chunk is good until the next one is asked for.

    A body sent as it is (no Content-Encoding: ``fetch`` asks for none) is read
    with ``readinto`` from the HTTP response under urllib3's into one buffer.
    urllib3's ``stream()`` copies every chunk through its decoder's buffers: for
    1 GiB from the bench's nginx, 1.5 to 2.2 s of CPU against 0.7 to 0.8, which
    on a slow machine was the download's time over curl's. http.client still
    ends the body at its Content-Length (or last chunk), raises IncompleteRead
    when the connection closes early, and times out as urllib3 set the socket.
    A compressed body goes through urllib3, which decodes it.
    """
    raw = getattr(response, "_fp", None)
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity") or not isinstance(raw, http.client.HTTPResponse):
        yield from response.stream(CHUNK_BYTES, decode_content=True)
        return
    buffer = memoryview(bytearray(CHUNK_BYTES))
    while count := raw.readinto(buffer):
        yield buffer[:count]


def _stream(context: ActionContext, fetched: safe_url.Fetched, file: BinaryIO, start: int, expected: int,
            url: str) -> None:
    done = written_back = dropped = start
    context.progress(done, expected, force=True, resumed_from=start)
    try:
        for chunk in _chunks(fetched.response):
            done += len(chunk)
            if done > expected:
                file.truncate(0)
                raise ActionError(f"{safe_url.redact(url)} sent more than the announced {expected} bytes; "
                                  "the next attempt starts over")
            file.write(chunk)
            if done - written_back >= WRITEBACK_BYTES:
                start_writeback(file, written_back, done)
                if written_back > dropped:  # the step before, whose writeback started a step ago: on disk, or soon
                    drop_written(file.fileno(), dropped, written_back - dropped)
                dropped, written_back = written_back, done
            context.progress(done, expected, resumed_from=start)
    except (Urllib3Error, OSError, http.client.HTTPException) as error:
        file.flush()
        context.progress(done, expected, force=True, resumed_from=start)
        raise ActionError(f"the transfer from {safe_url.redact(url)} broke after {done} of {expected} bytes "
                          f"({type(error).__name__}); the next attempt resumes where it stopped") from None
    file.flush()
    os.fsync(file.fileno())
    drop_written(file.fileno())  # all of it, an earlier attempt's part too: clean now, so nothing waits
    context.progress(done, expected, force=True, resumed_from=start)
    if done != expected:
        raise ActionError(f"{safe_url.redact(url)} ended after {done} of the announced {expected} bytes; "
                          "the next attempt resumes where it stopped")
